"""The SSE side of chat completions: ``chat.completion.chunk`` events for a prepared
search (see ``server.chat.serving``): committed text while the search runs, keep-alive
comments, then the rest of the answer in token-sized chunks and the search report."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from search.errors import AlignserveError
from search.types import SearchResult
from server.chat.pieces import streamed_prefix, unsent_pieces
from server.chat.serving import ChatService, Prepared, finish_reason, internal_error
from server.errors import sse_error


@dataclass(frozen=True)
class Committed:
    """Text the search has committed to since the last event (final: it stays)."""

    text: str


@dataclass(frozen=True)
class KeepAlive:
    """Nothing new for ``keepalive_s``: send something so proxies keep the stream."""


@dataclass(frozen=True)
class Failed:
    """The search failed; the stream's status becomes the error's."""

    error: AlignserveError


@dataclass(frozen=True)
class Finished:
    """The search's result; ``sent``: the committed text already streamed."""

    result: SearchResult
    sent: str


SearchEvent = Committed | KeepAlive | Failed | Finished


async def search_events(
    service: ChatService, prepared: Prepared, on_search_end: Callable[[], None] = lambda: None
) -> AsyncIterator[SearchEvent]:
    """What a streamed search does, whatever API formats it: while it runs, the text it
    has committed to (searches that narrow to one lineage say so, see
    ``SearchContext.commit_common_prefix``) as it becomes final, and keep-alives; then
    its result or its error. If the client leaves, the generator is closed and the
    search cancelled.

    ``on_search_end`` runs as soon as the search ends (its admission slot goes back
    then, not when a slow client has read the last byte). Only the latest committed
    text is kept: a client that reads slowly skips intermediate commits, it never
    makes the server queue a copy of the prefix per round."""
    committed = asyncio.Event()
    # With several choices there is no single answer to commit to.
    if prepared.request.n == 1 and prepared.serving.stream_committed:
        prepared.context.on_commit = lambda _: committed.set()
    search = asyncio.ensure_future(service.run(prepared))
    search.add_done_callback(lambda _: on_search_end())
    sent = ""
    commit: asyncio.Future[Literal[True]] | None = None
    try:
        while not search.done():
            commit = asyncio.ensure_future(committed.wait())
            done, _ = await asyncio.wait(
                {search, commit},
                timeout=service.settings.keepalive_s,
                return_when=asyncio.FIRST_COMPLETED,
            )
            if commit in done:
                committed.clear()
                text = prepared.context.committed
                yield Committed(text[len(sent) :])
                sent = text
            else:
                commit.cancel()
                if not done:
                    yield KeepAlive()
        try:
            result = search.result()
        except Exception as exc:
            error = exc if isinstance(exc, AlignserveError) else internal_error(exc)
            prepared.stream_error_status = error.status_code
            yield Failed(error)
            return
        yield Finished(result, sent)
    finally:
        if commit is not None:
            commit.cancel()  # the client left while waiting: no pending getter
        if not search.done():
            search.cancel()
            await asyncio.gather(search, return_exceptions=True)


async def sse_stream(
    service: ChatService, prepared: Prepared, on_search_end: Callable[[], None] = lambda: None
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


def chunk(
    prepared: Prepared,
    choices: list[dict[str, Any]],
    *,
    kind: str = "chat.completion.chunk",
    **extra: Any,
) -> dict[str, Any]:
    """One stream chunk's envelope; ``kind``: its ``object`` (completions: text_completion)."""
    return {
        "id": prepared.completion_id,
        "object": kind,
        "created": prepared.created,
        "model": prepared.model,
        "choices": choices,
        **extra,
    }


def text_chunks(
    prepared: Prepared, text: str, *, first: bool, index: int = 0
) -> Iterator[dict[str, Any]]:
    """The role chunk (when ``first``) and then ``text`` as one content delta."""

    def delta(content: dict[str, str]) -> dict[str, Any]:
        choice = {"index": index, "delta": content, "logprobs": None, "finish_reason": None}
        return chunk(prepared, [choice])

    if first:
        yield delta({"role": "assistant", "content": ""})
    if text:
        yield delta({"content": text})


def answer_chunks(
    service: ChatService, prepared: Prepared, result: SearchResult, sent: str = ""
) -> Iterator[dict[str, Any]]:
    """The answer after the ``sent`` text that was streamed while the search ran."""
    chosen = service.chosen(prepared, result)
    already = streamed_prefix(chosen, sent)
    for i, cand in enumerate(chosen):
        yield from text_chunks(prepared, "", first=not (i == 0 and sent), index=i)
        for rest in unsent_pieces(prepared.context.tokenizer, cand, already if i == 0 else 0):
            yield from text_chunks(prepared, rest, first=False, index=i)
        choice = {"index": i, "delta": {}, "logprobs": None}
        yield chunk(prepared, [{**choice, "finish_reason": finish_reason(cand)}])
    report: dict[str, Any] = {"search": service.report(prepared, result)}
    options = prepared.request.stream_options
    if options is not None and options.include_usage:
        yield chunk(prepared, [], usage=service.usage(prepared, chosen), **report)
    else:
        yield chunk(prepared, [], **report)
