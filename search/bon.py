"""Best-of-N (``bon``).

Rule: sample N complete responses to the prompt in one engine call, score all of them
with the reward model, answer with the argmax (ties go to the earlier sample). Beirami et
al. 2024 bound its KL from the policy by log N - (N-1)/N. The scoring overlaps the
generation (search.overlap.sample_and_score): what differs from the paper's "sample,
then score" is only when each score is computed, never which.

Budget: one engine call of N samples; N responses scored, in one reward call per group of
samples that finished together (one call when all finish in the same engine step).
"""

from __future__ import annotations

from search.context import SearchContext
from search.overlap import sample_and_score
from search.select import finish
from search.strategy import SearchStrategy
from search.types import SearchResult


class BestOfN(SearchStrategy):
    name = "bon"
    honours_constraints = True

    async def run(self, ctx: SearchContext) -> SearchResult:
        return finish(ctx, await sample_and_score(ctx, self.n))
