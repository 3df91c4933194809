"""Thin router: build the request's handler and let the serving base answer it
(``server.serving_base``: admission, cancellation, metrics, JSON or SSE)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from server.body_parse import parsed_body
from server.chat.serving import ChatCompletion
from server.openapi_docs import CHAT_RESPONSES
from server.protocol import ChatCompletionRequest

router = APIRouter()


@router.post("/v1/chat/completions", include_in_schema=False)
async def create_chat_completion(raw: Request) -> Response:
    # Parsed and validated off the event loop, count caps first (server.body_parse).
    body = await parsed_body(raw, ChatCompletionRequest)
    return await ChatCompletion(body).handle(raw)


@router.post("/v1/chat/completions", response_model=None, responses=CHAT_RESPONSES)
async def create_chat_completion_documented(body: ChatCompletionRequest) -> Response:
    """The OpenAPI entry only: the route above, registered first, serves every request."""
    raise NotImplementedError
