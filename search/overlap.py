"""Scoring overlapped with generation: a response goes to the reward model as soon as it
finishes, while the others still decode, and the search waits only for the last score.

``score_as_finished`` runs engine requests (each a prompt, a token limit and a sample
count) through ``SearchContext.generate_stream``. The samples one engine step finished
come together; each such group is turned into the responses to score (``grow``: a sample
as it is, or a tree's parent extended by it) and sent to the reward model at once, in a
task of its own: as complete answers, or by the search's own ``score_group``. Responses
that finished before (``ready``) are scored from the start. A failed score fails the
search and cancels the decoding still running; a cancelled search cancels both.

Best-of-N and the searches built on it (``sample_and_score``), TreeBoN's last layer and
speculative rejection's segments use it. Phases in the report: ``generate`` until the last
sample finished, ``score`` the wait for the scores after it (what scoring adds to the
latency), ``score_overlapped`` the time scoring ran while samples were still decoding.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from search.context import Generated, SearchContext, gather_all
from search.types import Candidate, Completion

G = TypeVar("G", bound=Generated)


@dataclass(frozen=True)
class Request:
    """One engine request: ``n`` samples of up to ``max_tokens`` after ``prompt_ids``."""

    prompt_ids: Sequence[int]
    max_tokens: int
    n: int


@dataclass(frozen=True)
class Scored(Generic[G]):
    response: G
    reward: float


async def score_as_finished(
    ctx: SearchContext,
    requests: Sequence[Request],
    grow: Callable[[int, int, Completion], G],
    ready: Sequence[G] = (),
    score_group: Callable[[list[G]], Awaitable[list[float]]] | None = None,
) -> tuple[list[Scored[G]], list[list[Scored[G]]]]:
    """``ready`` scored, and every request's samples (``grow(request index, sample index,
    sample)``) in sample order, each scored as soon as it finished: as complete answers,
    or by ``score_group`` (a search's own scoring of a group, e.g. speculative
    rejection's rank scores of prefixes and finished responses)."""
    grown: list[dict[int, G]] = [{} for _ in requests]
    rewards: dict[tuple[int, int], float] = {}  # (request, sample) -> reward; -1: ready
    scoring: list[asyncio.Task[None]] = []
    failures: list[BaseException] = []
    first_score: list[float] = []

    async def score(keys: list[tuple[int, int]], responses: list[G]) -> None:
        try:
            if score_group is None:
                got = await ctx.score_generated(responses, partial=False)
            else:
                got = await score_group(responses)
        except Exception as exc:
            failures.append(exc)
            sampling.cancel()  # the search has failed: stop the samples still decoding
            raise
        rewards.update(zip(keys, got, strict=True))

    def send(keys: list[tuple[int, int]], responses: list[G]) -> None:
        first_score.append(time.perf_counter())
        scoring.append(asyncio.ensure_future(score(keys, responses)))

    async def sample(r: int, request: Request) -> None:
        stream = ctx.generate_stream(request.prompt_ids, request.max_tokens, request.n)
        async for group in stream:
            responses = [grow(r, i, c) for i, c in group]
            grown[r].update((i, g) for (i, _), g in zip(group, responses, strict=True))
            send([(r, i) for i, _ in group], responses)

    async def sample_all() -> float:
        await gather_all([sample(r, q) for r, q in enumerate(requests)])
        return time.perf_counter()

    start = time.perf_counter()
    if ready:
        send([(-1, i) for i in range(len(ready))], list(ready))
    sampling = asyncio.ensure_future(sample_all())
    try:
        try:
            generated = await sampling
        except asyncio.CancelledError:
            if failures:
                raise failures[0] from None
            raise
        await asyncio.gather(*scoring)
    finally:
        for task in (sampling, *scoring):
            task.cancel()
        await asyncio.gather(sampling, *scoring, return_exceptions=True)
    ctx.budget.add_phase("generate", generated - start, start=start)
    ctx.budget.add_phase("score", time.perf_counter() - generated, start=generated)
    if first_score and first_score[0] < generated and len(scoring) > 1:
        ctx.budget.add_phase("score_overlapped", generated - first_score[0], start=first_score[0])
    done = [Scored(g, rewards[(-1, i)]) for i, g in enumerate(ready)]
    per_request = [
        [Scored(samples[i], rewards[(r, i)]) for i in sorted(samples)]
        for r, samples in enumerate(grown)
    ]
    return done, per_request


async def sample_and_score(ctx: SearchContext, n: int) -> list[Candidate]:
    """n complete responses from one engine call, each scored as soon as it finished."""
    request = Request(ctx.prompt_ids, ctx.sampling.max_tokens, n)
    _, (samples,) = await score_as_finished(ctx, [request], lambda _r, _i, c: c)
    return [Candidate(s.response, s.reward) for s in samples]
