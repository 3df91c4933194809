"""Counting the requests of the search APIs, whoever answers them, in
``alignserve_requests_total{api, algorithm, status}`` (``server.metrics``). Each request
to a search API's route is counted once, by one of two places:

- the serving base (``server.serving_base``) counts a request whose search was parsed:
  with its algorithm and its final status (a stream's when it ends), and observes its
  latency; it marks the request (``mark_counted``) so this module does not count it again;
- ``RequestCounter``, ASGI middleware around everything else, counts the rest with the
  status they were answered: the requests refused before their search was parsed (a 401
  from the key gate, a 413 or 408 from the body limits, a 400 from the body's schema or
  the search options, a 404 for another model, a 429 or 503 at the door, a 500 that
  escaped), under no algorithm and outside the latency histogram: they did no search,
  and their microseconds would pull the latency quantiles down.

A route outside ``API_ROUTES`` (/v1/models, /health, /metrics, a mistyped path) is not
counted: its path is the client's text, and a label must not be.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.metrics import ServerMetrics

# The search APIs' routes and their "api" label values (server.metrics.APIS).
API_ROUTES = {
    "/v1/chat/completions": "chat",
    "/v1/completions": "completions",
    "/v1/responses": "responses",
}
# The scope key the serving base sets on a request it counted itself.
COUNTED = "alignserve.counted"


def api_of(scope: Scope) -> str | None:
    """The API a request's route belongs to, or None for another route."""
    return API_ROUTES.get(scope["path"]) if scope["type"] == "http" else None


def mark_counted(scope: Scope) -> None:
    scope[COUNTED] = True


class RequestCounter:
    """Counts the search APIs' requests the serving base did not (see the module's
    docstring), by the status of the response that went out; 500 for an exception that
    escaped before any did (the outermost error middleware answers it)."""

    def __init__(self, app: ASGIApp, metrics: ServerMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        api = api_of(scope)
        if api is None:
            await self.app(scope, receive, send)
            return
        status: int | None = None

        async def watched(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watched)
        except Exception:
            status = status or 500
            raise
        finally:
            # No status and no exception: the client left before any answer (cancelled).
            if status is not None and not scope.get(COUNTED):
                self.metrics.record_refusal(api, status)
