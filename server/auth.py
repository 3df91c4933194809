"""Bearer-token auth. Keys are compared in constant time, and against every configured key
whatever matches first, so timing reveals neither a key nor which.

``ApiKeyGate`` checks the key as ASGI middleware, from the headers alone, so a client
without a key is refused before its body is read or parsed (a FastAPI dependency would run
only after the body was buffered and parsed as JSON). Guarded: the /v1 routes, vLLM's
tokenizer routes (/tokenize, /detokenize, /tokenizer_info; vLLM leaves them open, so a
client such as lm-eval must be given the key for them too), the docs (/docs, /redoc,
/openapi.json) whenever keys are set, and /health, /ready and /metrics with
--protect-ops-routes."""

from __future__ import annotations

import hmac

from starlette.types import ASGIApp, Receive, Scope, Send

from server.errors import send_error

DOCS_PATHS = ("/docs", "/redoc", "/openapi.json")
OPS_PATHS = ("/health", "/ready", "/metrics")
# vLLM's tokenizer routes (server.tokenizer_routes): API routes outside /v1.
TOKENIZER_PATHS = ("/tokenize", "/detokenize", "/tokenizer_info")
UNAUTHORIZED = "missing or invalid API key: send 'Authorization: Bearer <key>'"


def key_accepted(authorization: str | None, keys: list[str]) -> bool:
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer":
        token = ""
    given = token.strip().encode()
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(given, key.encode())
    return matched


def guarded(path: str, protect_ops_routes: bool) -> bool:
    if path.startswith("/v1/") or path == "/v1" or path.startswith(DOCS_PATHS):
        return True
    if path in TOKENIZER_PATHS:
        return True
    return protect_ops_routes and path in OPS_PATHS


class ApiKeyGate:
    def __init__(self, app: ASGIApp, keys: list[str], protect_ops_routes: bool) -> None:
        self.app = app
        self.keys = keys
        self.protect_ops_routes = protect_ops_routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or not self.keys
            or not guarded(scope["path"], self.protect_ops_routes)
        ):
            await self.app(scope, receive, send)
            return
        authorization = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
        if key_accepted(authorization, self.keys):
            await self.app(scope, receive, send)
            return
        await send_error(
            send, UNAUTHORIZED, "authentication_error", 401, [(b"www-authenticate", b"Bearer")]
        )
