"""Per-request deadlines and per-search limits. The server's ``--request-timeout-s``
applies to every search; a request may lower it with ``search.timeout_s``. At the
deadline the search is cancelled, which aborts every engine request it still has
running, and then either

- ``search.on_timeout = "best"`` (default): the answer is the highest-reward response
  scored so far (complete ones preferred over partial ones), and the report says
  ``deadline_hit: true``; with nothing scored yet it fails like "error";
- ``"error"``: the request fails with 504 and an OpenAI error JSON.

A search that would pass one of its limits (``search.budget``: generated tokens, engine
calls, scored responses) stops before that call, with its running calls cancelled, and
ends the same way: with ``"best"`` the best response scored so far, reported as
``budget_hit: true`` and ``budget_limit`` (the limit's label, e.g. ``search_tokens``);
with ``"error"`` or nothing scored, a 400 naming the limit (LimitExceeded). Requests whose
worst case exceeds a limit are refused before they start, so this is a backstop.
"""

from __future__ import annotations

import asyncio
from typing import Any

from search.budget import BudgetExhausted, fallback_key
from search.context import SearchContext
from search.errors import DeadlineExceeded, LimitExceeded
from search.strategy import SearchStrategy
from search.types import Candidate, Completion, SearchResult


async def run_with_deadline(
    strategy: SearchStrategy,
    ctx: SearchContext,
    timeout_s: float,
    on_timeout: str,
    *,
    shown_s: float | None = None,
) -> SearchResult:
    """``strategy.run`` cut at ``timeout_s``; ``shown_s`` is the deadline its message
    names (the request's, when ``timeout_s`` is what its queue wait left of it)."""

    async def checked_run() -> SearchResult:
        await strategy.preflight()
        return await strategy.run(ctx)

    try:
        return await asyncio.wait_for(checked_run(), timeout_s)
    except TimeoutError:
        best = None if on_timeout == "error" else best_scored(ctx)
        if best is None:
            raise DeadlineExceeded(
                f"the search did not finish within {shown_s or timeout_s:g} s"
                + ("" if on_timeout == "error" else " and had scored no response yet"),
                param="search.timeout_s",
            ) from None
        return cut_short(ctx, best, {"deadline_hit": True})
    except BudgetExhausted as exc:
        best = None if on_timeout == "error" else best_scored(ctx)
        if best is None:
            raise LimitExceeded(
                f"{exc}" + ("" if on_timeout == "error" else " before scoring any response"),
                limit=exc.limit,
                param="search",
            ) from None
        return cut_short(ctx, best, {"budget_hit": True, "budget_limit": exc.limit})


def cut_short(ctx: SearchContext, best: Candidate, details: dict[str, Any]) -> SearchResult:
    """The best response so far as the answer of a search that did not finish."""
    details["answer_was_partial"] = best.completion.finish_reason != "stop"
    return SearchResult(ranked=[best], candidates=[best], budget=ctx.budget, details=details)


def best_scored(ctx: SearchContext) -> Candidate | None:
    """The highest-reward response scored so far, complete ones before partial ones
    (a partial score rates a prefix, not an answer); ties to the earlier. Only responses
    that start with the text already streamed (``ctx.committed``) qualify. ``ctx.scored``
    may have been trimmed to its limit (``search.budget.trim_scored``): only the entries
    ranked last by this order are dropped."""
    scored = ctx.scored
    eligible = [i for i, (text, _, _) in enumerate(scored) if text.startswith(ctx.committed)]
    if not eligible:
        return None
    text, reward, partial = scored[min(eligible, key=lambda i: fallback_key(scored, i))]
    completion = Completion(
        token_ids=tuple(ctx.tokenizer.encode(text)),
        text=text,
        # A partial response was cut by the deadline: report it as cut at length.
        finish_reason="length" if partial else "stop",
    )
    return Candidate(completion, reward)
