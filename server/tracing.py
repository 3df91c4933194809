"""OpenTelemetry traces of the search requests (``--otlp-traces-endpoint``).

Off by default: no provider is made and ``Tracing.start`` returns None, so a request
pays one attribute check and opentelemetry is not even imported. On, the app holds a
``TracerProvider`` of its own (never the process-global one: that can be set once per
process, and tests build many apps) that batches spans to an OTLP/HTTP collector from a
background thread; ``shutdown`` flushes it when the server exits.

The spans of one request:

- ``POST /v1/chat/completions`` (the route; SpanKind.SERVER), from ``ServingBase.handle``
  (once ``convert`` passed) to the answer (for a stream: to its last event). Its parent
  is the W3C ``traceparent`` the client sent, as vLLM's server does; the sampler
  (``OTEL_TRACES_SAMPLER``, default parent-based always-on) honours its sampled flag.
  Attributes: ``http.request.method``, ``http.route``, ``http.response.status_code``,
  ``alignserve.request_id``, ``alignserve.algorithm``, ``alignserve.n`` (the search's
  sample count, when it has one), ``alignserve.stream``, ``gen_ai.usage.input_tokens``
  (the prompt), ``alignserve.generated_tokens`` (every candidate's), ``alignserve.
  engine_calls``, ``alignserve.reward_calls``, ``alignserve.chosen_reward`` (when the
  reward model was called), ``alignserve.deadline_hit``, ``alignserve.budget_hit``, and
  ``error.type`` on failure (status ERROR from 500 up).
- ``search.<phase>`` (``search.generate``, ``search.score``, ``search.utility``, ...), a
  child of the request span for every phase the search's ``Budget`` times. Phases may
  overlap (scoring while samples still decode), so each is made after it ended from its
  own start and end times, parented explicitly, never through the current-span context.

Spans carry counts, names and ids only: never prompt or answer text.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Span, Tracer

    from server.settings import Settings

logger = logging.getLogger(__name__)

TRACES_PATH = "/v1/traces"
TRACES_ENV = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
SCOPE = "alignserve"
DEFAULT_SERVICE_NAME = "alignserve"


def traces_endpoint(settings: Settings) -> str | None:
    """Where spans go: the setting, else the standard variable; None: tracing is off.
    A URL without a path (``http://collector:4318``, how vLLM's flag is often given) gets
    the OTLP/HTTP traces path; the SDK would post to the bare URL and be refused."""
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    endpoint = settings.otlp_traces_endpoint or os.environ.get(TRACES_ENV) or None
    if endpoint is None:
        return None
    parts = urlsplit(endpoint)
    if parts.path in ("", "/"):
        return urlunsplit(parts._replace(path=TRACES_PATH))
    return endpoint


class RequestSpan:
    """The span of one request and the context its phase spans hang from."""

    def __init__(self, tracer: Tracer, span: Span, context: Context) -> None:
        self.tracer = tracer
        self.span = span
        self.context = context
        # perf_counter() seconds to epoch nanoseconds, for the phases' own times.
        self.epoch_offset_ns = time.time_ns() - time.perf_counter_ns()

    def set(self, attributes: Mapping[str, Any]) -> None:
        """Set the attributes whose value is not None."""
        for key, value in attributes.items():
            if value is not None:
                self.span.set_attribute(key, value)

    def phase(self, name: str, start: float, end: float) -> None:
        """A ``Budget.on_phase`` hook: one finished phase as a child span."""
        try:
            span = self.tracer.start_span(
                f"search.{name}",
                context=self.context,
                start_time=self.epoch_offset_ns + int(start * 1e9),
                attributes={"alignserve.phase": name},
            )
            span.end(end_time=self.epoch_offset_ns + int(end * 1e9))
        except Exception:  # tracing must never fail a search
            logger.debug("could not record the phase span", exc_info=True)

    def end(self, status: int, error: BaseException | None = None) -> None:
        from opentelemetry.trace import Status, StatusCode

        self.span.set_attribute("http.response.status_code", status)
        if error is not None:
            self.span.set_attribute("error.type", type(error).__name__)
        if status >= 500:
            self.span.set_status(Status(StatusCode.ERROR))
        self.span.end()


class Tracing:
    """The app's tracer provider, or nothing (``Tracing()``: tracing off)."""

    def __init__(self, provider: TracerProvider | None = None) -> None:
        self.provider = provider
        self.tracer = None if provider is None else provider.get_tracer(SCOPE)

    @property
    def enabled(self) -> bool:
        return self.provider is not None

    @classmethod
    def from_settings(cls, settings: Settings) -> Tracing:
        endpoint = traces_endpoint(settings)
        if endpoint is None:
            return cls()
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        logger.info("tracing: sending spans to %s", endpoint)
        return cls.exporting(OTLPSpanExporter(endpoint=endpoint), settings.otel_service_name)

    @classmethod
    def exporting(
        cls, exporter: SpanExporter, service_name: str | None = None, *, batch: bool = True
    ) -> Tracing:
        """Spans to ``exporter``, batched off the event loop (``batch=False``: exported
        as each ends, for tests with an in-memory exporter)."""
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

        name = service_name or os.environ.get("OTEL_SERVICE_NAME") or DEFAULT_SERVICE_NAME
        provider = TracerProvider(resource=Resource.create({SERVICE_NAME: name}))
        processor = BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter)
        provider.add_span_processor(processor)
        return cls(provider)

    def start(self, name: str, headers: Mapping[str, str]) -> RequestSpan | None:
        """A request's server span, child of the ``traceparent`` in ``headers``; None
        when tracing is off."""
        if self.tracer is None:
            return None
        from opentelemetry.trace import SpanKind, set_span_in_context
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        parent = TraceContextTextMapPropagator().extract(headers)
        span = self.tracer.start_span(name, context=parent, kind=SpanKind.SERVER)
        return RequestSpan(self.tracer, span, set_span_in_context(span))

    def shutdown(self) -> None:
        """Export what is still queued and stop the exporter (blocks: call it off the loop)."""
        if self.provider is not None:
            self.provider.shutdown()
