"""Thin router: fetch the service from app state, run it, wrap the result, count it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from search.errors import (
    AlignserveError,
    EngineUnavailable,
    LimitExceeded,
    Overloaded,
    ShuttingDown,
)
from search.registry import STRATEGIES
from search.types import SearchResult
from server import request_id
from server.admission import Admission
from server.chat.serving import ChatService, Prepared
from server.chat.streaming import sse_stream
from server.errors import sse_error
from server.logs import log_request
from server.metrics import ServerMetrics
from server.openapi_docs import CHAT_RESPONSES
from server.protocol import ChatCompletionRequest
from server.settings import Settings
from server.tracing import RequestSpan, Tracing

router = APIRouter()
T = TypeVar("T")


class ClientDisconnected(Exception):
    pass


async def cancel_on_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Run ``work`` unless the client goes away first; then cancel it, which aborts the
    engine requests it started."""
    task = asyncio.ensure_future(work)

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    if task.cancelled():
        raise ClientDisconnected
    return task.result()


def metric_label(algorithm: object, settings: Settings) -> str:
    """Only known names become label values: clients must not mint new series."""
    if algorithm is None:
        return settings.default_algorithm
    return algorithm if isinstance(algorithm, str) and algorithm in STRATEGIES else "unknown"


def chat_service(request: Request) -> ChatService:
    service: ChatService | None = request.app.state.chat_service
    if service is None:
        raise EngineUnavailable("the model is still loading; retry when /ready says ok")
    return service


@router.post("/v1/chat/completions", response_model=None, responses=CHAT_RESPONSES)
async def create_chat_completion(body: ChatCompletionRequest, raw: Request) -> Response:
    return await answer_search(
        raw,
        body,
        prepare=lambda service: service.prepare(body),
        respond=lambda service, prepared, result: service.response(prepared, result),
        stream=sse_stream,
        refusal=chat_refusal,
    )


# The SSE events of one prepared search; ``on_search_end`` gives its admission slot back.
StreamEvents = Callable[[ChatService, Prepared, Callable[[], None]], AsyncIterator[str]]


async def answer_search(
    raw: Request,
    body: ChatCompletionRequest,
    *,
    prepare: Callable[[ChatService], Awaitable[Prepared]],
    respond: Callable[[ChatService, Prepared, SearchResult], dict[str, Any]],
    stream: StreamEvents,
    refusal: Callable[[AlignserveError], list[str]],
    run: Callable[[ChatService, Prepared], Awaitable[SearchResult]] = ChatService.run,
) -> Response:
    """One search request, whichever API it came in through (chat completions,
    responses, completions): refused early when the server is full, prepared, run under
    an admission slot and cancelled when the client leaves, answered as JSON
    (``respond``) or SSE (``stream``; ``refusal``: the events of a stream whose search
    is refused after its headers went out), and counted in the metrics. ``body`` is the
    request as chat completions has it (the other APIs convert theirs). Each ends with
    one request log line and, when tracing is on, one server span (``Observed``).
    ``run``: what runs the prepared search (completions runs several prompts' at once)."""
    metrics: ServerMetrics = raw.app.state.metrics
    algorithm = metric_label((body.search or {}).get("algorithm"), raw.app.state.settings)
    start = time.perf_counter()
    status = 500
    admission: Admission = raw.app.state.admission
    observed = Observed.start_for(raw, stream=bool(body.stream), start=start)
    try:
        service = chat_service(raw)
        # Refuse before paying for rendering and tokenization (a retry elsewhere is cheap).
        admission.check(stream=body.stream)
        prepared = await prepare(service)
        algorithm = prepared.algorithm
        observed.on_prepared(prepared)
        if body.stream:
            admission.check(stream=True)
            status = 200
            return StreamingResponse(
                counted_stream(
                    service, prepared, stream, refusal, metrics, start, admission, observed
                ),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache"},
            )
        release = await cancel_on_disconnect(raw, admission.enter())
        try:
            result = await cancel_on_disconnect(raw, run(service, prepared))
        finally:
            release()
        observed.result = result
        response = JSONResponse(respond(service, prepared, result))
        status = 200  # after rendering: a body that fails to render is counted as the 500 it is
        return response
    except AlignserveError as exc:
        status = exc.status_code
        observed.error = exc
        if isinstance(exc, LimitExceeded):
            metrics.limit_rejections.labels(exc.limit).inc()
        raise
    except ClientDisconnected:
        metrics.cancellations.inc()
        status = 499  # nginx's "client closed request": nobody reads this response
        return Response(status_code=499)
    except Exception as exc:
        observed.error = exc
        raise
    finally:
        if not (body.stream and status == 200):
            metrics.record_request(algorithm, status, time.perf_counter() - start)
            observed.finish(algorithm, status)


