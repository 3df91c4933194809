"""Thin router for POST /v1/completions (see ``server.completions.serving``)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from server.body_parse import parsed_body
from server.completions.protocol import COMPLETION_RESPONSES, CompletionRequest
from server.completions.serving import Completion

router = APIRouter()


@router.post("/v1/completions", include_in_schema=False)
async def create_completion(raw: Request) -> Response:
    # Parsed and validated off the event loop, count caps first (server.body_parse).
    body = await parsed_body(raw, CompletionRequest)
    return await Completion(body).handle(raw)


@router.post("/v1/completions", response_model=None, responses=COMPLETION_RESPONSES)
async def create_completion_documented(body: CompletionRequest) -> Response:
    """The OpenAPI entry only: the route above, registered first, serves every request."""
    raise NotImplementedError
