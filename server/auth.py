"""Bearer-token auth for the API routes. Keys are compared in constant time, and against
every configured key whatever matches first, so timing reveals neither a key nor which."""

from __future__ import annotations

import hmac

from fastapi import Request

from search.errors import Unauthorized
from server.settings import Settings


def key_accepted(authorization: str | None, keys: list[str]) -> bool:
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer":
        token = ""
    given = token.strip().encode()
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(given, key.encode())
    return matched


async def require_api_key(request: Request) -> None:
    """FastAPI dependency: a no-op unless the server was started with API keys."""
    settings: Settings = request.app.state.settings
    if settings.api_key and not key_accepted(
        request.headers.get("authorization"), settings.api_key
    ):
        raise Unauthorized(
            "missing or invalid API key: send 'Authorization: Bearer <key>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
