"""Best-of-N (``bon``).

Rule: sample N complete responses to the prompt in one engine call, score all of them
with the reward model in one call, answer with the argmax (ties go to the earlier
sample). Beirami et al. 2024 bound its KL from the policy by log N - (N-1)/N.

Budget: one engine call of N samples, one reward call of N responses.
"""

from __future__ import annotations

from search.strategy import SearchContext, SearchStrategy, finish, sample_and_score
from search.types import SearchResult


class BestOfN(SearchStrategy):
    name = "bon"

    async def run(self, ctx: SearchContext) -> SearchResult:
        return finish(ctx, await sample_and_score(ctx, self.n))
