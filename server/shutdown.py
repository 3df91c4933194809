"""Graceful shutdown. On the first SIGTERM (or Ctrl-C) the server keeps listening but drains:
/ready answers 503 so the load balancer stops sending traffic, new searches get 503 with
Retry-After, and the searches already running or queued go on. When none is left, or after
``shutdown_grace_s``, uvicorn's own shutdown closes the connections (giving what is left of
the grace, at least a second, to responses still being written) and cancels what still
runs, which aborts its engine work. A second signal skips the wait: everything still
running is cancelled at once, and the engine is still closed cleanly.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from types import FrameType

import uvicorn

from server.admission import Admission

logger = logging.getLogger(__name__)


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, admission: Admission, grace_s: float) -> None:
        super().__init__(config)
        self.admission = admission
        self.grace_s = grace_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain: asyncio.Task[None] | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._loop is None or not self.started or self._drain is not None or self.should_exit:
            # Not serving yet, or a second signal: stop now, cancelling what still runs.
            self.config.timeout_graceful_shutdown = 0
            super().handle_exit(sig, frame)
            return
        self._captured_signals.append(sig)  # re-raised at exit, as uvicorn does
        # A signal handler runs between bytecodes of the loop's thread: hand over safely.
        self._loop.call_soon_threadsafe(self._start_draining)

    def _start_draining(self) -> None:
        self.admission.draining = True
        self._drain = asyncio.ensure_future(self._drain_then_exit())

    async def _drain_then_exit(self) -> None:
        assert self._loop is not None
        deadline = self._loop.time() + self.grace_s
        logger.info(
            "draining: /ready is 503, new searches are refused; waiting up to %g s for "
            "%d running and %d queued searches",
            self.grace_s,
            self.admission.running,
            self.admission.waiting,
        )
        if not await self.admission.wait_idle(self.grace_s):
            logger.warning("grace period over: cancelling %d searches", self.admission.running)
        self.config.timeout_graceful_shutdown = max(1, int(deadline - self._loop.time()))
        self.should_exit = True


def run_draining(app: object, *, host: str, port: int, log_level: str, grace_s: float) -> None:
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level)  # type: ignore[arg-type]
    admission: Admission = app.state.admission  # type: ignore[attr-defined]
    DrainingServer(config, admission, grace_s).run()
