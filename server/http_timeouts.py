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

- **Whole body** (finding M6 of the 2026-12-07 review): a request's body must arrive in
  full within ``body_timeout_s`` of its headers, else 408 (or, with a response already
  sent, a plain close). Each chunk's own timeout (``server.body_limit``, while the app
  reads) let a body trickle one byte every few seconds for ever.
- **Uploads per client**: at most ``max_uploads`` requests from one client address may be
  receiving a body at once; one more is answered 429 (``Connection: close``) as soon as its
  headers are in. Without it, ``--max-connections`` trickling bodies (a byte every 2 s,
  cut only by the whole-body deadline) held every connection the server allows, and
  uvicorn answered everything else, ``/health`` included, 503. Bodies of well-behaved
  clients arrive in milliseconds, so the cap only meets a client that sends slowly, or a
  proxy carrying many such (raise it there: docs/configuration.md).

- **Header size** (finding N9): a request's head (request line and headers) may take
  at most ``max_header_bytes`` and ``max_header_count`` headers, else 431 and the
  connection closed. httptools has no limit: a 1 MB header line and 5,000 headers were
  parsed and held. The bytes are counted as they are fed to the parser, so the parser
  holds at most the limit plus one read (as vLLM bounds h11 with
  ``h11_max_incomplete_event_size`` and ``h11_max_header_count``).

``on_cut(label)`` is told of every cut, with the metric label: ``headers_timeout``,
``body_timeout``, ``write_timeout``, ``uploads_per_client``, ``headers_too_large``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

logger = logging.getLogger(__name__)
REQUEST_TIMEOUT = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"content-length: 0\r\nconnection: close\r\n\r\n"
)


HEADERS_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: text/plain; "
    b"charset=utf-8\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
)


TOO_MANY_UPLOADS = (
    b'{"error":{"message":"too many requests from this client are sending a body at once",'
    b'"type":"rate_limit_exceeded","param":null,"code":429}}'
)


async def too_many_uploads(scope: Any, receive: Any, send: Any) -> None:
    """The ASGI answer to one upload too many: 429, and the connection closed."""
    headers = [
        (b"content-type", b"application/json"),
        (b"retry-after", b"1"),
        (b"connection", b"close"),
        (b"content-length", str(len(TOO_MANY_UPLOADS)).encode()),
    ]
    await send({"type": "http.response.start", "status": 429, "headers": headers})
    await send({"type": "http.response.body", "body": TOO_MANY_UPLOADS})


def has_body(headers: list[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0"):
            return True
    return False


def guarded_protocol(
    read_timeout_s: float,
    write_timeout_s: float,
    on_cut: Callable[[str], None] = lambda _: None,
    *,
    body_timeout_s: float = 60.0,
    max_uploads: int = 16,
    max_header_bytes: int = 64 * 1024,
    max_header_count: int = 256,
) -> type[HttpToolsProtocol]:
    """The protocol class for ``uvicorn.Config(http=...)``: one per server, since the
    uploads per client are counted in it."""
    uploads: Counter[str] = Counter()

    class GuardedProtocol(HttpToolsProtocol):
        _header_timer: asyncio.TimerHandle | None = None
        _write_timer: asyncio.TimerHandle | None = None
        _body_timer: asyncio.TimerHandle | None = None
        # The client address whose upload count this connection's body holds.
        _uploading: str | None = None
        # Bytes of the current request's head fed to the parser; None once it is in.
        _head_bytes: int | None = 0
        # The head as parsed (URL and headers): a head that arrives in one read is whole
        # before data_received can count it, so the limit is checked here too.
        _head_size = 0
        _header_count = 0
        _refused = False  # too many headers: the request is never handed to the app

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm_header_timer()

        def data_received(self, data: bytes) -> None:
            if self._head_bytes is not None:
                self._head_bytes += len(data)
            super().data_received(data)
            # Still in the head after this read (or too many headers in it): cut.
            over = self._head_bytes is not None and self._head_bytes > max_header_bytes
            if (over or self._refused) and not self.transport.is_closing():
                self._headers_too_large()

        def on_url(self, url: bytes) -> None:
            self._head_size += len(url)
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._header_count += 1
            self._head_size += len(name) + len(value) + 4  # ": " and CRLF
            if self._header_count <= max_header_count:
                super().on_header(name, value)

        def on_message_begin(self) -> None:
            # The first byte of a request (also the next one on a keep-alive connection,
            # whose idle wait uvicorn's keep-alive timeout covers).
            super().on_message_begin()
            self._arm_header_timer()

        def on_headers_complete(self) -> None:
            self._cancel("_header_timer")
            if self._header_count > max_header_count or self._head_size > max_header_bytes:
                self._refused = True  # data_received cuts the connection: no app call
                return
            self._head_bytes = None
            if not has_body(self.headers):
                super().on_headers_complete()
                return
            peer = self.client[0] if self.client else ""
            if uploads[peer] >= max_uploads:
                on_cut("uploads_per_client")
                # Answered by a request cycle of its own (as uvicorn's own 503), so the
                # body bytes that follow are ignored, not parsed as a bad request.
                app, self.app = self.app, too_many_uploads
                try:
                    super().on_headers_complete()
                finally:
                    self.app = app
                return
            uploads[peer] += 1
            self._uploading = peer
            self._body_timer = self.loop.call_later(body_timeout_s, self._body_timed_out)
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            if self._refused:
                return
            self._upload_done()
            self._head_bytes, self._head_size, self._header_count = 0, 0, 0  # the next head
            super().on_message_complete()

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
            self._upload_done()
            super().connection_lost(exc)

        def _upload_done(self) -> None:
            self._cancel("_body_timer")
            if self._uploading is not None:
                uploads[self._uploading] -= 1
                if uploads[self._uploading] <= 0:
                    del uploads[self._uploading]
                self._uploading = None

        def _body_timed_out(self) -> None:
            self._body_timer = None
            if self.transport.is_closing():
                return
            on_cut("body_timeout")
            cycle = self.cycle
            if cycle is not None and not cycle.response_started:
                # The app is still waiting for the body: it sees a disconnect, and must
                # not answer after the 408.
                cycle.disconnected = True
                cycle.message_event.set()
                self.transport.write(REQUEST_TIMEOUT)
            self.transport.close()

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
            on_cut("headers_timeout")
            self.transport.write(REQUEST_TIMEOUT)
            self.transport.close()

        def _headers_too_large(self) -> None:
            self._cancel("_header_timer")
            on_cut("headers_too_large")
            self.transport.write(HEADERS_TOO_LARGE)
            self.transport.close()

        def _write_timed_out(self) -> None:
            self._write_timer = None
            if not self.flow.write_paused:
                return
            logger.warning(
                "closing a connection whose client read nothing for %g s", write_timeout_s
            )
            on_cut("write_timeout")
            self.transport.abort()

    return GuardedProtocol
