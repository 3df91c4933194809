"""Per-request deadlines. The server's ``--request-timeout-s`` applies to every search; a
request may lower it with ``search.timeout_s``. At the deadline the search is cancelled,
which aborts every engine request it still has running, and then either

- ``search.on_timeout = "best"`` (default): the answer is the highest-reward response
  scored so far (complete ones preferred over partial ones), and the report says
  ``deadline_hit: true``; with nothing scored yet it fails like "error";
- ``"error"``: the request fails with 504 and an OpenAI error JSON.
"""

from __future__ import annotations

import asyncio

from search.errors import DeadlineExceeded
from search.strategy import SearchContext, SearchStrategy
from search.types import Candidate, Completion, SearchResult


async def run_with_deadline(
    strategy: SearchStrategy, ctx: SearchContext, timeout_s: float, on_timeout: str
) -> SearchResult:
    try:
        return await asyncio.wait_for(strategy.run(ctx), timeout_s)
    except TimeoutError:
        pass
    best = best_scored(ctx)
    if on_timeout == "error" or best is None:
        raise DeadlineExceeded(
            f"the search did not finish within {timeout_s:g} s"
            + ("" if on_timeout == "error" else " and had scored no response yet"),
            param="search.timeout_s",
        )
    details = {"deadline_hit": True, "answer_was_partial": best.completion.finish_reason != "stop"}
    return SearchResult(ranked=[best], candidates=[best], budget=ctx.budget, details=details)


def best_scored(ctx: SearchContext) -> Candidate | None:
    """The highest-reward response scored so far, complete ones before partial ones
    (a partial score rates a prefix, not an answer); ties to the earlier. Only responses
    that start with the text already streamed (``ctx.committed``) qualify."""
    eligible = [i for i, (text, _, _) in enumerate(ctx.scored) if text.startswith(ctx.committed)]
    if not eligible:
        return None
    order = sorted(eligible, key=lambda i: (ctx.scored[i][2], -ctx.scored[i][1], i))
    text, reward, partial = ctx.scored[order[0]]
    completion = Completion(
        token_ids=tuple(ctx.tokenizer.encode(text)),
        text=text,
        # A partial response was cut by the deadline: report it as cut at length.
        finish_reason="length" if partial else "stop",
    )
    return Candidate(completion, reward)
