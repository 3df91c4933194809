"""KL-regularised Best-of-N (``rbon_kl``).

Paper: Jinnai, Morimura, Ariu, Abe 2024, "Regularized Best-of-N Sampling with Minimum
Bayes Risk Objective for Language Model Alignment" (arXiv 2404.01054), RBoN with the KL
regulariser. The KL divergence from a one-hot distribution on y to pi_ref is
-log pi_ref(y|x), so the regularised objective of one response is

    R(x, y_i) + beta * log pi_ref(y_i | x)

Rule: sample N complete responses in one engine call, score all of them in one reward
call, answer with the argmax of that objective (ties go to the earlier sample).

log pi_ref (option ``logprob``): ``"sum"`` (the paper's rule) is the completion's
``cumulative_logprob``; vLLM V1 reports raw model logprobs, so this is the reference
model's own likelihood at no extra forward pass, and it favours shorter responses as beta
grows. ``"mean"`` divides it by the token count, which removes that length bias and keeps
beta's scale independent of max_tokens.

Defaults: ``logprob="mean"``, beta = 0.05, at most 1e6 (beta = 0 is BoN). They fit the
judge's [0, 1] rewards; a reward model on another scale wants beta rescaled.

Deviation: the authors' code (regularized-bon ``mbr/compute_logprob.py``) scores every
response token against one position's logits, which is not log pi_ref(y|x), so their
beta values do not carry over; alignserve uses the true sum.

Report: ``details.logprob``, ``details.ref_logprobs``, ``details.objective``; ranking by
the objective, ``Candidate.reward`` the raw reward.

Budget: one engine call of N samples (with logprobs), one reward call of N responses.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from search.context import SearchContext
from search.errors import EngineUnavailable
from search.overlap import sample_and_score
from search.select import rank_by
from search.strategy import SearchStrategy
from search.types import Candidate, SearchResult

LogprobMode = Literal["sum", "mean"]
# Largest beta of the regularised searches (rbon_kl, rbon_wd, srbon): see "Bound" above.
MAX_BETA = 1e6


def normalise_logprob(total: float, num_tokens: int, mode: LogprobMode | str) -> float:
    """A summed sequence logprob as the mode asks: unchanged, or per token. An empty
    completion has logprob 0 either way (max(.., 1) only avoids dividing by zero)."""
    return total / max(num_tokens, 1) if mode == "mean" else total


def ref_logprob(candidate: Candidate, mode: LogprobMode = "sum") -> float:
    """log pi_ref(y|x) of a candidate, summed or per token; the engine must have been
    asked for logprobs."""
    value = candidate.completion.cumulative_logprob
    if value is None:
        # A missing value is an engine that ignored the logprobs request: a server fault,
        # not something the client can fix, so 503 rather than 400.
        raise EngineUnavailable(
            "the engine returned no logprobs for a completion; "
            "KL-regularised search needs log pi_ref(y|x)"
        )
    return normalise_logprob(value, candidate.completion.num_tokens, mode)


class RegularizedBoNKL(SearchStrategy):
    name = "rbon_kl"
    honours_constraints = True
    needs_logprobs = True

    beta: float = Field(
        default=0.05,
        ge=0.0,
        le=MAX_BETA,
        strict=True,
        allow_inf_nan=False,
        description="weight of log pi_ref(y|x) against the reward",
    )
    logprob: LogprobMode = Field(
        default="mean", description="log pi_ref(y|x) summed over tokens or per-token mean"
    )

    async def run(self, ctx: SearchContext) -> SearchResult:
        candidates = await sample_and_score(ctx, self.n)
        logprobs = [ref_logprob(c, self.logprob) for c in candidates]
        objective = [c.reward + self.beta * lp for c, lp in zip(candidates, logprobs, strict=True)]
        return SearchResult(
            ranked=rank_by(candidates, objective),
            candidates=candidates,
            budget=ctx.budget,
            details={"logprob": self.logprob, "ref_logprobs": logprobs, "objective": objective},
        )
