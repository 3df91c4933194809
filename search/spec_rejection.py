"""Speculative rejection (``spec_rejection``).

Paper: Sun, Zhang, Wu, Jin, Song, Bai, Zhang, Chen, Jiao, Rafailov, Jiao 2024, "Fast
Best-of-N Decoding via Speculative Rejection" (arXiv 2410.20290).

Rule: start ``n_initial`` responses (default 2 x n) with one engine call of
``decision_tokens`` tokens each (default max_tokens // 4). At each decision point score
every response in the pool with the reward model on its partial text, keep the best
ceil((1 - alpha) * pool) of live and finished responses together (at least one) and
continue only the live survivors by ``decision_tokens`` more (one engine request each, on
prompt ids + their ids, so the prefix cache serves them). Repeat until every survivor has
finished or reached max_tokens. The survivors are then scored as complete responses and
the answer is their argmax (ties to the earlier one).

The paper rejects at a point chosen by GPU memory; on a paged engine memory has no such
meaning, so the decision points are every ``decision_tokens`` tokens instead.

Defaults: n_initial = 2 x n, decision_tokens = max_tokens // 4 (at least 1), alpha = 0.5.

Streaming: the answer is one of the survivors, so their common prefix (all of the text,
once one survives) is committed after every cut and continuation (see
``SearchContext.commit_common_prefix``), and a stream sends it before the search ends.

Report: ``details.rounds`` lists per decision point the tokens reached, the pool size,
how many survived, and the partial rewards. The candidates are the final survivors.

Budget: generated tokens are at most n_initial x max_tokens (every rejected response
stops early). Engine calls: 1 + one per survivor continued at each round. Reward calls:
one per decision point plus one for the final survivors.
"""

from __future__ import annotations

import math

from pydantic import Field, ValidationInfo, field_validator

from search.partial import Partial, as_candidates, roots, top_indices
from search.strategy import SearchContext, SearchStrategy, finish, gather_all
from search.types import SearchResult


def survivors_count(pool: int, alpha: float) -> int:
    """How many of a pool of ``pool`` responses survive a rejection at rate alpha."""
    # The epsilon keeps (1 - 0.5) * 4 at 2 when floats land a hair above it.
    return max(1, math.ceil((1.0 - alpha) * pool - 1e-9))


class SpeculativeRejection(SearchStrategy):
    name = "spec_rejection"
    needs_logprobs = False

    n_initial: int | None = Field(
        default=None, ge=1, strict=True, description="responses started (default 2 x n)"
    )
    decision_tokens: int | None = Field(
        default=None, ge=1, strict=True, description="tokens between decision points"
    )
    alpha: float = Field(
        default=0.5,
        ge=0.0,
        lt=1.0,
        strict=True,
        allow_inf_nan=False,
        description="fraction rejected at each decision point",
    )

    @field_validator("n_initial")
    @classmethod
    def _at_least_n(cls, n_initial: int | None, info: ValidationInfo) -> int | None:
        n = info.data.get("n")
        if n_initial is not None and n is not None and n_initial < n:
            raise ValueError(f"must be at least n ({n})")
        return n_initial

    def initial(self) -> int:
        return self.n_initial if self.n_initial is not None else 2 * self.n

    def peak_candidates(self) -> int:
        return self.initial()

    def step(self, max_tokens: int) -> int:
        return self.decision_tokens or max(1, max_tokens // 4)

    async def run(self, ctx: SearchContext) -> SearchResult:
        max_tokens = ctx.sampling.max_tokens
        step = self.step(max_tokens)
        with ctx.budget.phase("generate"):
            first = await ctx.generate(ctx.prompt_ids, min(step, max_tokens), self.initial())
        pool: list[Partial] = roots(first, max_tokens)
        rounds = []
        while any(not p.finished for p in pool):
            with ctx.budget.phase("score_partial"):
                scores = await ctx.score([p.text for p in pool], partial=True)
            keep = sorted(top_indices(scores, survivors_count(len(pool), self.alpha)))
            rounds.append(
                {
                    "tokens": max(p.num_tokens for p in pool),
                    "pool": len(pool),
                    "kept": len(keep),
                    "partial_rewards": scores,
                }
            )
            pool = [pool[i] for i in keep]
            ctx.commit_common_prefix([p.text for p in pool])  # the answer is one of these
            pool = await self.continue_live(ctx, pool, step)
            ctx.commit_common_prefix([p.text for p in pool])
        with ctx.budget.phase("score"):
            rewards = await ctx.score([p.text for p in pool], partial=False)
        return finish(ctx, as_candidates(pool, rewards), {"rounds": rounds})

    async def continue_live(
        self, ctx: SearchContext, pool: list[Partial], step: int
    ) -> list[Partial]:
        """Every live response one segment further; finished ones unchanged, order kept."""
        max_tokens = ctx.sampling.max_tokens
        live = [i for i, p in enumerate(pool) if not p.finished]
        with ctx.budget.phase("generate"):
            segments = await gather_all(
                [
                    ctx.generate(
                        [*ctx.prompt_ids, *pool[i].token_ids],
                        min(step, max_tokens - pool[i].num_tokens),
                    )
                    for i in live
                ]
            )
        extended = list(pool)
        for i, (segment,) in zip(live, segments, strict=True):
            extended[i] = pool[i].extend(segment, max_tokens)
        return extended
