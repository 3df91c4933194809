"""Admission control: at most ``max_running`` searches at once and at most ``max_waiting``
queued behind them; a request beyond both is refused at once with 429 and Retry-After
instead of piling up until everything times out.

A refusal is decided before the response starts, so it is a clean 429 with Retry-After.
A plain request takes its slot before running; a stream takes it when its body starts
(a generator that never starts holds nothing), so only a queue that filled in between
refuses inside the stream, as an error event. The slot is given back when the search
ends, however it ends: for a stream, when its search ends, not when a slow client has
read it all. Open streams are capped on their own (``max_open_streams``), since a
finished stream can still hold a socket while its client reads. The counts are exported
as gauges; rejections are counted by reason.

Draining (after SIGTERM, see ``server.shutdown``): every new search is refused with 503 and
Retry-After, so a load balancer moves it to another replica, while the running and queued
ones go on; ``wait_idle`` says when none is left.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from search.errors import AlignserveError, Overloaded, ShuttingDown
from server.metrics import ServerMetrics


class Admission:
    def __init__(
        self,
        max_running: int,
        max_waiting: int,
        metrics: ServerMetrics,
        retry_after_s: int = 1,
        max_open_streams: int = 64,
    ) -> None:
        self.max_running = max_running
        self.max_open_streams = max_open_streams
        self.open_streams = 0
        self.max_waiting = max_waiting
        self.retry_after_s = retry_after_s
        self.metrics = metrics
        metrics.max_running.set(max_running)
        metrics.max_waiting.set(max_waiting)
        self.running = 0
        self.waiting = 0
        self.draining = False
        # Set when the shutdown grace is over: the searches still running end with 503
        # ShuttingDown (server.serving_base), where uvicorn's cancellation gave a plain-text
        # 500 (finding N5).
        self.cut = asyncio.Event()
        self._slots = asyncio.Semaphore(max_running)
        self._idle = asyncio.Event()
        self._idle.set()

    def refuse(
        self, reason: str, message: str, error: type[AlignserveError] = Overloaded
    ) -> AlignserveError:
        self.metrics.rejections.labels(reason).inc()
        return error(message, headers={"Retry-After": str(self.retry_after_s)})

    def check(self, *, stream: bool = False) -> None:
        """Refuse now if the server is draining, if neither a slot nor a queue place is
        free, or (``stream``) if max_open_streams streams are open."""
        if self.draining:
            raise self.refuse(
                "shutting_down",
                "the server is shutting down; retry on another replica",
                ShuttingDown,
            )
        if self._slots.locked() and self.waiting >= self.max_waiting:
            raise self.refuse(
                "queue_full",
                f"the server is at capacity ({self.running} searches running, "
                f"{self.waiting} queued); retry after {self.retry_after_s} s",
            )
        if stream and self.open_streams >= self.max_open_streams:
            raise self.refuse(
                "streams_full",
                f"{self.open_streams} streams are open, the most this server keeps; "
                f"retry after {self.retry_after_s} s",
            )

    async def enter(self) -> Callable[[], None]:
        """Wait for a slot (queued, if the queue has room); returns the function that gives
        it back (calling it twice is harmless). Cancelling the wait leaks nothing."""
        self.check()
        self.waiting += 1
        self._publish()
        try:
            await self._slots.acquire()
        except BaseException:  # cancelled while queued
            self.waiting -= 1
            self._publish()
            raise
        self.waiting -= 1
        self.running += 1
        self._publish()
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self.running -= 1
                self._slots.release()
                self._publish()

        return release

    async def wait_idle(self, timeout_s: float) -> bool:
        """Wait until no search runs or waits (at most ``timeout_s``); True if none is left."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    def _publish(self) -> None:
        self.metrics.queue_depth.set(self.waiting)
        self.metrics.in_flight.set(self.running)
        if self.running or self.waiting:
            self._idle.clear()
        else:
            self._idle.set()
