"""Request body size limit, as ASGI middleware: a declared Content-Length over the limit is
refused before anything is read; a chunked body is counted as it arrives and refused once
it passes the limit, so no client can make the server buffer an unbounded body. (The
overflow is an HTTPException, which FastAPI's body parsing passes on to the app's error
handler, so the client gets the same 413 error JSON either way.)"""

from __future__ import annotations

import json

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.errors import error_body


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self.refuse(send)
            return
        seen = 0

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise HTTPException(413, self.message())
            return message

        await self.app(scope, counting_receive, send)

    def message(self) -> str:
        return f"the request body exceeds {self.max_bytes} bytes"

    async def refuse(self, send: Send) -> None:
        body = json.dumps(error_body(self.message(), "invalid_request_error", 413)).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
