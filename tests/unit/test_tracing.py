"""OpenTelemetry traces (server.tracing) over the fake runtime: one server span per
request with its attributes, a child span per search phase, the client's traceparent as
the parent, a stream's span ending with the stream, and nothing at all when tracing is
off. Spans go to the SDK's in-memory exporter through a provider of the app's own."""

from __future__ import annotations

import asyncio
import http.server
import json
import threading
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import uvicorn
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from search.types import Budget
from server.app import create_app
from server.settings import Settings
from server.tracing import Tracing, traces_endpoint
from tests.conftest import free_port

URL = "/v1/chat/completions"
USER = [{"role": "user", "content": "hi"}]
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


def body(**kw: Any) -> dict[str, Any]:
    return {"model": "m", "messages": USER, **kw}


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def traced(exporter: InMemorySpanExporter, runtime_of: Any) -> Any:
    """A client of an app whose tracing exports to ``exporter`` as each span ends."""

    @asynccontextmanager
    async def client(
        runtime: Any = None, *, raises: bool = True
    ) -> AsyncIterator[httpx.AsyncClient]:
        app = create_app(Settings(), runtime=runtime or runtime_of())
        app.state.tracing = Tracing.exporting(exporter, "test", batch=False)
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=raises)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            yield c
        app.state.tracing.shutdown()

    return client


def request_spans(spans: Sequence[ReadableSpan]) -> list[ReadableSpan]:
    return [s for s in spans if s.kind == SpanKind.SERVER]


def children(spans: Sequence[ReadableSpan], parent: ReadableSpan) -> list[ReadableSpan]:
    assert parent.context is not None
    return [s for s in spans if s.parent is not None and s.parent.span_id == parent.context.span_id]


async def test_a_request_span_with_its_attributes_and_phase_children(
    traced: Any, exporter: InMemorySpanExporter
) -> None:
    async with traced() as client:
        r = await client.post(URL, json=body())
    assert r.status_code == 200
    spans = exporter.get_finished_spans()
    (request,) = request_spans(spans)
    assert request.name == "POST /v1/chat/completions"
    assert request.resource.attributes["service.name"] == "test"
    assert dict(request.attributes or {}) == {
        "http.request.method": "POST",
        "http.route": URL,
        "http.response.status_code": 200,
        "alignserve.request_id": r.headers["x-request-id"],
        "alignserve.stream": False,
        "alignserve.algorithm": "bon",
        "alignserve.n": 4,
        "gen_ai.usage.input_tokens": 19,
        # one, three, three, seven
        "alignserve.generated_tokens": 3 + 5 + 5 + 5,
        "alignserve.engine_calls": 1,
        "alignserve.reward_calls": 1,
        "alignserve.chosen_reward": 0.8,
        "alignserve.deadline_hit": False,
        "alignserve.budget_hit": False,
    }
    assert request.status.status_code == StatusCode.UNSET
    assert request.parent is None  # no traceparent: a root span
    phases = children(spans, request)
    assert sorted(s.name for s in phases) == ["search.generate", "search.score"]
    assert len(spans) == 3  # nothing else
    assert request.start_time is not None and request.end_time is not None
    for phase in phases:
        assert phase.context is not None and request.context is not None
        assert phase.context.trace_id == request.context.trace_id
        assert phase.attributes == {"alignserve.phase": phase.name.removeprefix("search.")}
        assert phase.start_time is not None and phase.end_time is not None
        assert request.start_time <= phase.start_time <= phase.end_time <= request.end_time


async def test_the_traceparent_header_is_the_parent(
    traced: Any, exporter: InMemorySpanExporter
) -> None:
    header = {"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"}
    async with traced() as client:
        r = await client.post(URL, json=body(), headers=header)
    assert r.status_code == 200
    spans = exporter.get_finished_spans()
    (request,) = request_spans(spans)
    assert request.context is not None and request.parent is not None
    assert request.context.trace_id == int(TRACE_ID, 16)
    assert request.parent.span_id == int(PARENT_ID, 16)
    assert request.parent.is_remote
    assert all(s.context is not None and s.context.trace_id == int(TRACE_ID, 16) for s in spans)


