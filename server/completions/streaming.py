"""The SSE side of completions: ``text_completion`` chunks for one prepared search.

The search's events come from ``server.search_events.search_events``, the same as
chat's (committed text while it runs, keep-alives, then its result or error); only their
format differs. Committed text goes out as it becomes final, then the rest of each chosen
answer in token-sized pieces (``token_pieces``, so a stream looks like vLLM's), a chunk
with each choice's ``finish_reason`` (the last one sent carries the ``search`` report, an
extension field), and, only when ``stream_options.include_usage``, a last chunk without
choices that carries ``usage``, as OpenAI's and vLLM's; ``data: [DONE]`` ends it. A
failed search sends chat's error event.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from search.types import SearchResult
from server.errors import sse_error
from server.logprobs import sliced, text_choice_logprobs
from server.pieces import streamed_prefix, token_spans, unsent_pieces
from server.search_events import Committed, Failed, KeepAlive, chunk, search_events
from server.search_service import Prepared, SearchService, finish_reason


async def completion_stream(
    service: SearchService, prepared: Prepared, on_search_end: Callable[[], None] = lambda: None
) -> AsyncIterator[str]:
    """The whole stream of one search (the serving base's ``stream``)."""
    async for event in search_events(service, prepared, on_search_end):
        if isinstance(event, Committed):
            if event.text:
                yield data(text_chunk(prepared, 0, event.text))
        elif isinstance(event, KeepAlive):
            yield ": keep-alive\n\n"
        elif isinstance(event, Failed):
            yield sse_error(event.error)
        else:
            for body in answer_chunks(service, prepared, event.result, event.sent):
                yield data(body)
    yield "data: [DONE]\n\n"


def data(body: dict[str, Any]) -> str:
    return f"data: {json.dumps(body)}\n\n"


def chunk_of(prepared: Prepared, choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return chunk(prepared, choices, kind="text_completion", **extra)


def text_chunk(
    prepared: Prepared,
    index: int,
    text: str,
    finish: str | None = None,
    logprobs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    choice = {"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish}
    return chunk_of(prepared, [choice])


def answer_chunks(
    service: SearchService, prepared: Prepared, result: SearchResult, sent: str = ""
) -> Iterator[dict[str, Any]]:
    """Each chosen answer after the ``sent`` text (choice 0's, streamed while the search
    ran) and its finish chunk (the last carries the report), then the usage chunk when
    asked for."""
    chosen = service.chosen(prepared, result)
    already = streamed_prefix(chosen, sent)
    tokenizer = prepared.context.tokenizer
    # The completions request's logprobs (k), as chat's request carries them.
    k = (prepared.request.top_logprobs or 0) if prepared.request.logprobs else None
    for i, cand in enumerate(chosen):
        whole = text_choice_logprobs(prepared, cand, k)
        left = None
        if whole is not None and not (i == 0 and already):
            # One chunk per token piece with its tokens' logprobs; the tokens without text
            # of their own (the end-of-sequence token) ride on the finish chunk.
            start = 0
            for piece, end in token_spans(tokenizer, cand.completion.token_ids, cand.text):
                yield text_chunk(prepared, i, piece, logprobs=sliced(whole, start, end))
                start = end
            left = sliced(whole, start, cand.completion.num_tokens)
        else:
            for rest in unsent_pieces(tokenizer, cand, already if i == 0 else 0):
                yield text_chunk(prepared, i, rest)
        finish = text_chunk(
            prepared, i, "", finish_reason(cand), left if left and left["tokens"] else None
        )
        if i == len(chosen) - 1:
            finish["search"] = service.report(prepared, result)
        yield finish
    options = prepared.request.stream_options
    if options is not None and options.include_usage:
        yield chunk_of(prepared, [], usage=service.usage(prepared, chosen))
