"""Response shapes for the OpenAPI document. The routes build their JSON by hand (the
search report is open-ended), so these models only describe it: clients, generators and
the schema-driven fuzz test read them. Every documented status is one the server returns;
FastAPI's default 422 is removed because validation errors are answered with 400."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import FastAPI
from pydantic import BaseModel


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: int


class ErrorResponse(BaseModel):
    error: ErrorDetail


class AssistantMessage(BaseModel):
    role: Literal["assistant"]
    content: str


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChoiceLogprobs(BaseModel):
    """The chosen answer's tokens as the engine scored them (server.logprobs)."""

    content: list[TokenLogprob] | None
    refusal: None = None


class Choice(BaseModel):
    index: int
    message: AssistantMessage
    # With logprobs: true; null otherwise (or for an answer the deadline cut).
    logprobs: ChoiceLogprobs | None
    finish_reason: Literal["stop", "length"]


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    search: dict[str, Any]


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": ErrorResponse} for status in statuses}


def stream_event(chunk: str) -> dict[str, Any]:
    """The schema of one server-sent event. Its data is JSON text: a ``chunk``, an error
    (a search that failed after the stream started), or the final [DONE]; keep-alive
    comments carry no data."""
    return {
        "type": "object",
        "properties": {
            "data": {
                "type": "string",
                "contentMediaType": "application/json",
                "description": f"{chunk} JSON, error JSON, or [DONE]",
            }
        },
    }


STREAM_EVENT = stream_event("chat.completion.chunk")

CHAT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "model": ChatCompletion,
        "content": {"text/event-stream": {"schema": STREAM_EVENT}},
        "description": "a chat.completion, or with stream=true server-sent events",
    },
    **errors(400, 401, 404, 413, 429, 500, 503, 504),
}
API_ERRORS = errors(401, 413, 500)
OPS_ERRORS = errors(401, 503)


def without_default_422(app: FastAPI) -> None:
    """Serve the OpenAPI document without FastAPI's 422 responses."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = FastAPI.openapi(app)
            for path in schema["paths"].values():
                for operation in path.values():
                    operation.get("responses", {}).pop("422", None)
            for name in ("HTTPValidationError", "ValidationError"):
                schema.get("components", {}).get("schemas", {}).pop(name, None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
