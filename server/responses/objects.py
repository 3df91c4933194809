"""The Responses API's ``response`` object, in every state a stream passes through, built
by hand as chat's ``chat.completion`` is (the ``search`` report is open-ended); the
pydantic models at the end only describe it for the OpenAPI document.

What it holds beyond OpenAI's fields: ``search``, the report of what the search spent
(as chat completions adds it). A tool-call answer is ``function_call`` items
(``function_calls``). What it cannot hold: reasoning, logprobs; those fields always say
so (``reasoning: null``, ``top_logprobs: 0``), and
``store`` is always false, since alignserve keeps nothing.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel

from search.types import Candidate, SearchResult
from server.openapi_docs import errors
from server.responses.protocol import ResponsesRequest
from server.search_service import Prepared, SearchService, finish_reason

Status = Literal["in_progress", "completed", "incomplete", "failed"]


def message_id(prepared: Prepared) -> str:
    """The output message's id, derived from the response's: the stream's events and its
    final object name the same item without any state kept between them."""
    return "msg_" + prepared.completion_id.removeprefix("resp_")


def output_text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def message_item(prepared: Prepared, text: str, status: str) -> dict[str, Any]:
    return {
        "id": message_id(prepared),
        "type": "message",
        "role": "assistant",
        "status": status,
        "content": [output_text(text)],
    }


def function_calls(prepared: Prepared, text: str) -> list[dict[str, Any]]:
    """The ``function_call`` output items of a chosen answer that is a valid tool call
    (``server.tool_calls``), after a message item with any text before the calls; none
    for a text answer."""
    tools = prepared.rules.tools if prepared.rules is not None else None
    parsed = None if tools is None else tools.parse(text)
    if parsed is None or not parsed.calls:
        return []
    said = [message_item(prepared, parsed.content, "completed")] if parsed.content else []
    return said + [
        {
            "id": "fc_" + call.id.removeprefix("call_"),
            "type": "function_call",
            "status": "completed",
            "call_id": call.id,
            "name": call.name,
            "arguments": call.arguments,
        }
        for call in parsed.calls
    ]


def usage_of(counts: dict[str, int]) -> dict[str, Any]:
    """Chat's honest usage, as the Responses API names it. Prefix-cache hits are not
    known per request here, so cached_tokens is 0."""
    return {
        "input_tokens": counts["prompt_tokens"],
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": counts["completion_tokens"],
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": counts["total_tokens"],
    }


def response_object(
    request: ResponsesRequest,
    prepared: Prepared,
    status: Status,
    *,
    output: Sequence[dict[str, Any]] = (),
    usage: dict[str, Any] | None = None,
    error: dict[str, Any] | None = None,
    incomplete_reason: str | None = None,
    report: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``response`` object in any state; the sampling fields echo what the engine
    used (a default resolved), as OpenAI echoes them."""
    sampling = prepared.context.sampling
    body: dict[str, Any] = {
        "id": prepared.completion_id,
        "object": "response",
        "created_at": prepared.created,
        "status": status,
        "background": False,
        "error": error,
        "incomplete_details": {"reason": incomplete_reason} if status == "incomplete" else None,
        "instructions": request.instructions,
        "max_output_tokens": request.max_output_tokens,
        "max_tool_calls": request.max_tool_calls,
        "metadata": request.metadata or {},
        "model": prepared.model,
        "output": list(output),
        "parallel_tool_calls": request.parallel_tool_calls is not False,
        "previous_response_id": None,
        "reasoning": None,
        "service_tier": "default",
        "store": False,
        "temperature": sampling.temperature,
        "text": {"format": (request.text or {}).get("format") or {"type": "text"}},
        "tool_choice": request.tool_choice or "auto",
        "tools": request.tools or [],
        "top_logprobs": 0,
        "top_p": sampling.top_p,
        "truncation": "disabled",
        "usage": usage,
        "user": request.user,
    }
    if status != "in_progress":
        body["completed_at"] = int(time.time())
    if report is not None:
        body["search"] = report
    return body


def answer_status(chosen: Candidate, result: SearchResult) -> tuple[Status, str | None]:
    """completed, or incomplete with its reason: max_output_tokens when the answer hit
    the token limit; none of OpenAI's reasons when a deadline or limit cut the search
    short (the ``search`` report's details say which)."""
    if finish_reason(chosen) != "length":
        return "completed", None
    if result.details.get("answer_was_partial"):
        return "incomplete", None
    return "incomplete", "max_output_tokens"


def finished_object(
    request: ResponsesRequest, service: SearchService, prepared: Prepared, result: SearchResult
) -> dict[str, Any]:
    """The ``response`` of a search that ended: the chosen answer, usage, the report."""
    chosen = service.chosen(prepared, result)[0]
    status, reason = answer_status(chosen, result)
    calls = function_calls(prepared, chosen.text)
    if calls:
        status, reason = "completed", None
    return response_object(
        request,
        prepared,
        status,
        output=calls or [message_item(prepared, chosen.text, status)],
        usage=usage_of(service.usage(prepared, [chosen])),
        incomplete_reason=reason,
        report=service.report(prepared, result),
    )


# -- the OpenAPI document ------------------------------------------------------------------
class OutputText(BaseModel):
    type: Literal["output_text"]
    text: str
    annotations: list[Any]
    logprobs: list[Any]


class OutputMessage(BaseModel):
    id: str
    type: Literal["message"]
    role: Literal["assistant"]
    status: Literal["completed", "incomplete"]
    content: list[OutputText]


class FunctionCallItem(BaseModel):
    id: str
    type: Literal["function_call"]
    status: Literal["completed"]
    call_id: str
    name: str
    arguments: str


class ResponseUsage(BaseModel):
    input_tokens: int
    input_tokens_details: dict[str, int]
    output_tokens: int
    output_tokens_details: dict[str, int]
    total_tokens: int


class IncompleteDetails(BaseModel):
    reason: Literal["max_output_tokens"] | None


class ResponseObject(BaseModel):
    id: str
    object: Literal["response"]
    created_at: int
    completed_at: int
    status: Literal["completed", "incomplete"]
    background: bool
    error: None
    incomplete_details: IncompleteDetails | None
    instructions: str | None
    max_output_tokens: int | None
    max_tool_calls: int | None
    metadata: dict[str, str]
    model: str
    output: list[OutputMessage | FunctionCallItem]
    parallel_tool_calls: bool
    previous_response_id: None
    reasoning: None
    service_tier: str
    store: bool
    temperature: float
    text: dict[str, Any]
    tool_choice: str | dict[str, Any]
    tools: list[Any]
    top_logprobs: int
    top_p: float
    truncation: str
    usage: ResponseUsage
    user: str | None
    search: dict[str, Any]


# One server-sent event: an ``event:`` line naming its type and a ``data:`` line of JSON
# (keep-alive comments carry neither).
RESPONSE_EVENT = {
    "type": "object",
    "properties": {
        "event": {"type": "string", "description": "the event's type, e.g. response.completed"},
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "description": "the event as JSON: its type, sequence_number and payload",
        },
    },
}

RESPONSES_DOCS: dict[int | str, dict[str, Any]] = {
    200: {
        "model": ResponseObject,
        "content": {"text/event-stream": {"schema": RESPONSE_EVENT}},
        "description": "a response, or with stream=true server-sent events",
    },
    **errors(400, 401, 404, 413, 429, 500, 503, 504),
}
