"""Stochastic and length-regularised Best-of-N (``srbon``).

Paper: Ichihara, Jinnai, Morimura, Abe, Ariu, Sakamoto, Uchibe 2025, "Evaluation of
Best-of-N Sampling Strategies for Language Model Alignment" (arXiv 2502.12668).

Sample N complete responses in one engine call and score them in one reward call, then:

- ``variant="kl"`` (SRBoN-KL): draw the answer from
  p(i) ∝ exp(log pi_ref(y_i|x) + beta * R_i), a log-sum-exp softmax, which maximises
  E_p[R] - (1/beta) KL(p || pi_ref) over the N samples. Large beta approaches BoN.
- ``variant="wd"`` (SRBoN-WD): draw from the p that maximises p . R - beta * W(pi_ref, p),
  pi_ref = softmax of the samples' log pi_ref, W optimal transport with cost
  1 - U(y_j, y_i). The problem separates by rows, so the exact optimum sends each
  reference sample's mass whole to argmax_j R_j - beta (1 - U(y_j, y_i)), in O(N^2).
- ``variant="length"``: the deterministic argmax of R_i - beta / max(|y_i|, 1).

Options: ``variant``; ``beta`` (kl 100, wd 0.05, length 1.0, at most 1e6); ``logprob``
``mean`` (per-token mean, no length bias) or ``sum`` (the paper's); ``utility``
(``embedding`` or ``chrf``; wd); ``seed`` (else the request's, else a fresh draw).

Deviations from the authors' code (CyberAgentAILab/srbon): log pi_ref is the true sum of
the sampled tokens' logprobs (theirs scores every token against one position's logits,
so their betas do not carry over); the SWD cost is 1 - U, not U itself; solved exactly
instead of by SLSQP. Shared with the reference: p counts pi_ref twice over samples
already drawn from it.

Budget: one engine call of N samples (with logprobs), one reward call of N responses; wd
adds the N x N utility matrix (phase "utility"). Scores that are not numbers are never
drawn; +inf scores share the probability.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import Field

from search.context import SearchContext
from search.overlap import sample_and_score
from search.rbon_kl import MAX_BETA, LogprobMode, ref_logprob
from search.rbon_wd import UtilityName
from search.select import rank_by, softmax
from search.strategy import SearchStrategy
from search.types import Candidate, SearchResult

Variant = Literal["kl", "wd", "length"]
DEFAULT_BETA: dict[str, float] = {"kl": 100.0, "wd": 0.05, "length": 1.0}


def kl_scores(logprobs: Sequence[float], rewards: Sequence[float], beta: float) -> list[float]:
    """Unnormalised log-probabilities log pi_ref(y_i|x) + beta * R_i; one that is not a
    number is -inf, never drawn (module docstring)."""
    scores = [lp + beta * r for lp, r in zip(logprobs, rewards, strict=True)]
    return [-math.inf if math.isnan(s) else s for s in scores]


def kl_probabilities(
    logprobs: Sequence[float], rewards: Sequence[float], beta: float
) -> list[float]:
    """p(i) ∝ exp(logprobs[i] + beta * rewards[i])."""
    return softmax(kl_scores(logprobs, rewards, beta))


def wd_probabilities(
    reference: Sequence[float],
    rewards: Sequence[float],
    cost: Sequence[Sequence[float]],
    beta: float,
) -> tuple[list[float], list[int]]:
    """The exact maximiser of p . R - beta * W(reference, p), W with ``cost[i][j]`` the
    cost of moving reference mass from sample i to answer j, and the optimal plan as the
    answer each reference sample's mass moves to (see the module docstring)."""
    n = len(rewards)
    p = [0.0] * n
    targets = []
    for i, mass in enumerate(reference):
        gains = [rewards[j] - beta * cost[i][j] for j in range(n)]
        target = max(range(n), key=lambda j: (gains[j], -j))
        targets.append(target)
        p[target] += mass
    return p, targets


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
    honours_constraints = True
    needs_logprobs = True

    variant: Variant = "kl"
    beta: float | None = Field(
        default=None,
        gt=0.0,
        le=MAX_BETA,
        strict=True,
        allow_inf_nan=False,
        description=(
            "kl: inverse temperature on the reward; wd: weight of the Wasserstein distance; "
            "length: weight of 1/|y|. Default per variant: kl 100, wd 0.05, length 1"
        ),
    )
    logprob: LogprobMode = Field(
        default="mean", description="kl, wd: log pi_ref summed over tokens or per-token mean"
    )
    utility: UtilityName = Field(default="embedding", description="wd: utility of the cost")
    seed: int | None = Field(
        default=None, strict=True, description="seed of the draw (kl, wd); default: request seed"
    )

    @property
    def effective_beta(self) -> float:
        return DEFAULT_BETA[self.variant] if self.beta is None else self.beta

    def draw_seed(self, ctx: SearchContext) -> int | None:
        return self.seed if self.seed is not None else ctx.sampling.seed

    async def run(self, ctx: SearchContext) -> SearchResult:
        beta = self.effective_beta
        if self.variant == "length":
            candidates = await sample_and_score(ctx, self.n)
            objective = [c.reward - beta / max(c.completion.num_tokens, 1) for c in candidates]
            return SearchResult(
                ranked=rank_by(candidates, objective), candidates=candidates, budget=ctx.budget
            )
        # Looked up first: a server without this utility fails before spending the engine.
        utility = ctx.utility(self.utility) if self.variant == "wd" else None
        candidates = await sample_and_score(ctx, self.n)
        logprobs = [ref_logprob(c, self.logprob) for c in candidates]
        rewards = [c.reward for c in candidates]
        details: dict[str, Any] = {"beta": beta, "logprob": self.logprob}
        if utility is None:
            probs = kl_probabilities(logprobs, rewards, beta)
            # Compared as log-scores: unlikely candidates all underflow to probability 0
            # but still differ in log space.
            order_key = kl_scores(logprobs, rewards, beta)
        else:
            with ctx.budget.phase("utility"):
                matrix = await utility.matrix([c.text for c in candidates])
            reference = softmax(logprobs)
            # U[j][i] scores answer j against reference i (a utility's row is the hypothesis,
            # as in MBR), so moving mass from i to j costs 1 - U[j][i].
            cost = [[1.0 - matrix[j][i] for j in range(len(matrix))] for i in range(len(matrix))]
            probs, targets = wd_probabilities(reference, rewards, cost, beta)
            order_key = probs
            details.update(utility=self.utility, reference=reference, transport=targets)
        u = random.Random(self.draw_seed(ctx)).random()
        chosen = draw_index(probs, u)
        details.update(probabilities=probs, draw=u)
        return SearchResult(
            ranked=ranked_after(candidates, chosen, order_key),
            candidates=candidates,
            budget=ctx.budget,
            details=details,
        )


def ranked_after(
    candidates: Sequence[Candidate], chosen: int, key: Sequence[float]
) -> list[Candidate]:
    """The chosen candidate first, then the rest by ``key``, best first; sorted is stable,
    so ties keep generation order."""
    rest = sorted((i for i in range(len(key)) if i != chosen), key=lambda i: -key[i])
    return [candidates[i] for i in (chosen, *rest)]
