"""Thin router for POST /v1/responses (see ``server.responses.serving``)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from server.body_parse import parsed_body
from server.responses.objects import RESPONSES_DOCS
from server.responses.protocol import ResponsesRequest
from server.responses.serving import Turn

router = APIRouter()


@router.post("/v1/responses", include_in_schema=False)
async def create_response(raw: Request) -> Response:
    # Parsed and validated off the event loop, count caps first (server.body_parse).
    body = await parsed_body(raw, ResponsesRequest)
    return await Turn(body).handle(raw)


@router.post("/v1/responses", response_model=None, responses=RESPONSES_DOCS)
async def create_response_documented(body: ResponsesRequest) -> Response:
    """The OpenAPI entry only: the route above, registered first, serves every request."""
    raise NotImplementedError