async def test_an_unsampled_traceparent_records_nothing(
    traced: Any, exporter: InMemorySpanExporter
) -> None:
    header = {"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-00"}
    async with traced() as client:
        r = await client.post(URL, json=body(), headers=header)
    assert r.status_code == 200
    assert exporter.get_finished_spans() == ()


async def test_concurrent_requests_keep_their_phases_apart(
    traced: Any, exporter: InMemorySpanExporter, runtime_of: Any, script: Any
) -> None:
    # Both searches run at once (the generator sleeps), so their phases interleave.
    async with traced(runtime_of(script(delay_s=0.02))) as client:
        rs = await asyncio.gather(*(client.post(URL, json=body()) for _ in range(3)))
    assert [r.status_code for r in rs] == [200] * 3
    spans = exporter.get_finished_spans()
    requests = request_spans(spans)
    assert len({s.context.trace_id for s in requests if s.context}) == 3
    for request in requests:
        phases = children(spans, request)
        assert sorted(s.name for s in phases) == ["search.generate", "search.score"]
    assert len(spans) == 3 * 3


async def test_a_refused_request_has_its_status(
    traced: Any, exporter: InMemorySpanExporter
) -> None:
    async with traced() as client:
        r = await client.post(URL, json=body(search={"algorithm": "bon", "n": 1000}))
    assert r.status_code == 400
    (request,) = exporter.get_finished_spans()
    attrs = dict(request.attributes or {})
    assert attrs["http.response.status_code"] == 400
    assert attrs["error.type"] == "InvalidRequest"
    assert attrs["alignserve.algorithm"] == "bon"
    assert "alignserve.generated_tokens" not in attrs  # never prepared, never ran
    assert request.status.status_code == StatusCode.UNSET  # a client error, not the server's


async def test_a_server_error_marks_the_span(
    traced: Any, exporter: InMemorySpanExporter, runtime_of: Any
) -> None:
    class Broken:
        bounds = None
        takes_token_ids = False

        async def score(self, *_: Any, **__: Any) -> list[float]:
            raise RuntimeError("the reward model fell over")

    async with traced(runtime_of(reward=Broken()), raises=False) as client:
        r = await client.post(URL, json=body())
    assert r.status_code == 500
    (request,) = request_spans(exporter.get_finished_spans())
    assert request.status.status_code == StatusCode.ERROR
    assert dict(request.attributes or {})["http.response.status_code"] == 500


async def test_a_streamed_span_ends_with_the_stream(
    exporter: InMemorySpanExporter, runtime_of: Any
) -> None:
    """Driven as raw ASGI: at the moment the last event is sent the request span is
    still open (answer_search returned long before), and it is closed right after."""
    app = create_app(Settings(), runtime=runtime_of())
    app.state.tracing = Tracing.exporting(exporter, batch=False)
    payload = json.dumps(body(stream=True)).encode()
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": URL,
        "raw_path": URL.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"t"), (b"content-type", b"application/json")],
        "client": ("127.0.0.1", 1),
        "server": ("t", 80),
    }
    sent = False
    done = asyncio.Event()
    open_at_last_event: list[bool] = []

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": payload, "more_body": False}
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body" and b"[DONE]" in message.get("body", b""):
            open_at_last_event.append(not request_spans(exporter.get_finished_spans()))

    await app(scope, receive, send)
    done.set()
    assert open_at_last_event == [True]
    (request,) = request_spans(exporter.get_finished_spans())
    attrs = dict(request.attributes or {})
    assert attrs["alignserve.stream"] is True
    assert attrs["http.response.status_code"] == 200
    assert attrs["alignserve.generated_tokens"] == 18
    assert sorted(s.name for s in children(exporter.get_finished_spans(), request)) == [
        "search.generate",
        "search.score",
    ]
    app.state.tracing.shutdown()


async def test_tracing_off_makes_no_spans_and_no_provider(runtime_of: Any) -> None:
    app = create_app(Settings(), runtime=runtime_of())
    async with app.router.lifespan_context(app):
        assert not app.state.tracing.enabled
        assert app.state.tracing.provider is None
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            r = await client.post(URL, json=body())
    assert r.status_code == 200
    # The process-wide provider was never set (the app never touches it).
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


