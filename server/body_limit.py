"""Request body limits, as ASGI middleware: a declared Content-Length over the size limit is
refused before anything is read; a chunked body is counted as it arrives and refused once
it passes the limit, so no client can make the server buffer an unbounded body. Each body
chunk must arrive within ``read_timeout_s`` (else 408 and the connection is closed), so a
slow body cannot hold a socket and a buffer forever. (Both are HTTPExceptions, which
FastAPI's body parsing passes on to the app's error handler, so the client gets the same
error JSON as for a declared overflow.)"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.errors import send_error


class BodyLimit:
    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        read_timeout_s: float = 30.0,
        on_timeout: Callable[[], None] = lambda: None,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.read_timeout_s = read_timeout_s
        self.on_timeout = on_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self.refuse(send)
            return
        seen = 0
        complete = False

        async def counting_receive() -> Message:
            nonlocal seen, complete
            if complete:  # after the body only a disconnect comes: wait as long as it takes
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.read_timeout_s)
            except TimeoutError:
                self.on_timeout()
                raise HTTPException(
                    408,
                    f"the request body did not arrive within {self.read_timeout_s:g} s",
                    headers={"Connection": "close"},
                ) from None
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                complete = not message.get("more_body", False)
                if seen > self.max_bytes:
                    raise HTTPException(413, self.message())
            return message

        await self.app(scope, counting_receive, send)

    def message(self) -> str:
        return f"the request body exceeds {self.max_bytes} bytes"

    async def refuse(self, send: Send) -> None:
        await send_error(send, self.message(), "invalid_request_error", 413)
