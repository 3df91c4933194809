"""Wasserstein-regularised Best-of-N (``rbon_wd``), also called MBR-BoN.

Paper: Jinnai, Morimura, Ariu, Abe 2024, "Regularized Best-of-N Sampling with Minimum
Bayes Risk Objective for Language Model Alignment" (arXiv 2404.01054), RBoN with the
Wasserstein-distance regulariser. With the cost C(y, y') = 1 - U(y, y') and pi_ref estimated
by the N samples themselves, the Wasserstein distance from a one-hot distribution on y_i
to pi_ref is 1 - (1/N) sum_j U(y_i, y_j), so the regularised objective of one response is

    R(x, y_i) + beta * (1/N) sum_j U(y_i, y_j)

the reward plus beta times the response's minimum-Bayes-risk score. The sum runs over
all j, y_i itself included, as in the paper: every candidate gets the same self-term
(1.0 for both utilities; chrF gives an empty response 0.0), so it shifts no choice.

Rule: sample N complete responses in one engine call, score all of them in one reward
call, compute the N x N utility matrix, answer with the argmax of that objective (ties go
to the earlier sample). A high beta favours the consensus response; beta = 0 is BoN.

Defaults: beta = 1.0, utility = "embedding" (cosine similarity of all-MiniLM-L6-v2
sentence embeddings; "chrf" is the sentence chrF). The paper tunes beta on a
development set over a range of values; 1.0 weighs the two terms equally, which suits
this server because the judge's rewards and the utilities both lie on [0, 1]. A reward
model on another scale (a classifier's logits) wants beta rescaled to match.

Report: ``details.utility`` the utility's name, ``details.mbr_scores`` each candidate's
(1/N) sum_j U(y_i, y_j), ``details.objective`` each candidate's objective.

Ranking: by the objective, best first; ``Candidate.reward`` stays the raw reward.

Budget: one engine call of N samples, one reward call of N responses; the utility matrix
is timed in phase "utility" (it calls no engine and no reward model).

Bound: beta at most 1e6 (``rbon_kl.MAX_BETA``), far above any tuned value.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import Field

from search.context import SearchContext
from search.overlap import sample_and_score
from search.rbon_kl import MAX_BETA
from search.select import rank_by
from search.strategy import SearchStrategy
from search.types import SearchResult

UtilityName = Literal["embedding", "chrf"]


def mean_utility(matrix: Sequence[Sequence[float]], *, exclude_self: bool) -> list[float]:
    """Each row's mean utility against the others as references: (1/N) sum_j U[i][j], or
    (1/(N-1)) sum_{j != i} U[i][j] with ``exclude_self``. A lone row without itself scores 0."""
    n = len(matrix)
    if not exclude_self:
        return [sum(row) / n for row in matrix]
    if n == 1:
        return [0.0]
    # Summed without the diagonal rather than subtracted from the total: a large self-term
    # would otherwise leave rounding error that can break exact ties.
    return [sum(u for j, u in enumerate(row) if j != i) / (n - 1) for i, row in enumerate(matrix)]


class RegularizedBoNWD(SearchStrategy):
    name = "rbon_wd"
    honours_constraints = True

    beta: float = Field(
        default=1.0,
        ge=0.0,
        le=MAX_BETA,
        strict=True,
        allow_inf_nan=False,
        description="weight of the mean utility against the reward",
    )
    utility: UtilityName = Field(default="embedding", description="utility of the MBR term")

    async def run(self, ctx: SearchContext) -> SearchResult:
        # Looked up first: a server without this utility fails before spending the engine.
        utility = ctx.utility(self.utility)
        candidates = await sample_and_score(ctx, self.n)
        with ctx.budget.phase("utility"):
            matrix = await utility.matrix([c.text for c in candidates])
        mbr = mean_utility(matrix, exclude_self=False)
        objective = [c.reward + self.beta * m for c, m in zip(candidates, mbr, strict=True)]
        return SearchResult(
            ranked=rank_by(candidates, objective),
            candidates=candidates,
            budget=ctx.budget,
            details={
                "utility": self.utility,
                "mbr_scores": [float(m) for m in mbr],
                "objective": [float(o) for o in objective],
            },
        )
