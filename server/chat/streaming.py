"""The SSE side of chat completions: ``chat.completion.chunk`` events for a prepared
search (see ``server.search_events``): committed text while the search runs, keep-alive
comments, then the rest of the answer in token-sized chunks, each choice's finish chunk
(the last one carries the ``search`` report as an extension field), and, only with
``stream_options.include_usage``, OpenAI's usage chunk with ``choices: []``."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from search.types import SearchResult
from server.errors import sse_error
from server.logprobs import chat_choice_content, chat_logprobs
from server.pieces import streamed_prefix, token_spans, unsent_pieces
from server.search_events import Committed, Failed, KeepAlive, chunk, search_events
from server.search_service import Prepared, SearchService, finish_reason
from server.tool_calls import chat_message


async def sse_stream(
    service: SearchService, prepared: Prepared, on_search_end: Callable[[], None] = lambda: None
) -> AsyncIterator[str]:
    """Chat completions' SSE: ``chat.completion.chunk`` events for the committed text
    while the search runs, keep-alive comments, then the rest of the answer in
    token-sized chunks and the report; ``data: [DONE]`` ends it."""
    sent = ""
    async for event in search_events(service, prepared, on_search_end):
        if isinstance(event, Committed):
            for chunk_ in text_chunks(prepared, event.text, first=not sent):
                yield f"data: {json.dumps(chunk_)}\n\n"
            sent += event.text
        elif isinstance(event, KeepAlive):
            yield ": keep-alive\n\n"
        elif isinstance(event, Failed):
            yield sse_error(event.error)
        else:
            for chunk_ in answer_chunks(service, prepared, event.result, event.sent):
                yield f"data: {json.dumps(chunk_)}\n\n"
    yield "data: [DONE]\n\n"


def text_chunks(
    prepared: Prepared,
    text: str,
    *,
    first: bool,
    index: int = 0,
    logprobs: list[dict[str, Any]] | None = None,
) -> Iterator[dict[str, Any]]:
    """The role chunk (when ``first``) and then ``text`` as one content delta, with the
    ``logprobs`` content entries of its tokens."""

    def delta(content: dict[str, str], lp: list[dict[str, Any]] | None) -> dict[str, Any]:
        choice = {
            "index": index,
            "delta": content,
            "logprobs": None if lp is None else chat_logprobs(lp),
            "finish_reason": None,
        }
        return chunk(prepared, [choice])

    if first:
        yield delta({"role": "assistant", "content": ""}, None)
    if text:
        yield delta({"content": text}, logprobs)


def answer_chunks(
    service: SearchService, prepared: Prepared, result: SearchResult, sent: str = ""
) -> Iterator[dict[str, Any]]:
    """The answer after the ``sent`` text that was streamed while the search ran."""
    chosen = service.chosen(prepared, result)
    already = streamed_prefix(chosen, sent)
    tools = prepared.rules.tools if prepared.rules is not None else None
    tokenizer = prepared.context.tokenizer
    for i, cand in enumerate(chosen):
        yield from text_chunks(prepared, "", first=not (i == 0 and sent), index=i)
        message, finish = chat_message(tools, cand.text, finish_reason(cand))
        content = chat_choice_content(prepared, cand)
        left: list[dict[str, Any]] | None = None
        if "tool_calls" in message:
            yield from tool_call_chunks(prepared, message, i)
        elif content is not None and not (i == 0 and already):
            # One chunk per token piece, with its tokens' entries; the tokens without
            # text of their own (the end-of-sequence token) ride on the finish chunk.
            start = 0
            for piece, end in token_spans(tokenizer, cand.completion.token_ids, cand.text):
                yield from text_chunks(
                    prepared, piece, first=False, index=i, logprobs=content[start:end]
                )
                start = end
            left = content[start:]
        else:
            for rest in unsent_pieces(tokenizer, cand, already if i == 0 else 0):
                yield from text_chunks(prepared, rest, first=False, index=i)
        choice = {
            "index": i,
            "delta": {},
            "logprobs": chat_logprobs(left) if left else None,
            "finish_reason": finish,
        }
        # The search report rides on the last choice's finish chunk (an extension field):
        # OpenAI's loop ``chunk.choices[0]`` never meets a chunk without choices.
        last = i == len(chosen) - 1
        extra: dict[str, Any] = {"search": service.report(prepared, result)} if last else {}
        yield chunk(prepared, [choice], **extra)
    options = prepared.request.stream_options
    if options is not None and options.include_usage:
        # As OpenAI's: the usage chunk, last, with no choices, only when asked for.
        yield chunk(prepared, [], usage=service.usage(prepared, chosen))


def tool_call_chunks(
    prepared: Prepared, message: dict[str, Any], index: int
) -> Iterator[dict[str, Any]]:
    """A tool-call answer's deltas: its text before the calls, then every call whole
    (id, name and all its arguments in one delta, as vLLM sends a parsed call)."""
    yield from text_chunks(prepared, message["content"] or "", first=False, index=index)
    calls = [{"index": j, **call} for j, call in enumerate(message["tool_calls"])]
    choice = {
        "index": index,
        "delta": {"tool_calls": calls},
        "logprobs": None,
        "finish_reason": None,
    }
    yield chunk(prepared, [choice])
