"""Bounded retries for the remote clients (engine and reward). Only what another attempt
can fix is retried: connection failures and timeouts, and the statuses of an overloaded
or restarting server (429, 502, 503, 504). A 4xx is the request's fault and returns at
once. Backoff doubles from ``backoff_s``; a Retry-After header is honoured up to a cap.

Retrying an overloaded upstream multiplies its load (three attempts per call triple it),
so a client may pass a :class:`RetryBudget`: retries stop while most recent attempts fail,
and resume as calls succeed again.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

import httpx

RETRYABLE_STATUS = frozenset({429, 502, 503, 504})
MAX_RETRY_AFTER_S = 5.0


class RetryBudget:
    """gRPC's retry throttling: a failed attempt spends a token, a successful one earns
    ``ratio`` of a token back (up to ``max_tokens``), and a retry is allowed only while more
    than half of ``max_tokens`` remain. A healthy upstream keeps the bucket full, so the odd
    failure is retried; under a sustained outage retries stop after about
    ``max_tokens / 2`` failures and then add at most ``ratio`` retries per success."""

    def __init__(self, max_tokens: float = 10.0, ratio: float = 0.2) -> None:
        self.max_tokens = max_tokens
        self.ratio = ratio
        self.tokens = max_tokens

    def failed(self) -> None:
        self.tokens = max(0.0, self.tokens - 1.0)

    def succeeded(self) -> None:
        self.tokens = min(self.max_tokens, self.tokens + self.ratio)

    def allows_retry(self) -> bool:
        return self.tokens > self.max_tokens / 2


async def post_with_retries(
    client: httpx.AsyncClient,
    path: str,
    body: Any,
    *,
    attempts: int = 3,
    backoff_s: float = 0.2,
    budget: RetryBudget | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """The first non-retryable response, or the last one; re-raises the last transport
    error when every attempt failed to get a response (or the budget forbade a retry).
    ``headers``: added to the client's own on every attempt."""
    for attempt in range(attempts):
        try:
            response = await client.post(path, json=body, headers=headers)
        except httpx.TransportError:
            if budget is not None:
                budget.failed()
            if attempt == attempts - 1 or not _may_retry(budget):
                raise
            await asyncio.sleep(backoff_s * 2**attempt)
            continue
        if response.status_code not in RETRYABLE_STATUS:
            if budget is not None:
                budget.succeeded()
            return response
        if budget is not None:
            budget.failed()
        if attempt == attempts - 1 or not _may_retry(budget):
            return response
        await asyncio.sleep(retry_delay(response, backoff_s * 2**attempt))
    raise AssertionError("unreachable: the last attempt returns or raises")


def _may_retry(budget: RetryBudget | None) -> bool:
    return budget is None or budget.allows_retry()


def retry_after_s(response: httpx.Response) -> float | None:
    """The response's Retry-After in seconds (the delta form; dates are ignored)."""
    try:
        value = float(response.headers["retry-after"])
    except (KeyError, ValueError):
        return None
    return value if math.isfinite(value) and value >= 0 else None


def retry_delay(response: httpx.Response, default_s: float) -> float:
    value = retry_after_s(response)
    return default_s if value is None else min(value, MAX_RETRY_AFTER_S)
