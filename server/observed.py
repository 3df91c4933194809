"""What one search request reports when it ends: its request log line (``server.logs``)
and, when tracing is on, its server span (``server.tracing``), whichever API it came in
through. ``ServingBase.handle`` (``server.serving_base``) starts one per request."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request

from search.types import SearchResult
from server import request_id
from server.logs import log_request
from server.search_service import Prepared
from server.tracing import RequestSpan, Tracing


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
    # Every search of the request (a completions request runs one per prompt): the line
    # counts them all. The first is ``prepared``, which stands for the request.
    searches: list[Prepared] = field(default_factory=list)
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

    def on_prepared(self, prepared: Prepared, searches: Sequence[Prepared] = ()) -> None:
        self.prepared = prepared
        self.searches = list(searches) or [prepared]
        if self.span is not None:
            prepared.context.budget.on_phase = self.span.phase
            self.span.set(
                {
                    "alignserve.algorithm": prepared.algorithm,
                    "alignserve.n": prepared.strategy.n,
                    "gen_ai.usage.input_tokens": sum(
                        len(p.context.prompt_ids) for p in self.searches
                    ),
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
            budgets = [p.context.budget for p in self.searches]
            fields["prompt_tokens"] = sum(len(p.context.prompt_ids) for p in self.searches)
            outcome.update(
                generated_tokens=sum(b.generated_tokens for b in budgets),
                engine_calls=sum(b.engine_calls for b in budgets),
                reward_calls=sum(b.reward_calls for b in budgets),
            )
        # A stream's result: the service keeps it on the Prepared.
        result = self.result or (prepared.result if prepared is not None else None)
        if result is not None:
            # No chosen reward when the reward model was never called (mbr, majority).
            if result.budget.reward_calls:
                outcome["chosen_reward"] = result.best.reward
            results = [result, *(p.result for p in self.searches[1:] if p.result is not None)]
            outcome["deadline_hit"] = any(r.details.get("deadline_hit") for r in results)
            outcome["budget_hit"] = any(r.details.get("budget_hit") for r in results)
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
