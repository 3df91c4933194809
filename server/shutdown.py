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
from functools import partial
from types import FrameType
from typing import Any

import uvicorn

from server.admission import Admission
from server.http_timeouts import guarded_protocol
from server.logs import uvicorn_log_config

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
            # Their handlers answer 503 with Retry-After, within the second that uvicorn
            # gives responses still being written.
            self.admission.cut.set()
        self.config.timeout_graceful_shutdown = max(1, int(deadline - self._loop.time()))
        self.should_exit = True


def run_draining(app: object, *, host: str, port: int, log_level: str, grace_s: float) -> int:
    state: Any = app.state  # type: ignore[attr-defined]
    settings, metrics = state.settings, state.metrics

    def cut(label: str) -> None:
        metrics.limit_rejections.labels(label).inc()

    config = uvicorn.Config(
        app,  # type: ignore[arg-type]
        host=host,
        port=port,
        log_level=log_level,
        # JSON logs: uvicorn's lines (the access log too) go through the root JSON handler.
        log_config=uvicorn_log_config(settings.log_format),
        # Header, whole-body and write timeouts per connection, and the uploads per
        # client (server.http_timeouts); beyond max_connections open
        # connections (or tasks) uvicorn answers 503 at once.
        http=guarded_protocol(
            settings.http_read_timeout_s,
            settings.stream_write_timeout_s,
            cut,
            body_timeout_s=settings.http_body_timeout_s,
            max_uploads=settings.max_uploads_per_client,
            max_header_bytes=settings.max_header_bytes,
            max_header_count=settings.max_header_count,
        ),
        limit_concurrency=settings.max_connections,
    )
    admission: Admission = app.state.admission  # type: ignore[attr-defined]
    server = DrainingServer(config, admission, grace_s)
    # The exit status: 1 after a fatal error (see server.health), so it gets restarted.
    app.state.exit_server = partial(exit_now, server)  # type: ignore[attr-defined]
    server.run()
    return 1 if getattr(app.state, "fatal", None) else 0  # type: ignore[attr-defined]


# With the engine dead the searches fail at once; this only lets their answers go out.
FATAL_GRACE_S = 5


def exit_now(server: uvicorn.Server) -> None:
    """Stop serving without draining (a fatal error: nothing here can succeed any more)."""
    server.config.timeout_graceful_shutdown = FATAL_GRACE_S
    server.should_exit = True
