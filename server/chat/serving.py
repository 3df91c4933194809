"""Chat completions on the serving base (``server.serving_base``): the request is already
chat's, so converting it changes nothing; the answer is a ``chat.completion`` (or its
``chat.completion.chunk`` stream, ``server.chat.streaming``) with honest usage and the
``search`` report of what the search spent."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from search.types import SearchResult
from server.chat.streaming import sse_stream
from server.logprobs import chat_choice_content, chat_logprobs
from server.protocol import ChatCompletionRequest
from server.search_service import Prepared, SearchService, finish_reason
from server.serving_base import ServingBase
from server.settings import Settings
from server.tool_calls import chat_message


class ChatCompletion(ServingBase):
    def __init__(self, request: ChatCompletionRequest) -> None:
        self.request = request

    def convert(self, settings: Settings) -> ChatCompletionRequest:
        return self.request

    async def prepare(self, service: SearchService) -> Prepared:
        return await service.prepare(self.request)

    def respond(
        self, service: SearchService, prepared: Prepared, result: SearchResult
    ) -> dict[str, Any]:
        return chat_completion(service, prepared, result)

    def stream(
        self, service: SearchService, prepared: Prepared, on_search_end: Callable[[], None]
    ) -> AsyncIterator[str]:
        return sse_stream(service, prepared, on_search_end)


def chat_completion(
    service: SearchService, prepared: Prepared, result: SearchResult
) -> dict[str, Any]:
    chosen = service.chosen(prepared, result)
    tools = prepared.rules.tools if prepared.rules is not None else None
    messages = [chat_message(tools, c.text, finish_reason(c)) for c in chosen]
    return {
        "id": prepared.completion_id,
        "object": "chat.completion",
        "created": prepared.created,
        "model": prepared.model,
        "choices": [
            {
                "index": i,
                "message": message,
                "logprobs": None if content is None else chat_logprobs(content),
                "finish_reason": finish,
            }
            for i, ((message, finish), c) in enumerate(zip(messages, chosen, strict=True))
            for content in [chat_choice_content(prepared, c)]
        ],
        "usage": service.usage(prepared, chosen),
        "search": service.report(prepared, result),
    }