def chat_refusal(exc: AlignserveError) -> list[str]:
    """A chat stream's error event and its end, for a search refused after the headers."""
    return [sse_error(exc), "data: [DONE]\n\n"]


async def counted_stream(
    service: ChatService,
    prepared: Prepared,
    stream: StreamEvents,
    refusal: Callable[[AlignserveError], list[str]],
    metrics: ServerMetrics,
    start: float,
    admission: Admission,
    observed: Observed | None = None,
) -> AsyncIterator[str]:
    status = 499  # unless the stream runs to its end, the client left
    release = None
    admission.open_streams += 1
    try:
        release = await admission.enter()
        async for event in stream(service, prepared, release):
            yield event
        status = prepared.stream_error_status or 200
    except (Overloaded, ShuttingDown) as exc:  # the queue filled, or draining began, since check
        status = exc.status_code
        if observed is not None:
            observed.error = exc
        for event in refusal(exc):
            yield event
    finally:
        admission.open_streams -= 1
        if release is not None:
            release()
        if status == 499:
            metrics.cancellations.inc()
        metrics.record_request(prepared.algorithm, status, time.perf_counter() - start)
        if observed is not None:
            observed.finish(prepared.algorithm, status)


@dataclass
class Observed:
    """What one search request reports when it ends: its log line (``server.logs``) and,
    when tracing is on, its span (``server.tracing``; the search's phases become child
    spans through ``Budget.on_phase``). Ids, counts and times only, never text."""

    route: str
    stream: bool
    start: float
    span: RequestSpan | None
    prepared: Prepared | None = None
    result: SearchResult | None = None
    error: BaseException | None = None

    @classmethod
    def start_for(cls, raw: Request, *, stream: bool, start: float) -> Observed:
        route = raw.url.path
        tracing: Tracing = raw.app.state.tracing
        span = tracing.start(f"{raw.method} {route}", raw.headers)
        if span is not None:
            span.set(
                {
                    "http.request.method": raw.method,
                    "http.route": route,
                    "alignserve.request_id": request_id.current.get(),
                    "alignserve.stream": stream,
                }
            )
        return cls(route, stream, start, span)

    def on_prepared(self, prepared: Prepared) -> None:
        self.prepared = prepared
        if self.span is not None:
            prepared.context.budget.on_phase = self.span.phase
            self.span.set(
                {
                    "alignserve.algorithm": prepared.algorithm,
                    "alignserve.n": getattr(prepared.strategy, "n", None),
                    "gen_ai.usage.input_tokens": len(prepared.context.prompt_ids),
                }
            )

    def finish(self, algorithm: str, status: int) -> None:
        """The request's line and the end of its span."""
        prepared = self.prepared
        fields: dict[str, Any] = {
            "route": self.route,
            "status": status,
            "algorithm": algorithm,
            "stream": self.stream,
        }
        outcome: dict[str, Any] = {}
        if prepared is not None:
            budget = prepared.context.budget
            fields["prompt_tokens"] = len(prepared.context.prompt_ids)
            outcome.update(
                generated_tokens=budget.generated_tokens,
                engine_calls=budget.engine_calls,
                reward_calls=budget.reward_calls,
            )
        # A stream's result: the service keeps it on the Prepared.
        result = self.result or (prepared.result if prepared is not None else None)
        if result is not None:
            # No chosen reward when the reward model was never called (mbr, majority).
            if result.budget.reward_calls:
                outcome["chosen_reward"] = result.best.reward
            outcome["deadline_hit"] = bool(result.details.get("deadline_hit"))
            outcome["budget_hit"] = bool(result.details.get("budget_hit"))
        fields.update(outcome)
        fields["latency_s"] = round(time.perf_counter() - self.start, 6)
        if prepared is not None:
            fields["response_id"] = prepared.completion_id
        if self.span is not None:
            fields["trace_id"] = format(self.span.span.get_span_context().trace_id, "032x")
            self.span.set({"alignserve.algorithm": algorithm})
            self.span.set({f"alignserve.{k}": v for k, v in outcome.items()})
            self.span.end(status, self.error)
        log_request(fields)
