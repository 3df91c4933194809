"""Thin router: build the request's handler and let the serving base answer it
(``server.serving_base``: admission, cancellation, metrics, JSON or SSE)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from server.chat.serving import ChatCompletion
from server.openapi_docs import CHAT_RESPONSES
from server.protocol import ChatCompletionRequest

router = APIRouter()


@router.post("/v1/chat/completions", response_model=None, responses=CHAT_RESPONSES)
async def create_chat_completion(body: ChatCompletionRequest, raw: Request) -> Response:
    return await ChatCompletion(body).handle(raw)