async def test_the_lifespan_flushes_batched_spans(
    exporter: InMemorySpanExporter, runtime_of: Any
) -> None:
    app = create_app(Settings(), runtime=runtime_of())
    app.state.tracing = Tracing.exporting(exporter)  # batched, as served: a 5 s delay
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            assert (await client.post(URL, json=body())).status_code == 200
    assert len(request_spans(exporter.get_finished_spans())) == 1


def test_the_lifespan_starts_tracing_from_the_settings(
    runtime_of: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    app = create_app(
        Settings(otlp_traces_endpoint="http://127.0.0.1:9", otel_service_name="svc"),
        runtime=runtime_of(),
    )
    assert not app.state.tracing.enabled  # only while serving

    async def serve_briefly() -> Any:
        async with app.router.lifespan_context(app):
            return app.state.tracing

    tracing = asyncio.run(serve_briefly())
    assert tracing.enabled
    assert tracing.provider.resource.attributes["service.name"] == "svc"


def test_the_endpoint_setting_and_the_standard_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_SDK_DISABLED"):
        monkeypatch.delenv(name, raising=False)
    assert traces_endpoint(Settings()) is None
    assert not Tracing.from_settings(Settings()).enabled
    full = "http://collector:4318/v1/traces"
    assert traces_endpoint(Settings(otlp_traces_endpoint=full)) == full
    # A bare collector address (as vLLM's flag is often given) gets the traces path.
    assert traces_endpoint(Settings(otlp_traces_endpoint="http://collector:4318")) == full
    assert traces_endpoint(Settings(otlp_traces_endpoint="http://collector:4318/")) == full
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://other:4318/x")
    assert traces_endpoint(Settings()) == "http://other:4318/x"
    assert traces_endpoint(Settings(otlp_traces_endpoint=full)) == full  # the flag wins
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert traces_endpoint(Settings(otlp_traces_endpoint=full)) is None


def test_budget_tells_its_phases_with_their_times() -> None:
    told: list[tuple[str, float, float]] = []
    budget = Budget(on_phase=lambda *args: told.append(args))
    with budget.phase("generate"):
        pass
    budget.add_phase("score", 0.5, start=10.0)
    budget.add_phase("utility", 0.25)  # no start: it ends now
    assert [name for name, _, _ in told] == ["generate", "score", "utility"]
    _, start, end = told[0]
    assert 0 <= end - start == pytest.approx(budget.phase_seconds["generate"])
    assert told[1][1:] == (10.0, 10.5)
    assert told[2][2] - told[2][1] == pytest.approx(0.25)
    assert Budget() == Budget(on_phase=print)  # the hook is not part of the value


class Collector(http.server.ThreadingHTTPServer):
    """A stand-in OTLP/HTTP collector: keeps the protobuf bodies posted to /v1/traces."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.paths: list[str] = []
        collector = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                size = int(self.headers["Content-Length"])
                collector.paths.append(self.path)
                collector.bodies.append(self.rfile.read(size))
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)


def test_a_real_server_exports_to_an_otlp_collector_and_flushes_at_exit(runtime_of: Any) -> None:
    """The settings' path end to end: real uvicorn runs the lifespan, which starts the
    OTLP/HTTP exporter (batched, so nothing leaves before the 5 s delay) and flushes it
    when the server stops."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    collector = Collector()
    threading.Thread(target=collector.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{collector.server_address[1]}"  # no path: /v1/traces added
    app = create_app(Settings(otlp_traces_endpoint=endpoint), runtime=runtime_of())
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.time() + 10
        while not server.started and time.time() < deadline:
            time.sleep(0.02)
        header = {"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"}
        r = httpx.post(f"http://127.0.0.1:{port}{URL}", json=body(), headers=header, timeout=10)
        assert r.status_code == 200
    finally:
        server.should_exit = True
        thread.join(10)
        collector.shutdown()
    assert not thread.is_alive()
    assert collector.paths and set(collector.paths) == {"/v1/traces"}
    spans = []
    for raw_body in collector.bodies:
        request = ExportTraceServiceRequest.FromString(raw_body)
        for resource_spans in request.resource_spans:
            names = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            assert names["service.name"] == "alignserve"
            for scope_spans in resource_spans.scope_spans:
                spans.extend(scope_spans.spans)
    assert sorted(s.name for s in spans) == [
        "POST /v1/chat/completions",
        "search.generate",
        "search.score",
    ]
    assert {s.trace_id.hex() for s in spans} == {TRACE_ID}
