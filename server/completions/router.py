"""Thin router for POST /v1/completions (see ``server.completions.serving``)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from server.completions.protocol import COMPLETION_RESPONSES, CompletionRequest
from server.completions.serving import Completion

router = APIRouter()


@router.post("/v1/completions", response_model=None, responses=COMPLETION_RESPONSES)
async def create_completion(body: CompletionRequest, raw: Request) -> Response:
    return await Completion(body).handle(raw)
