"""Admission control: at most ``max_running`` searches at once and at most ``max_waiting``
queued behind them; a request beyond both is refused at once with 429 and Retry-After
instead of piling up until everything times out.

A refusal is decided before the response starts, so it is a clean 429 with Retry-After.
A plain request takes its slot before running; a stream takes it when its body starts
(a generator that never starts holds nothing), so only a queue that filled in between
refuses inside the stream, as an error event. The slot is given back when the search
ends, however it ends. The
counts are exported as gauges; rejections are counted by reason.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from search.errors import Overloaded
from server.metrics import ServerMetrics


class Admission:
    def __init__(
        self,
        max_running: int,
        max_waiting: int,
        metrics: ServerMetrics,
        retry_after_s: int = 1,
    ) -> None:
        self.max_running = max_running
        self.max_waiting = max_waiting
        self.retry_after_s = retry_after_s
        self.metrics = metrics
        self.running = 0
        self.waiting = 0
        self._slots = asyncio.Semaphore(max_running)

    def refuse(self, reason: str, message: str) -> Overloaded:
        self.metrics.rejections.labels(reason).inc()
        return Overloaded(message, headers={"Retry-After": str(self.retry_after_s)})

    def check(self) -> None:
        """Refuse now if neither a slot nor a queue place is free."""
        if self._slots.locked() and self.waiting >= self.max_waiting:
            raise self.refuse(
                "queue_full",
                f"the server is at capacity ({self.running} searches running, "
                f"{self.waiting} queued); retry after {self.retry_after_s} s",
            )

    async def enter(self) -> Callable[[], None]:
        """Wait for a slot (queued, if the queue has room); returns the function that gives
        it back (calling it twice is harmless). Cancelling the wait leaks nothing."""
        self.check()
        self.waiting += 1
        self._publish()
        try:
            await self._slots.acquire()
        finally:
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

    def _publish(self) -> None:
        self.metrics.queue_depth.set(self.waiting)
        self.metrics.in_flight.set(self.running)
