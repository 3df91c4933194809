"""The sweep of ``alignserve bench``: every (algorithm, concurrency) level over HTTP and,
for ``--vs-engine``, the same level driven directly on the engine (:class:`RawSide`) twice:
``raw`` (Best-of-N without HTTP) and ``floor`` (its generation alone, no scoring).

The raw side does the work the server's ``bon`` does (one generation of n samples, each
group of samples that finished together scored while the rest decode, with their token
ids for a judge that reads them) and, when the reward model scores items, scores through its own
:class:`~rewards.batcher.MicroBatcher` with the server's settings over the same reward
model, so both sides batch rewards across concurrent requests alike. The floor side makes
the same generate call and stops there: what the engine alone costs. Before each side of a
level the engine's prefix cache is emptied, and the order of the sides rotates from level
to level, so none finds another's prompts cached or always runs on a warmer machine.
:func:`in_process_server` serves the app with uvicorn from the caller's event loop, on the
same engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Protocol

import httpx

from rewards.batcher import ItemScorer, MicroBatcher
from search.protocols import RewardModel, StreamingGenerator
from search.registry import parse_strategy
from search.types import Completion, Message, SamplingConfig
from server.runtime import Runtime
from server.settings import Settings
from tools.evaluation import Prompt, cache_resetter
from tools.loadgen import (
    OK,
    Call,
    Clock,
    LevelStats,
    Sample,
    Workload,
    batch_delta,
    http_call,
    run_level,
    scrape_batches,
    summarize,
)

ClientFor = Callable[[int], AbstractAsyncContextManager[httpx.AsyncClient]]


async def sample_and_score(
    runtime: Runtime,
    reward: RewardModel,
    conversation: Sequence[Message],
    prompt_ids: Sequence[int],
    params: SamplingConfig,
    n: int,
) -> list[Completion]:
    """What :func:`search.overlap.sample_and_score` does: each group of samples that
    finished together goes to the reward while the others still decode, with its token ids
    when the reward reads them (the judge continues the generation's own context)."""
    generator = runtime.generator
    done: list[Completion] = []
    scoring: list[asyncio.Future[list[float]]] = []

    def score(group: list[Completion]) -> asyncio.Future[list[float]]:
        texts = [c.text for c in group]
        if not reward.takes_token_ids:
            return asyncio.ensure_future(reward.score(conversation, texts, partial=False))
        ids = [[*prompt_ids, *c.token_ids] for c in group]
        return asyncio.ensure_future(
            reward.score(conversation, texts, partial=False, token_ids=ids)
        )

    try:
        if not isinstance(generator, StreamingGenerator):
            done = await generator.generate(prompt_ids, params, n)
            scoring.append(score(done))
        else:
            stream = generator.generate_stream(prompt_ids, params, n)
            async with contextlib.aclosing(stream) as finished:
                async for group in finished:
                    done += [c for _, c in group]
                    scoring.append(score([c for _, c in group]))
        await asyncio.gather(*scoring)
    finally:
        for task in scoring:
            task.cancel()
    return done


def raw_call(
    runtime: Runtime,
    reward: RewardModel | None,
    prompts: Sequence[Prompt],
    work: Workload,
    *,
    clock: Clock = time.perf_counter,
) -> Call:
    """Best-of-N as the server's ``bon`` does it, without HTTP or the search layer; with
    ``reward`` None, the generation alone (the floor: one generate call, nothing scored)."""

    async def call(index: int) -> Sample:
        conversation = prompts[index % len(prompts)].conversation
        params = SamplingConfig(
            max_tokens=work.max_tokens, temperature=work.temperature, seed=work.seed + index
        )
        start = clock()
        try:
            prompt_ids = runtime.tokenizer.render_chat(conversation)
            if reward is None:
                completions = await runtime.generator.generate(prompt_ids, params, work.n)
            else:
                completions = await sample_and_score(
                    runtime, reward, conversation, prompt_ids, params, work.n
                )
        except Exception as exc:
            return Sample(index, clock() - start, type(exc).__name__)
        tokens = sum(c.num_tokens for c in completions)
        return Sample(index, clock() - start, OK, tokens)

    return call


class Progress(Protocol):
    def set_description_str(self, desc: str) -> None: ...
    def update(self, n: int = 1) -> object: ...


class BenchError(RuntimeError):
    pass


@dataclass(frozen=True)
class BenchConfig:
    algorithms: tuple[str, ...] = ("bon",)
    concurrency: tuple[int, ...] = (1, 4, 16)
    requests: int = 48
    work: Workload = field(default_factory=Workload)

    def __post_init__(self) -> None:
        if not self.algorithms or not self.concurrency:
            raise ValueError("give at least one algorithm and one concurrency level")
        if min(self.concurrency) < 1 or self.requests < 1:
            raise ValueError("concurrency levels and --requests must be positive")
        for name in self.algorithms:  # a typo fails here, not as a column of 400s
            parse_strategy({"algorithm": name, "n": self.work.n})

    def levels(self) -> list[tuple[str, int]]:
        return [(a, c) for a in self.algorithms for c in self.concurrency]


@dataclass
class RawSide:
    """The engine driven directly: the runtime and the reward path it scores through."""

    runtime: Runtime
    reward: RewardModel
    batching: str
    sizes: list[int] = field(default_factory=list)  # batch sizes its micro-batcher sent

    @classmethod
    def of(cls, runtime: Runtime, settings: Settings) -> RawSide:
        if not isinstance(runtime.reward, ItemScorer):
            return cls(runtime, runtime.reward, "the reward model directly (not micro-batched)")
        side = cls(runtime, runtime.reward, "")
        side.reward = MicroBatcher(
            runtime.reward,
            max_batch_size=settings.reward_max_batch_size,
            max_wait_ms=settings.reward_max_wait_ms,
            observe=lambda size, _wait: side.sizes.append(size),
        )
        side.batching = (
            f"its own MicroBatcher (max {settings.reward_max_batch_size}, "
            f"{settings.reward_max_wait_ms} ms) over the server's reward model"
        )
        return side

    async def aclose(self) -> None:
        if isinstance(self.reward, MicroBatcher):
            await self.reward.aclose()


def http_clients(url: str, api_key: str | None, timeout_s: float) -> ClientFor:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    def client_for(concurrency: int) -> httpx.AsyncClient:
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        timeout = httpx.Timeout(timeout_s, connect=30.0)
        return httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=timeout)

    return client_for


