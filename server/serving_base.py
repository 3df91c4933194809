"""The serving base of the search APIs (chat completions, completions, responses), as a
template method: ``ServingBase.handle`` answers one request in these steps, and each API
fills in the ones that differ (``server.chat.serving``, ``server.completions.serving``,
``server.responses.serving``):

    validate  ``convert``: the API's body, checked on its own, becomes chat's request (the
              form the search reads; chat's is itself); refused here, a request is not
              counted as a search
    prepare   ``prepare``: validated against the server and converted into a search ready
              to run (``SearchService.prepare``: strategy, sampling, prompt token ids)
    run       ``run`` (default ``SearchService.run``) under an admission slot, cancelled
              (aborting its engine requests) when the client disconnects
    respond   ``respond``: the JSON answer; or, for ``stream: true``, ``stream``: its SSE
              events, sent once the search has its admission slot

Around the steps, the base refuses early when the server is full (``Admission.check``,
before paying for rendering and tokenization), counts every request whose search was
prepared in the metrics by API and algorithm (a stream when it ends; the requests refused
before are counted by ``server.request_metrics``, under no algorithm), and ends each with
one request log line and, when tracing is on, one server span (``server.observed``). A
router only builds the API's handler for the request and calls ``handle``.
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from search.errors import (
    AlignserveError,
    EngineUnavailable,
    LimitExceeded,
    ShuttingDown,
)
from search.registry import STRATEGIES
from search.types import SearchResult
from server.admission import Admission
from server.metrics import ServerMetrics
from server.observed import Observed
from server.protocol import ChatCompletionRequest
from server.request_metrics import API_ROUTES, mark_counted
from server.search_service import Prepared, SearchService
from server.settings import Settings

T = TypeVar("T")


class ClientDisconnected(Exception):
    pass


async def cancel_on_disconnect(
    request: Request, work: Awaitable[T], admission: Admission | None = None
) -> T:
    """Run ``work`` unless the client goes away first, or the shutdown grace ends
    (``admission.cut``); then cancel it, which aborts the engine requests it started: a
    gone client gets nothing, a cut one 503 ShuttingDown with Retry-After."""
    task = asyncio.ensure_future(work)
    cut_event = admission.cut if admission is not None else asyncio.Event()

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(disconnected())
    cut = asyncio.ensure_future(cut_event.wait())
    try:
        await asyncio.wait({task, watcher, cut}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        cut.cancel()
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    if task.cancelled():
        if admission is not None and cut_event.is_set():
            raise ShuttingDown(
                "the server shut down before the search finished; retry",
                headers={"Retry-After": str(admission.retry_after_s)},
            )
        raise ClientDisconnected
    return task.result()


def asked_algorithm(algorithm: object, settings: Settings) -> str:
    """The algorithm a request asks for, as its log line names it until the search is
    parsed: a known name, the default, or "unknown" (a client's text is never logged)."""
    if algorithm is None:
        return settings.default_algorithm
    return algorithm if isinstance(algorithm, str) and algorithm in STRATEGIES else "unknown"


def search_service(request: Request) -> SearchService:
    service: SearchService | None = request.app.state.search_service
    if service is None:
        raise EngineUnavailable("the model is still loading; retry when /ready says ok")
    return service


class ServingBase(ABC):
    """One request of a search API, answered by ``handle`` (the template method, see the
    module's docstring); a subclass keeps what its answer echoes of the request."""

    @abstractmethod
    def convert(self, settings: Settings) -> ChatCompletionRequest:
        """The request as chat completions has it (its ``search`` and ``stream`` steer
        the steps)."""

    @abstractmethod
    async def prepare(self, service: SearchService) -> Prepared:
        """The search, ready to run; errors name this API's fields."""

    async def run(self, service: SearchService, prepared: Prepared) -> SearchResult:
        return await service.run(prepared)

    @abstractmethod
    def respond(
        self, service: SearchService, prepared: Prepared, result: SearchResult
    ) -> dict[str, Any]:
        """The JSON answer."""

    @abstractmethod
    def stream(
        self, service: SearchService, prepared: Prepared, on_search_end: Callable[[], None]
    ) -> AsyncIterator[str]:
        """The SSE events of the prepared search; ``on_search_end`` gives its admission
        slot back."""

    def searches(self, prepared: Prepared) -> list[Prepared]:
        """Every search of the request, for its log line's counts (several for a
        completions request of several prompts)."""
        return [prepared]

    async def handle(self, raw: Request) -> Response:
        metrics: ServerMetrics = raw.app.state.metrics
        try:
            body = self.convert(raw.app.state.settings)
        except LimitExceeded as exc:
            metrics.limit_rejections.labels(exc.limit).inc()
            raise
        algorithm = asked_algorithm((body.search or {}).get("algorithm"), raw.app.state.settings)
        api = API_ROUTES[raw.scope["path"]]
        start = time.perf_counter()
        status = 500
        admission: Admission = raw.app.state.admission
        observed = Observed.start_for(raw, stream=bool(body.stream), start=start)
        prepared: Prepared | None = None
        try:
            service = search_service(raw)
            # Refuse before paying for rendering and tokenization (a retry elsewhere is cheap).
            admission.check(stream=body.stream)
            prepared = await self.prepare(service)
            algorithm = prepared.algorithm
            # Counted here from now on, with its algorithm (server.request_metrics).
            mark_counted(raw.scope)
            observed.on_prepared(prepared, self.searches(prepared))
            if body.stream:
                admission.check(stream=True)
            # The slot before any header (N7): a stream refused while queued (the queue
            # filled, draining began, its deadline passed) gets its 429, 503 or 504 as a
            # status that clients and proxies act on, not as an event after a 200.
            release = await cancel_on_disconnect(
                raw, service.admitted(admission.enter(), prepared), admission
            )
            if body.stream:
                status = 200
                return AdmittedStream(
                    release,
                    counted_stream(
                        self,
                        service,
                        prepared,
                        metrics,
                        start,
                        admission,
                        release,
                        observed,
                        api=api,
                    ),
                    media_type="text/event-stream",
                    # nginx buffers a proxied response unless told not to.
                    headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
                )
            try:
                result = await cancel_on_disconnect(raw, self.run(service, prepared), admission)
            finally:
                release()
            for search in self.searches(prepared):  # out of the slot (M7)
                await service.recorded(search)
            observed.result = result
            response = JSONResponse(self.respond(service, prepared, result))
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
                if prepared is not None:
                    metrics.record_request(api, algorithm, status, time.perf_counter() - start)
                observed.finish(algorithm, status)


class AdmittedStream(StreamingResponse):
    """A stream that holds an admission slot: given back when the response ends, also
    when the client left before its first byte and the body never started."""

    def __init__(self, release: Callable[[], None], *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.release = release

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.release()  # harmless when the stream gave it back already


async def counted_stream(
    handler: ServingBase,
    service: SearchService,
    prepared: Prepared,
    metrics: ServerMetrics,
    start: float,
    admission: Admission,
    release: Callable[[], None],
    observed: Observed | None = None,
    *,
    api: str,
) -> AsyncIterator[str]:
    """The search's events under the slot the request was admitted with, counted in the
    metrics and the log when the stream ends."""
    status = 499  # unless the stream runs to its end, the client left
    admission.open_streams += 1
    try:
        async for event in handler.stream(service, prepared, release):
            yield event
        status = prepared.stream_error_status or 200
    finally:
        admission.open_streams -= 1
        release()
        if status == 499:
            metrics.cancellations.inc()
        metrics.record_request(api, prepared.algorithm, status, time.perf_counter() - start)
        if observed is not None:
            observed.finish(prepared.algorithm, status)
