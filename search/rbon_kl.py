"""KL-regularised Best-of-N (``rbon_kl``).

Paper: Jinnai, Morimura, Ariu, Abe 2024, "Regularized Best-of-N Sampling with Minimum
Bayes Risk Objective for Language Model Alignment" (arXiv 2404.01054), RBoN with the KL
regulariser. The KL divergence from a one-hot distribution on y to pi_ref is
-log pi_ref(y|x), so the regularised objective of one response is

    R(x, y_i) + beta * log pi_ref(y_i | x)

Rule: sample N complete responses in one engine call, score all of them in one reward
call, answer with the argmax of that objective (ties go to the earlier sample).
log pi_ref(y_i|x) is the completion's ``cumulative_logprob``: the sum of the sampled tokens'
logprobs. vLLM V1 reports raw model logprobs (before temperature and penalties), so this
is the reference model's own likelihood at no extra forward pass.

Default beta = 0.1: the paper sweeps beta over [1e-4, 2]; 0.1 keeps the reward in charge
while a response 10 nats less likely than another must win by 1 reward unit. Because
log pi_ref is a sum over tokens, larger beta favours shorter responses. beta = 0 is BoN.

Ranking: by the objective, best first; ``Candidate.reward`` stays the raw reward.

Budget: one engine call of N samples (with logprobs), one reward call of N responses.
"""

from __future__ import annotations

from pydantic import Field

from search.errors import EngineUnavailable
from search.strategy import SearchContext, SearchStrategy, rank_by, sample_and_score
from search.types import Candidate, SearchResult


def ref_logprob(candidate: Candidate) -> float:
    """log pi_ref(y|x) of a candidate; the engine must have been asked for logprobs."""
    value = candidate.completion.cumulative_logprob
    if value is None:
        # A missing value is an engine that ignored the logprobs request: a server fault,
        # not something the client can fix, so 503 rather than 400.
        raise EngineUnavailable(
            "the engine returned no logprobs for a completion; "
            "KL-regularised search needs log pi_ref(y|x)"
        )
    return value


class RegularizedBoNKL(SearchStrategy):
    name = "rbon_kl"
    needs_logprobs = True

    beta: float = Field(
        default=0.1,
        ge=0.0,
        strict=True,
        allow_inf_nan=False,
        description="weight of log pi_ref(y|x) against the reward",
    )

    def objective(self, candidate: Candidate) -> float:
        return candidate.reward + self.beta * ref_logprob(candidate)

    async def run(self, ctx: SearchContext) -> SearchResult:
        candidates = await sample_and_score(ctx, self.n)
        objective = [self.objective(c) for c in candidates]
        return SearchResult(
            ranked=rank_by(candidates, objective), candidates=candidates, budget=ctx.budget
        )
