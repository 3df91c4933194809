"""Socket timeouts uvicorn lacks, as a subclass of its httptools protocol.

- **Headers**: a connection must deliver a request's complete headers within
  ``read_timeout_s`` of opening (or of its previous response), else it gets 408 and is
  closed. uvicorn's keep-alive timeout stops once the first byte arrives, so one byte
  every few seconds (slowloris) would hold a socket and a file descriptor forever.
- **Writes**: when a client stops reading, the transport's buffer fills and uvicorn pauses
  the response (``pause_writing``); if it is still paused ``write_timeout_s`` later the
  connection is aborted. ``abort``, not ``close``: close would wait to flush a buffer
  the client never drains. The app then sees a disconnect, so a stream ends like a client
  that hung up (and its search is cancelled, if it still ran).

Body chunks are timed in ``server.body_limit`` (an ASGI concern: the app is reading).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

logger = logging.getLogger(__name__)
REQUEST_TIMEOUT = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"content-length: 0\r\nconnection: close\r\n\r\n"
)


def guarded_protocol(
    read_timeout_s: float,
    write_timeout_s: float,
    on_timeout: Callable[[str], None] = lambda _: None,
) -> type[HttpToolsProtocol]:
    """The protocol class for ``uvicorn.Config(http=...)``; ``on_timeout("headers" |
    "write")`` is told of every connection cut (for a metric)."""

    class GuardedProtocol(HttpToolsProtocol):
        _header_timer: asyncio.TimerHandle | None = None
        _write_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm_header_timer()

        def on_message_begin(self) -> None:
            # The first byte of a request (also the next one on a keep-alive connection,
            # whose idle wait uvicorn's keep-alive timeout covers).
            super().on_message_begin()
            self._arm_header_timer()

        def on_headers_complete(self) -> None:
            self._cancel("_header_timer")
            super().on_headers_complete()

        def pause_writing(self) -> None:
            super().pause_writing()
            if self._write_timer is None:
                self._write_timer = self.loop.call_later(write_timeout_s, self._write_timed_out)

        def resume_writing(self) -> None:
            self._cancel("_write_timer")
            super().resume_writing()

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel("_header_timer")
            self._cancel("_write_timer")
            super().connection_lost(exc)

        def _arm_header_timer(self) -> None:
            self._cancel("_header_timer")
            self._header_timer = self.loop.call_later(read_timeout_s, self._headers_timed_out)

        def _cancel(self, name: str) -> None:
            timer = getattr(self, name)
            if timer is not None:
                timer.cancel()
                setattr(self, name, None)

        def _headers_timed_out(self) -> None:
            self._header_timer = None
            if self.transport.is_closing():
                return
            on_timeout("headers")
            self.transport.write(REQUEST_TIMEOUT)
            self.transport.close()

        def _write_timed_out(self) -> None:
            self._write_timer = None
            if not self.flow.write_paused:
                return
            logger.warning(
                "closing a connection whose client read nothing for %g s", write_timeout_s
            )
            on_timeout("write")
            self.transport.abort()

    return GuardedProtocol
