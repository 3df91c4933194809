"""Speculative rejection (``spec_rejection``).

Paper: Sun, Haider, Zhang, Yang, Qiu, Yin, Wang, Bartlett, Zanette, "Fast Best-of-N
Decoding via Speculative Rejection", NeurIPS 2024 (arXiv 2410.20290). Reference code:
Zanette-Labs/SpeculativeRejection.

Rule: start ``n_initial`` responses in one engine call, cut at ``decision_tokens``. At
every decision point rank the live responses just extended together with the finished
ones the previous cut kept, keep round((1 - alpha) x pool) (Python's halves-to-even, as
the reference; at least one) and continue only the live survivors, each by one engine
request on prompt ids + its ids. Every response is scored once per segment it grows by (a
live one as a prefix, a finished one as a complete answer, never judged again). The next
decision point falls where the live survivors hold n_initial x decision_tokens generated
tokens, at least ``decision_tokens`` further. The answer is the best finished response.

Options: ``n_initial`` 2N (at most ``--max-live-candidates``), ``decision_tokens``
max_tokens / 4, ``alpha`` 0.5 (at least 0.05). At most 512 decision points.

Budget: at most n_initial x max_tokens tokens; engine calls 1 + one per live survivor at
each decision point; one or two reward calls per group of samples that ended in the same
engine step, none at the end (search.overlap).

Deviations (docs/algorithms.md has each reason): decision points by generated tokens, not
GPU memory, with a ``decision_tokens`` floor between cuts; ``n_initial`` is an option, not
a memory-sized batch; the answer is chosen among every finished response; a cut keeps at
least one; live prefixes get the judge's partial rubric; the client's sampling; token-id
continuations.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from pydantic import Field, ValidationInfo, field_validator

from search.budget import Work, check_segments
from search.context import SearchContext
from search.overlap import Request, Scored, score_as_finished
from search.partial import Partial, as_candidates, root, top_indices
from search.select import finish
from search.strategy import SearchStrategy
from search.types import Completion, SearchResult

# Smallest rejection rate: see "Bounds" in the module docstring.
MIN_ALPHA = 0.05


def survivors_count(pool: int, alpha: float) -> int:
    """How many of a pool of ``pool`` responses survive a rejection at rate alpha."""
    # round() halves to even, as the reference's int(round(...)) does; at least one, so
    # the search always has an answer to continue or return.
    return max(1, round((1.0 - alpha) * pool))


def next_decision(length: int, live: int, memory: int, step: int, max_tokens: int) -> int:
    """Where ``live`` responses of ``length`` tokens are cut next: where they hold the
    ``memory`` tokens the first batch held at its cut, at least ``step`` further."""
    return min(max_tokens, max(length + step, memory // live))


async def generate_scored(
    ctx: SearchContext, requests: list[Request], grow: Callable[[int, int, Completion], Partial]
) -> list[Scored[Partial]]:
    """The requests' responses, each scored once as soon as its sample finished: a live
    one as a prefix, a finished one as a complete answer (search.overlap)."""
    _, per_request = await score_as_finished(ctx, requests, grow, partial=lambda p: not p.finished)
    return [s for scored in per_request for s in scored]


class SpeculativeRejection(SearchStrategy):
    name = "spec_rejection"
    needs_logprobs = False

    n_initial: int | None = Field(
        default=None, ge=1, strict=True, description="responses started (default 2 x n)"
    )
    decision_tokens: int | None = Field(
        default=None,
        ge=1,
        strict=True,
        description="tokens to the first decision point (default max_tokens / 4)",
    )
    alpha: float = Field(
        default=0.5,
        ge=MIN_ALPHA,
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

    def samples_per_call(self) -> int:
        # The first call samples all n_initial at once, whatever n is.
        return self.initial()

    def step(self, max_tokens: int) -> int:
        return min(max_tokens, self.decision_tokens or max(1, max_tokens // 4))

    def worst_case(self, max_tokens: int) -> Work:
        """n_initial responses of max_tokens; the pools' sizes after every cut (the live
        survivors continued and scored are at most the pool kept), over the most
        continuations the decision_tokens floor allows."""
        step = self.step(max_tokens)
        check_segments(math.ceil(max_tokens / step), max_tokens, "search.decision_tokens")
        continuations = math.ceil(max_tokens / step) - 1
        pool = self.initial()
        continued = 0
        for done in range(continuations):
            kept = survivors_count(pool, self.alpha)
            if kept == pool:  # a fixed point: every later cut keeps the same number
                continued += pool * (continuations - done)
                break
            pool = kept
            continued += pool
        return Work(
            tokens=self.initial() * max_tokens,
            engine_calls=1 + continued,
            reward_items=self.initial() + continued,
        )

    async def run(self, ctx: SearchContext) -> SearchResult:
        max_tokens = ctx.sampling.max_tokens
        step = self.step(max_tokens)
        memory = self.initial() * step
        first = Request(ctx.prompt_ids, step, self.initial())
        pool = await generate_scored(ctx, [first], lambda _, i, c: root(i, c, max_tokens))
        # Every finished response, in the order they finished: the possible answers.
        finished = [s for s in pool if s.response.finished]
        rounds = []
        while any(not s.response.finished for s in pool):
            order = top_indices([s.reward for s in pool], survivors_count(len(pool), self.alpha))
            kept = [pool[i] for i in order]  # best first: the reference's stable sort
            live = [s.response for s in kept if not s.response.finished]
            rounds.append(
                {
                    "tokens": max(s.response.num_tokens for s in pool),
                    "pool": len(pool),
                    "kept": len(kept),
                    "continued": len(live),
                    "rewards": sorted((s.reward for s in pool), reverse=True),
                }
            )
            self.commit(ctx, live, finished)
            if not live:
                break
            # Live responses all share a length: every segment ran to the same target.
            target = next_decision(live[0].num_tokens, len(live), memory, step, max_tokens)
            fresh = await self.continue_to(ctx, live, target)
            finished += [s for s in fresh if s.response.finished]
            # The reference ranks the kept finished first, then the extended in rank order.
            pool = [s for s in kept if s.response.finished] + fresh
            self.commit(ctx, [s.response for s in fresh], finished)
        return finish(
            ctx,
            as_candidates([s.response for s in finished], [s.reward for s in finished]),
            {"rounds": rounds},
        )

    @staticmethod
    def commit(ctx: SearchContext, live: list[Partial], finished: list[Scored[Partial]]) -> None:
        """Every answer still possible extends a live survivor or is a finished response."""
        ctx.commit_common_prefix([p.text for p in live] + [s.response.text for s in finished])

    @staticmethod
    async def continue_to(
        ctx: SearchContext, live: list[Partial], target: int
    ) -> list[Scored[Partial]]:
        """Every live response extended to ``target`` tokens (or until it stops), each by
        one engine request, and scored as its request ends."""
        max_tokens = ctx.sampling.max_tokens
        requests = [
            Request([*ctx.prompt_ids, *p.token_ids], target - p.num_tokens, 1) for p in live
        ]
        return await generate_scored(
            ctx, requests, lambda r, _, segment: live[r].extend(segment, max_tokens)
        )
