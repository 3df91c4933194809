"""Thin router for POST /v1/responses (see ``server.responses.serving``)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from server.responses.objects import RESPONSES_DOCS
from server.responses.protocol import ResponsesRequest
from server.responses.serving import Turn

router = APIRouter()


@router.post("/v1/responses", response_model=None, responses=RESPONSES_DOCS)
async def create_response(body: ResponsesRequest, raw: Request) -> Response:
    return await Turn(body).handle(raw)
