"""Cross-request micro-batching of reward scoring.

Every search scores its own handful of responses; with many searches running, the reward
model would see many small calls. ``MicroBatcher`` sits in front of any reward model that
can score mixed items (``score_items``: each item its own conversation and partial flag),
gathers the items of all concurrent ``score`` calls for up to ``max_wait_ms`` after the
first one arrives or until ``max_batch_size`` items, and sends them as one batch. Batches
are dispatched without waiting for the previous one, so an engine-backed judge keeps
several in flight (the engine batches them further) while a classifier's single worker
thread takes them in turn.

A caller that is cancelled (its search was) drops its items if their batch has not been
sent yet; a batch that fails fails every caller in it with the same error.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from search.types import Message


@dataclass(frozen=True)
class ScoreItem:
    conversation: Sequence[Message]
    response: str
    partial: bool = False
    # The request's own judging criteria (search.rubric) for the judge kinds; None: theirs.
    rubric: str | None = None


@runtime_checkable
class ItemScorer(Protocol):
    async def score_items(self, items: Sequence[ScoreItem]) -> list[float]: ...


@dataclass
class _Pending:
    item: ScoreItem
    future: asyncio.Future[float]
    queued_at: float = field(default_factory=time.perf_counter)


BatchObserver = Callable[[int, float], None]
"""Called with each batch's size and its oldest item's wait in seconds."""


class MicroBatcher:
    def __init__(
        self,
        inner: ItemScorer,
        *,
        max_batch_size: int = 32,
        max_wait_ms: float = 10.0,
        observe: BatchObserver | None = None,
    ) -> None:
        self.inner = inner
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000.0
        self.observe = observe
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._batches: set[asyncio.Task[None]] = set()

    @property
    def bounds(self) -> tuple[float, float] | None:
        """The wrapped reward model's range (see search.protocols.reward_bounds)."""
        return getattr(self.inner, "bounds", None)

    async def score(
        self,
        conversation: Sequence[Message],
        responses: Sequence[str],
        *,
        partial: bool = False,
        rubric: str | None = None,
    ) -> list[float]:
        if not responses:
            return []
        self._ensure_worker()
        loop = asyncio.get_running_loop()
        pending = [
            _Pending(ScoreItem(conversation, r, partial, rubric), loop.create_future())
            for r in responses
        ]
        for p in pending:
            self._queue.put_nowait(p)
        try:
            return list(await asyncio.gather(*(p.future for p in pending)))
        finally:
            for p in pending:
                if p.future.done() and not p.future.cancelled():
                    p.future.exception()  # retrieved: a shared batch error is logged once
                p.future.cancel()  # no-op when resolved; otherwise the worker skips it

    def _ensure_worker(self) -> None:
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._collect())

    async def _collect(self) -> None:
        while True:
            batch = [await self._queue.get()]
            deadline = time.perf_counter() + self.max_wait_s
            while len(batch) < self.max_batch_size:
                timeout = deadline - time.perf_counter()
                if timeout <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), timeout))
                except TimeoutError:
                    break
            live = [p for p in batch if not p.future.done()]
            if live:
                task = asyncio.get_running_loop().create_task(self._send(live))
                self._batches.add(task)
                task.add_done_callback(self._batches.discard)

    async def _send(self, batch: list[_Pending]) -> None:
        if self.observe is not None:
            self.observe(len(batch), time.perf_counter() - min(p.queued_at for p in batch))
        try:
            rewards = await self.inner.score_items([p.item for p in batch])
        except Exception as exc:
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(exc)
            return
        for p, reward in zip(batch, rewards, strict=True):
            if not p.future.done():
                p.future.set_result(reward)

    async def aclose(self) -> None:
        """Stop collecting (the inner model is closed by its owner, the runtime)."""
        tasks = [t for t in (self._worker, *self._batches) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
