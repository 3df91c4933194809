"""Stochastic and length-regularised Best-of-N (``srbon``).

Paper: Ichihara, Jinnai, Morimura, Abe, Ariu, Sakamoto, Uchibe 2025, "Evaluation of
Best-of-N Sampling Strategies for Language Model Alignment" (arXiv 2502.12668).

Sample N complete responses in one engine call and score them in one reward call, then:

- ``variant="kl"`` (SRBoN with the KL regulariser): draw the answer index from

      p(i) = exp(log pi_ref(y_i|x) + beta * R_i) / sum_j exp(log pi_ref(y_j|x) + beta * R_j)

  which maximises E_p[R] - (1/beta) KL(p || pi_ref) over distributions on the N samples
  (pi_ref restricted to them). beta is an inverse temperature on the reward: large beta
  approaches BoN's argmax, small beta draws by reference likelihood (the opposite sense of
  ``rbon_kl``'s beta). The normaliser is a log-sum-exp: sequence logprobs are hundreds of
  nats below zero and would underflow as plain exponentials. log pi_ref is the
  completion's ``cumulative_logprob``.
- ``variant="length"`` (sentence-length regularised BoN): the deterministic argmax of
  R_i - beta / max(|y_i|, 1), |y_i| the completion's token count, which favours longer
  responses; ties go to the earlier sample.

Defaults: beta = 1.0 for both variants (kl: one reward unit weighs as one nat of log
pi_ref; length: the penalty is 1 reward unit for a 1-token answer, 0.01 for 100 tokens).
The draw uses ``random.Random(seed)`` with ``seed`` the option, else the request's
sampling seed: reproducible whenever a seed is given. With neither, the draw is fresh
each request (a fixed fallback would always take the same quantile of p).

Ranking: the chosen candidate first, then the rest by probability (kl) or objective
(length), ties by generation order. ``Candidate.reward`` stays the raw reward.

Budget: one engine call of N samples (with logprobs; the class asks for them whatever the
variant, since a ClassVar cannot depend on an option), one reward call of N responses.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Literal

from pydantic import Field

from search.rbon_kl import ref_logprob
from search.strategy import SearchContext, SearchStrategy, rank_by, sample_and_score
from search.types import SearchResult


def kl_scores(logprobs: Sequence[float], rewards: Sequence[float], beta: float) -> list[float]:
    """Unnormalised log-probabilities log pi_ref(y_i|x) + beta * R_i."""
    return [lp + beta * r for lp, r in zip(logprobs, rewards, strict=True)]


def kl_probabilities(
    logprobs: Sequence[float], rewards: Sequence[float], beta: float
) -> list[float]:
    """p(i) ∝ exp(logprobs[i] + beta * rewards[i]), computed stably in log space."""
    scores = kl_scores(logprobs, rewards, beta)
    top = max(scores)
    if top == -math.inf:
        # Every candidate impossible under pi_ref: nothing to prefer, so draw uniformly.
        return [1.0 / len(scores)] * len(scores)
    log_norm = top + math.log(sum(math.exp(s - top) for s in scores))
    return [math.exp(s - log_norm) for s in scores]


def draw_index(probabilities: Sequence[float], u: float) -> int:
    """Inverse CDF: the first index whose cumulative probability exceeds u in [0, 1)."""
    cumulative = 0.0
    for i, p in enumerate(probabilities):
        cumulative += p
        if u < cumulative:
            return i
    # Rounding can leave the total a hair under 1: u then falls to the last possible index.
    return max(i for i, p in enumerate(probabilities) if p > 0.0)


class StochasticRBoN(SearchStrategy):
    name = "srbon"
    needs_logprobs = True

    variant: Literal["kl", "length"] = "kl"
    beta: float = Field(
        default=1.0,
        gt=0.0,
        strict=True,
        allow_inf_nan=False,
        description="kl: inverse temperature on the reward; length: weight of 1/|y|",
    )
    seed: int | None = Field(
        default=None, strict=True, description="seed of the draw (kl); default: request seed"
    )

    def draw_seed(self, ctx: SearchContext) -> int | None:
        return self.seed if self.seed is not None else ctx.sampling.seed

    async def run(self, ctx: SearchContext) -> SearchResult:
        candidates = await sample_and_score(ctx, self.n)
        if self.variant == "length":
            objective = [c.reward - self.beta / max(c.completion.num_tokens, 1) for c in candidates]
            ranked = rank_by(candidates, objective)
        else:
            logprobs = [ref_logprob(c) for c in candidates]
            rewards = [c.reward for c in candidates]
            probs = kl_probabilities(logprobs, rewards, self.beta)
            chosen = draw_index(probs, random.Random(self.draw_seed(ctx)).random())
            # The rest by probability, compared as log-scores: unlikely candidates all
            # underflow to probability 0 but still differ in log space. sorted is stable,
            # so ties keep generation order.
            scores = kl_scores(logprobs, rewards, self.beta)
            rest = sorted((i for i in range(len(scores)) if i != chosen), key=lambda i: -scores[i])
            ranked = [candidates[i] for i in (chosen, *rest)]
        return SearchResult(ranked=ranked, candidates=candidates, budget=ctx.budget)
