"""Bounded retries for the remote clients (engine and reward). Only what another attempt
can fix is retried: connection failures and timeouts, and the statuses of an overloaded
or restarting server (429, 502, 503, 504). A 4xx is the request's fault and returns at
once. Backoff doubles from ``backoff_s``; a Retry-After header is honoured up to a cap."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

RETRYABLE_STATUS = frozenset({429, 502, 503, 504})
MAX_RETRY_AFTER_S = 5.0


async def post_with_retries(
    client: httpx.AsyncClient,
    path: str,
    body: Any,
    *,
    attempts: int = 3,
    backoff_s: float = 0.2,
) -> httpx.Response:
    """The first non-retryable response, or the last one; re-raises the last transport
    error when every attempt failed to get a response."""
    for attempt in range(attempts):
        last = attempt == attempts - 1
        try:
            response = await client.post(path, json=body)
        except httpx.TransportError:
            if last:
                raise
            await asyncio.sleep(backoff_s * 2**attempt)
            continue
        if response.status_code not in RETRYABLE_STATUS or last:
            return response
        await asyncio.sleep(retry_delay(response, backoff_s * 2**attempt))
    raise AssertionError("unreachable: the last attempt returns or raises")


def retry_delay(response: httpx.Response, default_s: float) -> float:
    try:
        return min(float(response.headers["retry-after"]), MAX_RETRY_AFTER_S)
    except (KeyError, ValueError):
        return default_s
