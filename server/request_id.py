"""Request ids: a client's ``X-Request-Id`` (when it is a sane token) or a new one, echoed
on the response and attached to every log line written while the request is served (also
from the tasks and worker threads it starts: they inherit the context), so one request
can be followed through the log. A client id that is too long or holds characters outside
``[A-Za-z0-9._:-]`` is replaced, never logged: log lines must not carry client text."""

from __future__ import annotations

import contextvars
import logging
import re
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADER = b"x-request-id"
SANE = re.compile(r"[A-Za-z0-9._:-]{1,128}")
current: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


def request_id_from(headers: list[tuple[bytes, bytes]]) -> str:
    given = dict(headers).get(HEADER, b"").decode("latin-1")
    return given if SANE.fullmatch(given) else uuid.uuid4().hex


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_from(scope["headers"])
        token = current.set(request_id)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", []) if h[0].lower() != HEADER]
                message = {**message, "headers": [*headers, (HEADER, request_id.encode())]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            current.reset(token)


class RequestIdFilter(logging.Filter):
    """Gives every record a ``request_id`` ("-" outside a request) for the log format."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = current.get()
        return True
