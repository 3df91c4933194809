"""Every failure becomes one OpenAI error JSON here: ``{"error": {message, type, param, code}}``.
Clients never see a stack trace; unexpected exceptions are logged and answered with 500."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Send

from search.errors import AlignserveError

logger = logging.getLogger(__name__)


# Every error message and param is cut to these (finding N8): client text quoted in one
# is cut at its source (search.errors.shown), and this bounds any that is not.
MAX_MESSAGE_CHARS = 1000
MAX_PARAM_CHARS = 128


def error_body(
    message: str, error_type: str, status: int, param: str | None = None
) -> dict[str, Any]:
    if len(message) > MAX_MESSAGE_CHARS:
        message = message[: MAX_MESSAGE_CHARS - 3] + "..."
    if param is not None and len(param) > MAX_PARAM_CHARS:
        param = param[: MAX_PARAM_CHARS - 3] + "..."
    return {"error": {"message": message, "type": error_type, "param": param, "code": status}}


def error_response(exc: AlignserveError) -> JSONResponse:
    return JSONResponse(
        error_body(exc.message, exc.error_type, exc.status_code, exc.param),
        status_code=exc.status_code,
        headers=exc.headers or None,
    )


async def send_error(
    send: Send,
    message: str,
    error_type: str,
    status: int,
    headers: Sequence[tuple[bytes, bytes]] = (),
) -> None:
    """The error JSON as a raw ASGI response, for middleware that answers before the app
    runs (a refused key, an oversized body)."""
    body = json.dumps(error_body(message, error_type, status)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def sse_error(exc: AlignserveError) -> str:
    """An error that happens after a stream started is sent as a data event."""
    body = error_body(exc.message, exc.error_type, exc.status_code, exc.param)
    return f"data: {json.dumps(body)}\n\n"


def validation_error_response(exc: RequestValidationError) -> JSONResponse:
    first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    param = ".".join(loc) or None
    if first.get("type") == "json_invalid":
        # Its location is a character offset, not a parameter.
        param = None
        message = "the request body is not valid JSON"
    else:
        message = f"{param or 'body'}: {first.get('msg', 'invalid value')}"
    return JSONResponse(error_body(message, "invalid_request_error", 400, param), status_code=400)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(AlignserveError)
    async def _domain(_: Request, exc: AlignserveError) -> JSONResponse:
        if exc.status_code >= 500:
            logger.warning("request failed: %s", exc.message)
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return validation_error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        error_type = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        # Keep the exception's headers: a 405 must list the allowed methods (Allow).
        return JSONResponse(
            error_body(str(exc.detail), error_type, exc.status_code),
            status_code=exc.status_code,
            headers=exc.headers,
        )

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        logger.exception("unexpected error", exc_info=exc)
        return JSONResponse(
            error_body("internal server error", "internal_error", 500), status_code=500
        )
