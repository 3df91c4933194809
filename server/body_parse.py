"""Request bodies parsed and validated off the event loop, with the count caps first
(finding H4 of the 2026-12-07 review).

FastAPI parses a declared body (``json.loads``) and validates it with pydantic on the
event loop, before the handler runs: a 3.5 MB body of 120,000 empty messages costs about
60 ms of parsing and 340 ms of validation, all of it before ``--max-messages`` refused it,
and 8 clients sending such bodies pushed ``/health`` to a median of 1.1 s. So the POST
routes take the raw request and call ``parsed_body``, which

1. reads the body (``server.body_limit`` bounds its size and time);
2. in the app's one parse thread (``app.state.parse_pool``): ``json.loads``, then the
   cheap caps on what the parsed object holds (``prescan``: top-level fields,
   ``messages``, a list ``input``), and only then the pydantic validation, which is
   therefore never run on a conversation longer than the server accepts.

One thread, not many: ``json.loads`` and pydantic hold the GIL for a whole call, so
several parse threads would take turns holding it against the event loop; with one, the
loop waits at most for one bounded call (a 4 MB body parses in well under 0.1 s).

Errors keep the shapes FastAPI gave them (``RequestValidationError``, the location under
``body``), so ``server.errors`` answers them as before. The routes' OpenAPI entries are
declared by ``documented`` routes that are never reached (``server.openapi_docs``).
"""

from __future__ import annotations

import asyncio
import json
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from search.errors import SHOWN_CHARS, InvalidRequest, LimitExceeded, shown

Model = TypeVar("Model", bound=BaseModel)
# Top-level fields of a request: the API has a few dozen; unknown ones are only logged.
MAX_FIELDS = 1024
# Fields holding the conversation, capped at --max-messages before validation.
CONVERSATION_FIELDS = ("messages", "input")
# A surrogate's JSON escape: only a body holding one can hold a lone surrogate (raw UTF-8
# cannot encode one), so only such bodies are checked in full.
SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def parse_pool(request: Request) -> ThreadPoolExecutor:
    state = request.app.state
    pool: ThreadPoolExecutor | None = getattr(state, "parse_pool", None)
    if pool is None:
        pool = state.parse_pool = ThreadPoolExecutor(1, thread_name_prefix="alignserve-parse")
    return pool


async def parsed_body(request: Request, model: type[Model]) -> Model:
    """The request's JSON body as ``model``, parsed and validated in the parse thread."""
    try:
        body = await request.body()
    except ClientDisconnect:
        # Gone, or cut by the whole-body deadline (server.http_timeouts): nobody reads
        # the answer (FastAPI answered this 400 too; uncaught it is logged as a 500).
        raise HTTPException(400, "the client disconnected before its body arrived") from None
    max_messages: int = request.app.state.settings.max_messages
    loop = asyncio.get_running_loop()
    try:
        return await loop.run_in_executor(parse_pool(request), parse, model, body, max_messages)
    except LimitExceeded as exc:
        # Counted as the serving base counts the limits it refuses.
        request.app.state.metrics.limit_rejections.labels(exc.limit).inc()
        raise


def parse(model: type[Model], body: bytes, max_messages: int) -> Model:
    """``body`` as ``model``: RequestValidationError or HTTPException (400) as FastAPI
    raises them, LimitExceeded over a count cap."""
    if not body:
        missing = {"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}
        raise RequestValidationError([missing])
    try:
        value = json.loads(body)
    except json.JSONDecodeError as exc:
        error = {
            "type": "json_invalid",
            "loc": ("body", exc.pos),
            "msg": "JSON decode error",
            "input": {},
            "ctx": {"error": exc.msg},
        }
        raise RequestValidationError([error]) from None
    except (ValueError, RecursionError):
        # Invalid UTF-8, nesting too deep: FastAPI's answer to a body it cannot parse.
        raise HTTPException(400, "There was an error parsing the body") from None
    prescan(value, max_messages)
    if SURROGATE_ESCAPE.search(body):
        check_unicode(value)
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        raise RequestValidationError(errors) from None


def check_unicode(value: Any) -> None:
    """Refuse (400) a body whose strings hold a lone surrogate (``"\\ud800"`` unpaired):
    valid JSON, but not text; the tokenizer, vLLM's encoder or a model's validation raised
    on it later, a 500 after admission (finding N5). Paired escapes (an emoji written
    ``"\\ud83d\\ude00"``) are one character once parsed and pass."""
    fields = value.items() if isinstance(value, dict) else [(None, value)]
    for name, field in fields:
        try:
            json.dumps([name, field], ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            where = "a string" if name is None else shown(name)
            raise InvalidRequest(
                f"the request holds a lone surrogate (an unpaired \\ud800-\\udfff escape) in "
                f"{where}; text must be valid Unicode",
                param=name if isinstance(name, str) and len(name) <= SHOWN_CHARS else None,
            ) from None


def prescan(value: Any, max_messages: int) -> None:
    """The caps that need no validation, before it: what validation would cost is
    proportional to what they bound."""
    if not isinstance(value, dict):
        return  # validation refuses it at once
    if len(value) > MAX_FIELDS:
        raise LimitExceeded(
            f"the request has {len(value)} fields; the server reads at most {MAX_FIELDS}",
            limit="request_fields",
        )
    for name in CONVERSATION_FIELDS:
        items = value.get(name)
        if isinstance(items, list) and len(items) > max_messages:
            raise LimitExceeded(
                f"{len(items)} messages; the server accepts at most {max_messages} "
                "(--max-messages)",
                limit="messages",
                param=name,
            )
