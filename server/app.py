"""App factory. ``create_app(settings)`` loads the real runtime in the background;
``create_app(settings, runtime=...)`` serves an injected one (unit tests use fakes)."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse, Response

from engines.default_model import DEFAULT_MODEL_NAME
from server.admission import Admission
from server.allowed_hosts import HostAllowlist
from server.auth import ApiKeyGate
from server.body_limit import BodyLimit
from server.chat.router import router as chat_router
from server.completions.router import router as completions_router
from server.errors import install_error_handlers
from server.health import fatal, install_health_routes, start_monitor
from server.metrics import ServerMetrics
from server.openapi_docs import API_ERRORS, OPS_ERRORS, without_default_422
from server.recording import Recorder
from server.request_id import RequestIdMiddleware
from server.request_metrics import RequestCounter
from server.responses.router import router as responses_router
from server.reward_assembly import assemble_rewards
from server.runtime import Runtime, load_runtime
from server.search_service import SearchService
from server.settings import Settings
from server.tokenizer_routes import router as tokenizer_router
from server.tracing import Tracing

logger = logging.getLogger(__name__)
MB = 1024 * 1024

RuntimeLoader = Callable[[Settings], Awaitable[Runtime]]


def freeze_startup_heap() -> None:
    """Move the objects loading made (torch, vLLM, the tokenizer: about 700,000) out of the
    collector's reach, as vLLM's own server does after start-up (``freeze_gc_heap``). A
    full collection otherwise walks them all on the event loop: 0.28 s on an idle 2-core
    machine, 0.65 s while the engine generates (measured in-process); after the freeze,
    under 1 ms."""
    gc.collect()
    gc.freeze()


def create_app(
    settings: Settings, *, runtime: Runtime | None = None, loader: RuntimeLoader = load_runtime
) -> FastAPI:
    metrics = ServerMetrics()
    docs = (
        {} if not settings.disable_docs else dict(docs_url=None, redoc_url=None, openapi_url=None)
    )
    app_lifespan = lifespan(None if runtime is not None else loader)
    app = FastAPI(title="alignserve", lifespan=app_lifespan, **docs)  # type: ignore[arg-type]
    warn_if_open(settings)
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.runtime = None
    app.state.search_service = None
    app.state.started = int(time.time())
    app.state.tracing = Tracing()  # off until the lifespan starts it (server.tracing)
    app.state.recorder = (
        Recorder(
            settings.record,
            max_shard_bytes=settings.record_shard_mb * MB,
            max_queued_bytes=settings.record_queue_mb * MB,
            max_total_bytes=settings.record_max_total_mb * MB or None,
            dropped=metrics.records_dropped,
        )
        if settings.record
        else None
    )
    app.state.admission = Admission(
        settings.max_concurrent_searches,
        settings.max_queued_searches,
        metrics,
        retry_after_s=settings.retry_after_s,
        max_open_streams=settings.max_open_streams,
    )
    if runtime is not None:
        install(app, runtime)
    install_error_handlers(app)
    # Outermost last: the requests counted (server.request_metrics), ids on every
    # response, then the Host, then the key from headers alone (before any body is
    # read), then the body's size and pace.
    app.add_middleware(
        BodyLimit,
        max_bytes=settings.max_body_bytes,
        read_timeout_s=settings.http_read_timeout_s,
        on_timeout=metrics.limit_rejections.labels("body_timeout").inc,
    )
    app.add_middleware(
        ApiKeyGate, keys=settings.api_key, protect_ops_routes=settings.protect_ops_routes
    )
    app.add_middleware(HostAllowlist, hosts=settings.allowed_hosts)
    app.add_middleware(RequestIdMiddleware)
    # Around the key gate and the body limits: their refusals are counted too.
    app.add_middleware(RequestCounter, metrics=metrics)
    install_routes(app)
    without_default_422(app)
    return app


def install(app: FastAPI, loaded: Runtime) -> None:
    """Serve ``loaded``, its rewards assembled for this app (``server.reward_assembly``)."""
    settings: Settings = app.state.settings
    runtime = assemble_rewards(loaded, settings, app.state.metrics)
    app.state.runtime = runtime
    app.state.search_service = SearchService(
        runtime, settings, app.state.metrics, recorder=app.state.recorder
    )


async def load(app: FastAPI, loader: RuntimeLoader) -> None:
    try:
        install(app, await loader(app.state.settings))
    except Exception as exc:
        # Serving 503 forever would leave a wrong --model unnoticed: exit non-zero.
        logger.debug("loading the runtime failed", exc_info=True)
        fatal(app, "loading failed", f"{type(exc).__name__}: {exc}")
        return
    start_monitor(app, app.state.runtime)
    freeze_startup_heap()
    logger.info("ready: serving %s", app.state.runtime.model_name)


def lifespan(
    loader: RuntimeLoader | None,
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """The app's lifespan: tracing starts, the runtime loads in the background with
    ``loader`` (None: it was injected and installed, and only its health monitor starts),
    and at the end everything stops in order."""

    @asynccontextmanager
    async def running(app: FastAPI) -> AsyncIterator[None]:
        if not app.state.tracing.enabled:  # unless one was injected (tests)
            app.state.tracing = Tracing.from_settings(app.state.settings)
        loading = None if loader is None else asyncio.create_task(load(app, loader))
        if loader is None:
            start_monitor(app, app.state.runtime)
        try:
            yield
        finally:
            if loading is not None and not loading.done():
                loading.cancel()
            if app.state.health is not None:  # first: closing the engines is no death
                await app.state.health.stop()
            if app.state.runtime is not None:
                await app.state.runtime.close()
            if app.state.recorder is not None:
                await asyncio.to_thread(app.state.recorder.close)
            await asyncio.to_thread(app.state.tracing.shutdown)  # last: flush every span

    return running


def install_routes(app: FastAPI) -> None:
    """The three search APIs and vLLM's tokenizer routes (their keys checked by
    ApiKeyGate before any body is read), /v1/models, the health routes and /metrics."""
    settings: Settings = app.state.settings
    metrics: ServerMetrics = app.state.metrics
    app.include_router(chat_router)
    app.include_router(completions_router)
    app.include_router(responses_router)
    app.include_router(tokenizer_router)

    def model_name() -> str:
        rt = app.state.runtime
        return (
            rt.model_name
            if rt
            else (settings.served_model_name or settings.model or DEFAULT_MODEL_NAME)
        )

    @app.get("/v1/models", responses=API_ERRORS)
    async def list_models() -> dict[str, object]:
        return {
            "object": "list",
            "data": [
                {
                    "id": model_name(),
                    "object": "model",
                    "created": app.state.started,
                    "owned_by": "alignserve",
                }
            ],
        }

    install_health_routes(app, model_name)

    @app.get("/metrics", responses=OPS_ERRORS, response_class=PlainTextResponse)
    async def prometheus(_: Request) -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


def warn_if_open(settings: Settings) -> None:
    loopback = settings.host in ("127.0.0.1", "::1", "localhost")
    if not loopback and not settings.api_key:
        logger.warning(
            "listening on %s without API keys: anyone who can reach this port can use the "
            "model (set --api-key, or listen on 127.0.0.1 behind an authenticating proxy)",
            settings.host,
        )
