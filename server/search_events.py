"""What a streamed search does, whatever API formats it (``search_events``), and the
envelope of a stream chunk (``chunk``). Each API turns the events into its own SSE:
``server.chat.streaming``, ``server.completions.streaming``, ``server.responses.streaming``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Literal

from search.errors import AlignserveError
from search.types import SearchResult
from server.search_service import Prepared, SearchService, internal_error


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
    service: SearchService, prepared: Prepared, on_search_end: Callable[[], None] = lambda: None
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
    # With several choices there is no single answer to commit to; a tool call is sent
    # whole, as parsed at the end (server.tool_calls); with logprobs, text goes out with
    # its tokens' logprobs, which only the chosen answer has.
    request = prepared.request
    tools = prepared.rules is not None and prepared.rules.tools is not None
    if request.n == 1 and prepared.serving.stream_committed and not tools and not request.logprobs:
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
        await service.recorded(prepared)  # the slot is back already (on_search_end)
        yield Finished(result, sent)
    finally:
        if commit is not None:
            commit.cancel()  # the client left while waiting: no pending getter
        if not search.done():
            search.cancel()
            await asyncio.gather(search, return_exceptions=True)


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
