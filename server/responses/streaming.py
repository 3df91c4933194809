"""The SSE side of the Responses API: a streamed search (``server.search_events``)
as OpenAI's typed events, each an ``event: <type>`` line and a ``data:`` line carrying the
same ``type`` and a ``sequence_number`` that counts from 0:

    response.created, response.in_progress         at once, before the search runs
    response.output_item.added                     the assistant message, at its first text
    response.content_part.added                    its output_text part
    response.output_text.delta ...                 committed text while the search runs,
                                                   then the rest of the answer per token
    response.output_text.done, response.content_part.done, response.output_item.done
    response.completed | response.incomplete       the whole response: usage, search report

Keep-alive comments fill silences. A search that fails ends with ``response.failed``, whose
response carries the error (and the message so far, if any text was sent). There is no
``data: [DONE]``: OpenAI's Responses streams end with their terminal event.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from search.errors import AlignserveError
from search.types import SearchResult
from server.pieces import streamed_prefix, unsent_pieces
from server.responses.objects import (
    finished_object,
    message_id,
    message_item,
    output_text,
    response_object,
)
from server.responses.protocol import ResponsesRequest
from server.search_events import Committed, Failed, KeepAlive, search_events
from server.search_service import Prepared, SearchService

KEEP_ALIVE = ": keep-alive\n\n"


def error_object(exc: AlignserveError) -> dict[str, Any]:
    """A failed response's ``error``. Its ``code`` is one of the API's (the SDK types list
    them); ``type`` and ``param`` keep alignserve's own account."""
    if exc.status_code == 429:
        code = "rate_limit_exceeded"
    elif exc.status_code < 500:
        code = "invalid_prompt"
    else:
        code = "server_error"
    return {"code": code, "message": exc.message, "type": exc.error_type, "param": exc.param}


class EventWriter:
    """One stream's events, numbered in the order they are sent."""

    def __init__(self, request: ResponsesRequest, prepared: Prepared) -> None:
        self.request = request
        self.prepared = prepared
        self.sequence = 0
        self.item_id = message_id(prepared)

    def event(self, kind: str, **fields: Any) -> str:
        data = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return f"event: {kind}\ndata: {json.dumps(data)}\n\n"

    def lifecycle(self, kind: str, response: dict[str, Any]) -> str:
        return self.event(kind, response=response)

    def opening(self) -> Iterator[str]:
        response = response_object(self.request, self.prepared, "in_progress")
        yield self.lifecycle("response.created", response)
        yield self.lifecycle("response.in_progress", response)

    def message_added(self) -> Iterator[str]:
        item = message_item(self.prepared, "", "in_progress")
        item["content"] = []
        yield self.event("response.output_item.added", output_index=0, item=item)
        yield self.event("response.content_part.added", **self.part(""))

    def part(self, text: str) -> dict[str, Any]:
        return {
            "item_id": self.item_id,
            "output_index": 0,
            "content_index": 0,
            "part": output_text(text),
        }

    def delta(self, text: str) -> str:
        return self.event(
            "response.output_text.delta",
            item_id=self.item_id,
            output_index=0,
            content_index=0,
            delta=text,
            logprobs=[],
        )

    def message_done(self, item: dict[str, Any]) -> Iterator[str]:
        text = item["content"][0]["text"]
        yield self.event(
            "response.output_text.done",
            item_id=self.item_id,
            output_index=0,
            content_index=0,
            text=text,
            logprobs=[],
        )
        yield self.event("response.content_part.done", **self.part(text))
        yield self.event("response.output_item.done", output_index=0, item=item)

    def items_whole(self, items: list[dict[str, Any]]) -> Iterator[str]:
        """A tool-call answer's output items (a message with the text before the calls,
        then each ``function_call``), each sent whole: its arguments in one delta."""
        for index, item in enumerate(items):
            if item["type"] == "message":
                text = item["content"][0]["text"]
                added = {**item, "status": "in_progress", "content": []}
                yield self.event("response.output_item.added", output_index=index, item=added)
                part = {**self.part(""), "output_index": index}
                yield self.event("response.content_part.added", **part)
                yield self.event(
                    "response.output_text.delta",
                    item_id=item["id"],
                    output_index=index,
                    content_index=0,
                    delta=text,
                    logprobs=[],
                )
                yield self.event(
                    "response.output_text.done",
                    item_id=item["id"],
                    output_index=index,
                    content_index=0,
                    text=text,
                    logprobs=[],
                )
                done = {**self.part(text), "output_index": index}
                yield self.event("response.content_part.done", **done)
            else:
                added = {**item, "status": "in_progress", "arguments": ""}
                yield self.event("response.output_item.added", output_index=index, item=added)
                at = {"item_id": item["id"], "output_index": index}
                yield self.event(
                    "response.function_call_arguments.delta", **at, delta=item["arguments"]
                )
                yield self.event(
                    "response.function_call_arguments.done",
                    **at,
                    name=item["name"],
                    arguments=item["arguments"],
                )
            yield self.event("response.output_item.done", output_index=index, item=item)

    def failed(self, exc: AlignserveError, sent: str | None) -> str:
        """``sent``: the text streamed before the failure, None when no message began."""
        output = [] if sent is None else [message_item(self.prepared, sent, "incomplete")]
        response = response_object(
            self.request, self.prepared, "failed", output=output, error=error_object(exc)
        )
        return self.lifecycle("response.failed", response)


async def response_stream(
    request: ResponsesRequest,
    service: SearchService,
    prepared: Prepared,
    on_search_end: Callable[[], None] = lambda: None,
) -> AsyncIterator[str]:
    """The events of one streamed response (see the module docstring)."""
    writer = EventWriter(request, prepared)
    for line in writer.opening():
        yield line
    sent: str | None = None  # None until the message item is added
    async for event in search_events(service, prepared, on_search_end):
        if isinstance(event, KeepAlive):
            yield KEEP_ALIVE
        elif isinstance(event, Failed):
            yield writer.failed(event.error, sent)
        elif isinstance(event, Committed):
            if sent is None:
                sent = ""
                for line in writer.message_added():
                    yield line
            if event.text:
                yield writer.delta(event.text)
                sent += event.text
        else:
            final = finished_object(request, service, prepared, event.result)
            if sent is None and any(i["type"] == "function_call" for i in final["output"]):
                for line in writer.items_whole(final["output"]):
                    yield line
                yield writer.lifecycle("response.completed", final)
                continue
            if sent is None:
                sent = ""
                for line in writer.message_added():
                    yield line
            item = final["output"][0]
            for piece in rest_pieces(prepared, service, event.result, sent):
                yield writer.delta(piece)
            for line in writer.message_done(item):
                yield line
            terminal = "response.incomplete" if final["status"] == "incomplete" else None
            yield writer.lifecycle(terminal or "response.completed", final)


def rest_pieces(
    prepared: Prepared, service: SearchService, result: SearchResult, sent: str
) -> Iterator[str]:
    """The chosen answer after the ``sent`` text, in token-sized pieces (as chat's
    ``answer_chunks`` sends it)."""
    chosen = service.chosen(prepared, result)
    already = streamed_prefix(chosen, sent)
    return unsent_pieces(prepared.context.tokenizer, chosen[0], already)
