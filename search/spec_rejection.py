"""Speculative rejection (``spec_rejection``).

Paper: Sun, Haider, Zhang, Yang, Qiu, Yin, Wang, Bartlett, Zanette, "Fast Best-of-N
Decoding via Speculative Rejection", NeurIPS 2024 (arXiv 2410.20290). Reference code:
Zanette-Labs/SpeculativeRejection.

Rule: start ``n_initial`` responses in one engine call, cut at ``decision_tokens``. At
every decision point rank the live responses just extended together with the finished
ones the previous cut kept, keep round((1 - alpha) x pool) (Python's halves-to-even, as
the reference; at least one) and continue only the live survivors, each by one engine
request on prompt ids + its ids. The next decision point falls where the live survivors
hold n_initial x decision_tokens generated tokens, at least ``decision_tokens`` further.
The answer is the best finished response.

One scale for a cut: every response in a ranking is ranked by its rank score, the reward
model's partial rubric (the judge: "unfinished, rate it so far"), live and finished
alike. A finished response also gets a complete score, its candidate reward, which picks
the answer. Each response is scored once per segment it grows by, and a finished one
once per rubric when it finishes (its rank score only when a cut may still follow),
never judged again.

Defaults, the paper's regime scaled to the request: the "memory" is Best-of-n's, n x
max_tokens generated tokens. ``n_initial`` is 8n (at most 256 and the server's live
limit, at least n) and the first cut falls where that batch fills the memory:
``decision_tokens`` n x max_tokens / n_initial (max_tokens / 8 at the default), at least
8 tokens. Each later segment spends that
memory again, so at alpha 0.5 the cuts fall at max_tokens / 8, / 4 and / 2, and n
responses run to the end. ``alpha`` 0.5 (at least 0.05). At most 512 decision points.

Budget: at most n_initial x max_tokens tokens; engine calls 1 + one per live survivor at
each decision point; one or two reward calls per group of samples that ended in the same
engine step (rank scores, complete scores), none at the end (search.overlap).

Where this differs from the paper and the reference (docs/algorithms.md has each reason):

- Memory is counted in generated tokens, Best-of-n's n x max_tokens, not measured on the
  GPU. The reference starts twice the batch that fits its GPU (at most 1000), shrunk until
  its first segment is at least 8 tokens, and cuts when the batch fills the free KV
  memory; its README runs it on the GPU where Best-of-120 runs batches of 120, about 8x
  fewer. Hence 8n started and the 8-token floor. 256 is the server's default
  ``--max-live-candidates``, so a default request is admitted at every n up to
  ``--max-n``; a server with a lower limit lowers the default to it
  (``fit_live_limit``; a completions request's prompts share it). A larger start is the
  client's ``n_initial``, never changed.
- A ``decision_tokens`` floor between cuts (a cut that rejects nobody would otherwise
  leave one-token segments).
- The answer is chosen among every finished response, and a cut keeps at least one.
- The reference scores every text with one reward model and no hint; a judge here has
  two rubrics that differ in level (the complete one read 0.15 higher on the same
  finished responses, and a cut that mixed them kept every finished response:
  docs/benchmarks/2026-12-07-judge-rubric-levels.md), so a cut ranks by the partial one
  only, and the complete one (finished responses) picks the answer. A finished response
  costs one more reward item than in the reference.
- The client's sampling (the reference: temperature 1, top-k 50); token-id continuations.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from pydantic import Field, PrivateAttr, ValidationInfo, field_validator

from search.budget import Work, check_segments
from search.context import SearchContext, gather_all
from search.overlap import Request, Scored, score_as_finished
from search.partial import Partial, as_candidates, root, top_indices
from search.select import finish
from search.strategy import SearchStrategy
from search.types import Completion, SearchResult

# Smallest rejection rate: see "Bounds" in the module docstring.
MIN_ALPHA = 0.05
# Default start, per unit of n: the reference's ~1000 on the GPU of Best-of-120's batches.
INITIAL_PER_N = 8
# The default start's cap: the server's default --max-live-candidates.
MAX_DEFAULT_INITIAL = 256
# The shortest default first segment: the reference shrinks its batch until it is 8.
MIN_FIRST_CUT = 8


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
    ctx: SearchContext,
    requests: list[Request],
    grow: Callable[[int, int, Completion], Partial],
    cut_follows: bool,
) -> tuple[list[Scored[Partial]], list[Scored[Partial]]]:
    """The requests' responses with their rank scores, and the finished ones with their
    complete scores; each scored as soon as its sample finished (search.overlap). With no
    cut to follow (``cut_follows`` false) a finished response's rank score is never read:
    its complete score stands in, and it is scored once."""
    # Complete scores by response object, alive until the call returns.
    complete: dict[int, float] = {}

    async def score(group: Sequence[Partial]) -> list[float]:
        ranked = [p for p in group if cut_follows or not p.finished]
        done = [p for p in group if p.finished]
        # One rubric for the whole ranking: the partial one, finished responses included.
        rank_scores, done_scores = await gather_all(
            [ctx.score_generated(ranked, partial=True), ctx.score_generated(done, partial=False)]
        )
        complete.update(zip(map(id, done), done_scores, strict=True))
        rank = dict(zip(map(id, ranked), rank_scores, strict=True))
        return [rank[id(p)] if id(p) in rank else complete[id(p)] for p in group]

    _, per_request = await score_as_finished(ctx, requests, grow, score_group=score)
    pool = [s for scored in per_request for s in scored]
    finished = [Scored(s.response, complete[id(s.response)]) for s in pool if s.response.finished]
    return pool, finished


class SpeculativeRejection(SearchStrategy):
    name = "spec_rejection"
    needs_logprobs = False

    n_initial: int | None = Field(
        default=None, ge=1, strict=True, description="responses started (default 8 x n, <= 256)"
    )
    decision_tokens: int | None = Field(
        default=None,
        ge=1,
        strict=True,
        description="tokens to the first decision point (default n x max_tokens / n_initial)",
    )
    alpha: float = Field(
        default=0.5,
        ge=MIN_ALPHA,
        lt=1.0,
        strict=True,
        allow_inf_nan=False,
        description="fraction rejected at each decision point",
    )

    # The room the server leaves for live candidates (fit_live_limit): bounds the default.
    _live_room: int = PrivateAttr(default=MAX_DEFAULT_INITIAL)

    @field_validator("n_initial")
    @classmethod
    def _at_least_n(cls, n_initial: int | None, info: ValidationInfo) -> int | None:
        n = info.data.get("n")
        if n_initial is not None and n is not None and n_initial < n:
            raise ValueError(f"must be at least n ({n})")
        return n_initial

    def initial(self) -> int:
        if self.n_initial is not None:
            return self.n_initial
        return max(self.n, min(INITIAL_PER_N * self.n, MAX_DEFAULT_INITIAL, self._live_room))

    def fit_live_limit(self, max_live: int) -> None:
        # Only ever lowered: a completions request fits each prompt's share after the
        # server fitted the whole limit.
        self._live_room = min(self._live_room, max_live)

    def peak_candidates(self) -> int:
        return self.initial()

    def samples_per_call(self) -> int:
        # The first call samples all n_initial at once, whatever n is.
        return self.initial()

    def step(self, max_tokens: int) -> int:
        """The first cut: the option, else where the first batch holds Best-of-n's
        n x max_tokens tokens, at least MIN_FIRST_CUT (never past max_tokens)."""
        if self.decision_tokens is not None:
            return min(max_tokens, self.decision_tokens)
        return min(max_tokens, max(MIN_FIRST_CUT, self.n * max_tokens // self.initial()))

    def worst_case(self, max_tokens: int) -> Work:
        """n_initial responses of max_tokens; the pools' sizes after every cut (the live
        survivors continued and scored are at most the pool kept), over the most
        continuations the decision_tokens floor allows; plus one complete score for each
        response, which finishes once."""
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
            reward_items=2 * self.initial() + continued,
        )

    async def run(self, ctx: SearchContext) -> SearchResult:
        max_tokens = ctx.sampling.max_tokens
        step = self.step(max_tokens)
        memory = self.initial() * step
        first = Request(ctx.prompt_ids, step, self.initial())
        # pool: ranked by rank scores; finished: every finished response, in the order
        # they finished, with its complete score (the possible answers).
        pool, finished = await generate_scored(
            ctx, [first], lambda _, i, c: root(i, c, max_tokens), cut_follows=step < max_tokens
        )
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
                    "rank_scores": sorted((s.reward for s in pool), reverse=True),
                }
            )
            self.commit(ctx, live, finished)
            if not live:
                break
            # Live responses all share a length: every segment ran to the same target.
            target = next_decision(live[0].num_tokens, len(live), memory, step, max_tokens)
            fresh, done = await self.continue_to(ctx, live, target)
            finished += done
            # The reference ranks the kept finished first, then the extended in rank order.
            pool = [s for s in kept if s.response.finished] + fresh
            self.commit(ctx, [s.response for s in fresh], finished)
        return finish(
            ctx,
            as_candidates([s.response for s in finished], [s.reward for s in finished]),
            {"rank_score": "partial", "rounds": rounds},
        )

    @staticmethod
    def commit(ctx: SearchContext, live: list[Partial], finished: list[Scored[Partial]]) -> None:
        """Every answer still possible extends a live survivor or is a finished response."""
        ctx.commit_common_prefix([p.text for p in live] + [s.response.text for s in finished])

    @staticmethod
    async def continue_to(
        ctx: SearchContext, live: list[Partial], target: int
    ) -> tuple[list[Scored[Partial]], list[Scored[Partial]]]:
        """Every live response extended to ``target`` tokens (or until it stops), each by
        one engine request, and scored as its request ends (see generate_scored)."""
        max_tokens = ctx.sampling.max_tokens
        requests = [
            Request([*ctx.prompt_ids, *p.token_ids], target - p.num_tokens, 1) for p in live
        ]
        return await generate_scored(
            ctx,
            requests,
            lambda r, _, segment: live[r].extend(segment, max_tokens),
            cut_follows=target < max_tokens,
        )