def ticker(bar: Progress) -> Callable[[object], None]:
    def tick(_sample: object) -> None:
        bar.update()

    return tick


async def _empty_cache(reset: Callable[[], object]) -> None:
    try:
        if inspect.isawaitable(cleared := reset()):
            await cleared
    except Exception as exc:  # a dead engine fails here first: say so, not a traceback
        raise BenchError(f"emptying the prefix cache failed; is the engine down? {exc!r}") from exc


def rotated(sides: Sequence[str], k: int) -> list[str]:
    """The sides in the order level ``k`` runs them: each level starts one further on."""
    start = k % len(sides)
    return [*sides[start:], *sides[:start]]


async def sweep(
    config: BenchConfig,
    prompts: Sequence[Prompt],
    client_for: ClientFor,
    *,
    raw: RawSide | None = None,
    floor: bool = False,
    bar: Progress | None = None,
) -> list[LevelStats]:
    """Every level over HTTP, and with ``raw`` also directly on the engine (Best-of-N and,
    with ``floor``, its generation alone), rotating which side goes first; the engine's
    prefix cache is emptied before each side."""
    reset = cache_resetter(raw.runtime) if raw is not None else None
    rows = []
    for k, (algorithm, concurrency) in enumerate(config.levels()):
        work = dataclasses.replace(config.work, algorithm=algorithm)
        engine_sides = ("raw", "http", "floor") if floor else ("raw", "http")
        sides = ["http"] if raw is None else rotated(engine_sides, k)
        for side in sides:
            if reset is not None:
                await _empty_cache(reset)
            if bar is not None:
                bar.set_description_str(f"{algorithm} x{concurrency} {side}")
            tick = None if bar is None else ticker(bar)
            batches: tuple[int | None, float | None]
            if side in ("raw", "floor") and raw is not None:
                sent = len(raw.sizes)
                reward = raw.reward if side == "raw" else None
                samples, wall = await run_level(
                    raw_call(raw.runtime, reward, prompts, work),
                    config.requests,
                    concurrency,
                    on_done=tick,
                )
                sizes = raw.sizes[sent:]
                batches = (len(sizes), sum(sizes) / len(sizes)) if sizes else (None, None)
            else:
                async with client_for(concurrency) as client:
                    before = await scrape_batches(client)
                    call = http_call(client, prompts, work)
                    samples, wall = await run_level(
                        call, config.requests, concurrency, on_done=tick
                    )
                    batches = batch_delta(before, await scrape_batches(client))
            rows.append(
                summarize(
                    samples,
                    wall,
                    algorithm=algorithm,
                    concurrency=concurrency,
                    side=side,
                    batches=batches,
                )
            )
    return rows


async def warm_up(
    client_for: ClientFor,
    prompts: Sequence[Prompt],
    config: BenchConfig,
    raw: RawSide | None = None,
) -> None:
    """The first engine steps are slow; one small request per side keeps that out of the
    first level, and fails early on a server that is not ready or refuses the key."""
    work = dataclasses.replace(config.work, algorithm=config.algorithms[0], max_tokens=8)
    async with client_for(1) as client:
        sample = await http_call(client, prompts, work)(0)
        if sample.outcome != OK:
            raise BenchError(f"the warm-up request to {client.base_url} failed: {sample.outcome}")
    if raw is not None:
        sample = await raw_call(raw.runtime, raw.reward, prompts, work)(0)
        if sample.outcome != OK:
            raise BenchError(f"the warm-up on the engine failed: {sample.outcome}")


@asynccontextmanager
async def in_process_server(settings: Settings, runtime: Runtime) -> AsyncIterator[str]:
    """The app over ``runtime`` on a free 127.0.0.1 port, served from this event loop."""
    import uvicorn

    from server.app import create_app

    # The app must not shut the engine down on exit: the raw side and its owner (we) do.
    app = create_app(settings, runtime=dataclasses.replace(runtime, closers=[]))
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    serving = asyncio.ensure_future(server.serve())
    try:
        while not server.started:
            if serving.done():
                serving.result()
                raise BenchError("the in-process server did not start")
            await asyncio.sleep(0.05)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await serving
