"""Stochastic and length-regularised Best-of-N (``srbon``).

Paper: Ichihara, Jinnai, Morimura, Abe, Ariu, Sakamoto, Uchibe 2025, "Evaluation of
Best-of-N Sampling Strategies for Language Model Alignment" (arXiv 2502.12668).

Sample N complete responses in one engine call and score them in one reward call, then:

- ``variant="kl"`` (SRBoN-KL): draw the answer index from

      p(i) = exp(log pi_ref(y_i|x) + beta * R_i) / sum_j exp(log pi_ref(y_j|x) + beta * R_j)

  which maximises E_p[R] - (1/beta) KL(p || pi_ref) over distributions on the N samples
  (pi_ref restricted to them). beta is an inverse temperature on the reward: large beta
  approaches BoN's argmax, small beta draws by reference likelihood (the opposite sense of
  ``rbon_kl``'s beta). The normaliser is a log-sum-exp: sequence logprobs are hundreds of
  nats below zero and would underflow as plain exponentials.
- ``variant="wd"`` (SRBoN-WD): draw the answer index from the p that maximises

      p . R - beta * W(pi_ref, p),   pi_ref(i) = softmax_i(log pi_ref(y_i|x))

  over the simplex, W the optimal-transport distance with cost C[i][j] = 1 - U(y_j, y_i)
  (moving reference mass from y_i to the answer y_j; U the ``utility``, as rbon_wd uses it).
  The problem is a linear programme over transport plans T >= 0 with T 1 = pi_ref and
  p = T^T 1: maximise sum_ij T_ij (R_j - beta C_ij). It separates by rows, so the exact
  optimum sends each reference sample's mass pi_ref(i) whole to argmax_j R_j - beta C_ij
  (ties to the earlier j). This replaces the reference's SLSQP over POT's ``emd2``
  (a local method on a non-smooth objective) with the exact optimum in O(N^2), without
  POT or scipy on the request path (the tests check it against both); at N <= 64 that is
  microseconds, so it runs on the event loop. Large beta keeps p = pi_ref, small beta
  moves all mass to the best reward.
- ``variant="length"`` (sentence-length regularised BoN): the deterministic argmax of
  R_i - beta / max(|y_i|, 1), |y_i| the completion's token count, which favours longer
  responses; ties go to the earlier sample.

log pi_ref (option ``logprob``, kl and wd): ``"sum"`` is the paper's sum of the sampled
tokens' logprobs (the completion's ``cumulative_logprob``; see rbon_kl for why it is the
true log pi_ref(y|x)), ``"mean"`` the per-token mean, which removes the length bias; pi_ref
is then the softmax of per-token means, a length-normalised stand-in for the model's
distribution over the samples, in the same formulas.

Deviations from the authors' code (CyberAgentAILab/srbon ``stochastic_rbon.py``):

- Their log pi comes from ``compute_logprob.py``, which scores every response token
  against one position's logits (``logits[0, -response_len, :]``), so their beta values
  do not carry over; alignserve's log pi_ref is the true sum of sampled-token logprobs.
- SWD: they pass the similarity matrix itself as the transport cost, which rewards moving
  mass to dissimilar samples; here the cost is 1 - U, consistent with RBoN-WD's
  +beta * mean(U). Solved exactly (above) instead of by SLSQP.
- Shared with the reference, not a deviation: p ∝ pi_ref(y_i) e^{beta R_i} over samples
  already drawn from pi_ref counts pi_ref twice (the Monte-Carlo tilt of the samples is
  ∝ e^{beta R_i}, as in soft Best-of-N); likewise pi_ref in the wd variant.

Defaults: kl: ``logprob="mean"``, beta = 100; wd: ``logprob="mean"``, beta = 0.05,
``utility="embedding"``; length: beta = 1.0 (the penalty is 1 reward unit for a 1-token
answer, 0.01 for 100 tokens). The old kl default (beta 1 on the summed logprob) drew the
likeliest sample almost surely: e^{beta R} varies by at most e on the judge's [0, 1]
rewards while pi_ref(y_i) varies by e^{tens}.

Measurement (``bench/rbon_defaults.py``; the setting and the choice rule as in rbon_kl,
the most regularising grid beta with P(draw at or above the median reward) >= 95% on
MT-Bench lines 0-19, reported on lines 20-39): kl, mean/100: P(draw >= median) 97.5%,
P(draw's reward below the best) 36%, expected reward 0.593 (BoN 0.597, random 0.552); the
summed mode needs beta 2000 for the same; the old default, sum/1, reached 60% (0.555).
wd, mean/0.05 with the embedding utility: 98.6%, 33%, 0.594.

The draw uses ``random.Random(seed)`` with ``seed`` the option, else the request's
sampling seed: reproducible whenever a seed is given. With neither, the draw is fresh
each request (a fixed fallback would always take the same quantile of p).

Report (kl, wd): ``details.probabilities`` p, ``details.draw`` the uniform number drawn,
``details.beta`` and ``details.logprob``; wd adds ``details.reference`` (pi_ref),
``details.transport`` (where each reference sample's mass goes) and ``details.utility``.

Ranking: the chosen candidate first, then the rest by probability (kl, wd) or objective
(length), ties by generation order. ``Candidate.reward`` stays the raw reward.

Budget: one engine call of N samples (with logprobs; the class asks for them whatever the
variant, since a ClassVar cannot depend on an option), one reward call of N responses;
wd adds the N x N utility matrix, timed in phase "utility".

Overflow (review L3): beta is at most 1e6 (``rbon_kl.MAX_BETA``; the kl default is 100),
and the kl probabilities are a max-shifted softmax in log space. A reward large enough to
overflow beta x R all the same (an unbounded remote reward) gives +inf scores, which
share the probability between them, as very large finite ones would; a score that is
not a number (a -inf log pi_ref plus a +inf term, or a NaN reward) is never drawn.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import Field

from search.overlap import sample_and_score
from search.rbon_kl import MAX_BETA, LogprobMode, ref_logprob
from search.rbon_wd import UtilityName
from search.strategy import SearchContext, SearchStrategy, rank_by, softmax
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
