"""Thin router: fetch the service from app state, run it, wrap the result, count it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable
from typing import TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from search.errors import AlignserveError, EngineUnavailable
from server.chat.serving import ChatService
from server.metrics import ServerMetrics
from server.protocol import ChatCompletionRequest

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


def chat_service(request: Request) -> ChatService:
    service: ChatService | None = request.app.state.chat_service
    if service is None:
        raise EngineUnavailable("the model is still loading; retry when /ready says ok")
    return service


@router.post("/v1/chat/completions")
async def create_chat_completion(body: ChatCompletionRequest, raw: Request) -> Response:
    metrics: ServerMetrics = raw.app.state.metrics
    algorithm = str((body.search or {}).get("algorithm", raw.app.state.settings.default_algorithm))
    start = time.perf_counter()
    status = 500
    try:
        service = chat_service(raw)
        prepared = service.prepare(body)
        algorithm = prepared.algorithm
        if body.stream:
            status = 200
            return StreamingResponse(
                counted_stream(service.stream(prepared), metrics, algorithm, start),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache"},
            )
        result = await cancel_on_disconnect(raw, service.run(prepared))
        status = 200
        return JSONResponse(service.response(prepared, result))
    except AlignserveError as exc:
        status = exc.status_code
        raise
    except ClientDisconnected:
        status = 499  # nginx's "client closed request": nobody reads this response
        return Response(status_code=499)
    finally:
        if not (body.stream and status == 200):
            metrics.record_request(algorithm, status, time.perf_counter() - start)


async def counted_stream(
    events: AsyncIterator[str], metrics: ServerMetrics, algorithm: str, start: float
) -> AsyncIterator[str]:
    status = 499
    try:
        async for event in events:
            yield event
        status = 200
    finally:
        metrics.record_request(algorithm, status, time.perf_counter() - start)
