"""POST /v1/responses: the OpenAI Responses API on the serving base (``server.serving_base``).

The request converts into chat's (``ResponsesRequest.to_chat``) and runs through
``ServingBase.handle``, so admission, cancellation on disconnect, deadlines, limits and
metrics are chat's own; only the answer's shape differs (``objects``, ``streaming``).
The ``search`` extension object is chat's, and the response carries the same ``search``
report.

Deliberate differences from OpenAI's Responses API:

- Nothing is stored. Every response says ``store: false`` (``store: true`` is accepted
  and changes nothing), ``previous_response_id`` and ``conversation`` are 400s, and there
  is no GET, DELETE or cancel route for a response id.
- One output: a single assistant ``message`` with one ``output_text`` part, or, for a
  tool-call answer, ``function_call`` items (after a message with any text before the
  calls). Function tools, ``tool_choice`` and ``text.format`` (``json_object``,
  ``json_schema``) and vLLM's ``structured_outputs`` work as chat's (``server.structured``,
  ``server.tool_calls``). No other
  tools, no reasoning, no ``include``, no ``top_logprobs``, no ``background``, no ``prompt``
  templates, no ``truncation: "auto"``, no ``service_tier`` but auto/default: sent with
  another value, each is a 400 naming it. Chat-completions fields sent here by mistake
  (``max_tokens``, ``messages``, ``stop``, ``seed``, ``n``, ...) are 400s saying what the
  Responses API uses instead; other unknown fields are ignored with a log line, as chat's.
- Input: a string, or message items (``type`` "message" or omitted) with roles user,
  system, developer or assistant, whose content is a string or ``input_text`` /
  ``output_text`` parts (either kind in any role), and ``function_call`` /
  ``function_call_output`` items. Images, files, audio and item references are 400s
  naming the item; an empty input is a 400. ``instructions`` becomes a leading system
  message.
- ``max_output_tokens`` may be below OpenAI's minimum of 16. vLLM's ``top_k``,
  ``presence_penalty`` and ``frequency_penalty`` are accepted, as chat's.
- ``temperature`` and ``top_p`` echo the values the engine used (1.0 when not sent).
- ``usage.input_tokens_details.cached_tokens`` is always 0 (prefix-cache hits are not
  known per request); ``output_tokens`` counts the chosen answer, not every candidate (the
  report's ``generated_tokens`` does).
- ``incomplete``: ``reason: "max_output_tokens"`` when the chosen answer hit the limit;
  when a deadline or search limit cut the search short (``search.details`` says which) the
  reason is null, as OpenAI has no reason for that.
- Streams: no ``obfuscation`` field on deltas (``stream_options.include_obfuscation`` is
  accepted and changes nothing); deltas carry ``logprobs: []``; keep-alive SSE comments
  while the search runs. A failed search ends with ``response.failed`` whose ``error.code``
  is ``server_error`` (5xx), ``rate_limit_exceeded`` (429, the queue filled after the
  stream began) or ``invalid_prompt`` (a search limit, 400), with alignserve's error type
  and param beside it. Errors before the stream starts are plain JSON errors, as chat's.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from typing import Any

from search.errors import InvalidRequest
from search.types import SearchResult
from server.protocol import ChatCompletionRequest
from server.responses.objects import finished_object
from server.responses.protocol import PARAMS, ResponsesRequest
from server.responses.streaming import response_stream
from server.search_service import Prepared, SearchService, log_unknown_fields
from server.serving_base import ServingBase
from server.settings import Settings


class Turn(ServingBase):
    """One Responses request on chat's path: it keeps what the answer echoes (the
    request)."""

    def __init__(self, request: ResponsesRequest) -> None:
        self.request = request

    def convert(self, settings: Settings) -> ChatCompletionRequest:
        self.chat = self.request.to_chat(settings.max_messages)
        return self.chat

    async def prepare(self, service: SearchService) -> Prepared:
        log_unknown_fields(self.request.unknown_fields())
        self.request.reject_unsupported()
        try:
            prepared = await service.prepare(self.chat, id_prefix="resp_")
        except InvalidRequest as exc:
            raise renamed(exc) from None
        return prepared

    def respond(
        self, service: SearchService, prepared: Prepared, result: SearchResult
    ) -> dict[str, Any]:
        return finished_object(self.request, service, prepared, result)

    def stream(
        self, service: SearchService, prepared: Prepared, on_search_end: Callable[[], None]
    ) -> AsyncIterator[str]:
        return response_stream(self.request, service, prepared, on_search_end)


def renamed(exc: InvalidRequest) -> InvalidRequest:
    """Chat's error, naming the field as this request has it (max_output_tokens for
    max_tokens, input for messages)."""
    exc.param = PARAMS.get(exc.param or "", exc.param)
    exc.message = re.sub(r"\bmax_tokens\b", "max_output_tokens", exc.message)
    exc.message = re.sub(r"\bresponse_format(\.json_schema)?\b", "text.format", exc.message)
    return exc
