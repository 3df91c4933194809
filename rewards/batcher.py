"""Cross-request micro-batching of reward scoring.

Every search scores its own handful of responses; with many searches running, the reward
model would see many small calls. ``MicroBatcher`` sits in front of any reward model that
can score mixed items (``score_items``: each item its own conversation and partial flag),
gathers the items of all concurrent ``score`` calls for up to ``max_wait_ms`` after the
first one arrives or until ``max_batch_size`` items, and sends them as one batch. Batches
are dispatched without waiting for the previous one, so an engine-backed judge keeps
several in flight (the engine batches them further) while a classifier's single worker
thread takes them in turn.

Failures stay with their caller. A batch mixes several tenants' items, and one bad item
(a conversation too long for the reward model, a reply it cannot parse) must not fail the
others: when a batch that holds more than one caller fails, each caller's items are
scored again on their own, concurrently, and only a caller whose own call fails gets the
error. A failed batch therefore costs its items once more; a batch of one caller is not
retried. A scorer that answers with the wrong number of rewards fails the batch with
``RewardUnavailable(reason="bad_value")`` (and so is retried per caller too): it never
kills the batch task and never leaves a caller waiting for its timeout.

Cancellation: a caller that is cancelled (its search was: a disconnect, a deadline, the
reward timeout) drops its items if their batch has not been sent yet; once every caller
of a dispatched batch has gone, the batch's call to the reward model is cancelled too, so
an engine-backed judge aborts its requests rather than finish work nobody will read.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, runtime_checkable

from rewards.wrapper import ForwardingWrapper
from search.errors import RewardUnavailable
from search.protocols import AsyncClosable, RewardModel
from search.types import Message
from transport import affinity

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class ScoreItem:
    conversation: Sequence[Message]
    response: str
    partial: bool = False
    # The request's own judging criteria (search.rubric) for the judge kinds; None: theirs.
    rubric: str | None = None
    # The generation prompt's token ids then the response's, when the caller has them (the
    # judge's continuation layout reads them; other models ignore them).
    ids: tuple[int, ...] | None = None
    # The search's routing key (transport.affinity), taken when the item is queued: the
    # batch is sent from the batcher's own task, outside the search's context. The judge
    # on a routed engine sends each search's items under its own key.
    affinity: str | None = None


@runtime_checkable
class ItemScorer(Protocol):
    async def score_items(self, items: Sequence[ScoreItem]) -> list[float]: ...


class BatchableReward(RewardModel, ItemScorer, Protocol):
    """A reward model that also scores mixed items: what MicroBatcher wraps."""


async def gather_or_cancel(coros: Sequence[Coroutine[Any, Any, T]]) -> list[T]:
    """``asyncio.gather``, except that the first failure cancels the others: their replies
    could no longer be used, and the model should not keep working for nothing."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


@dataclass
class _Pending:
    item: ScoreItem
    future: asyncio.Future[float]
    # The score() call it belongs to: a failed batch is retried per caller.
    caller: int
    queued_at: float = field(default_factory=time.perf_counter)


BatchObserver = Callable[[int, float], None]
"""Called with each batch's size and its oldest item's wait in seconds."""


class MicroBatcher(ForwardingWrapper, AsyncClosable):
    def __init__(
        self,
        inner: BatchableReward,
        *,
        max_batch_size: int = 32,
        max_wait_ms: float = 10.0,
        observe: BatchObserver | None = None,
    ) -> None:
        self.inner: BatchableReward = inner
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000.0
        self.observe = observe
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._batches: set[asyncio.Task[None]] = set()
        self._callers = 0

    async def score(
        self,
        conversation: Sequence[Message],
        responses: Sequence[str],
        *,
        partial: bool = False,
        rubric: str | None = None,
        token_ids: Sequence[Sequence[int]] | None = None,
    ) -> list[float]:
        if not responses:
            return []
        self._ensure_worker()
        loop = asyncio.get_running_loop()
        self._callers += 1
        ids = [None] * len(responses) if token_ids is None else [tuple(t) for t in token_ids]
        key = affinity.current()
        pending = [
            _Pending(
                ScoreItem(conversation, r, partial, rubric, i, key),
                loop.create_future(),
                self._callers,
            )
            for r, i in zip(responses, ids, strict=True)
        ]
        for p in pending:
            self._queue.put_nowait(p)
        try:
            return list(await asyncio.gather(*(p.future for p in pending)))
        finally:
            for p in pending:
                if p.future.done() and not p.future.cancelled():
                    p.future.exception()  # retrieved: an error is logged once, by the caller
                p.future.cancel()  # no-op when resolved; otherwise the worker skips it

    def _ensure_worker(self) -> None:
        if self._worker is None or self._worker.done():
            # A context of its own: the first caller's (its search key, its request id)
            # must not ride along with every later batch.
            self._worker = asyncio.get_running_loop().create_task(
                self._collect(), context=contextvars.Context()
            )

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
        callers: dict[int, list[_Pending]] = {}
        for p in batch:
            callers.setdefault(p.caller, []).append(p)
        try:
            rewards = await self._scored(batch)
        except Exception as exc:
            if len(callers) == 1:
                _fail(batch, exc)
                return
            logger.warning(
                "a reward batch of %d items from %d callers failed (%r); scoring each "
                "caller's items on their own",
                len(batch),
                len(callers),
                exc,
            )
            await asyncio.gather(*(self._send_alone(group) for group in callers.values()))
            return
        if rewards is not None:
            _resolve(batch, rewards)

    async def _send_alone(self, group: list[_Pending]) -> None:
        try:
            rewards = await self._scored(group)
        except Exception as exc:
            _fail(group, exc)
            return
        if rewards is not None:
            _resolve(group, rewards)

    async def _scored(self, batch: list[_Pending]) -> list[float] | None:
        """The inner model's rewards for ``batch``; None when every caller went away while
        it ran (the call is then cancelled: see the module docstring)."""
        if all(p.future.done() for p in batch):
            return None
        call = asyncio.ensure_future(self.inner.score_items([p.item for p in batch]))

        def abandon(_: object) -> None:
            if all(p.future.cancelled() for p in batch):
                call.cancel()

        for p in batch:
            p.future.add_done_callback(abandon)
        try:
            rewards = await call
        except asyncio.CancelledError:
            if call.cancelled() and all(p.future.cancelled() for p in batch):
                return None  # abandoned, not our own cancellation (aclose)
            raise
        finally:
            for p in batch:
                p.future.remove_done_callback(abandon)
        if not isinstance(rewards, list | tuple) or len(rewards) != len(batch):
            count = len(rewards) if isinstance(rewards, list | tuple) else type(rewards).__name__
            logger.error(
                "reward model %s returned %s rewards for %d items",
                type(self.inner).__name__,
                count,
                len(batch),
            )
            raise RewardUnavailable(
                "the reward model returned the wrong number of rewards", reason="bad_value"
            )
        return list(rewards)

    async def aclose(self) -> None:
        """Stop collecting (the inner model is closed by its owner, the runtime)."""
        tasks = [t for t in (self._worker, *self._batches) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _fail(batch: list[_Pending], exc: BaseException) -> None:
    for p in batch:
        if not p.future.done():
            p.future.set_exception(exc)


def _resolve(batch: list[_Pending], rewards: list[float]) -> None:
    for p, reward in zip(batch, rewards, strict=True):
        if not p.future.done():
            p.future.set_result(reward)
