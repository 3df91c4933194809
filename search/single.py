"""One response, no search (``none``).

Rule: sample one response with the request's sampling parameters and answer with it; the
reward model is not called (the report's ``chosen_reward`` is null). This is what a plain
vLLM server does, and what the server runs for ``temperature: 0`` without a ``search``
object: greedy decoding has a single answer, so there is nothing to search over (see
``server.chat.serving``). Not from a paper.

Budget: one engine call of one sample; no reward call.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from search.context import SearchContext
from search.strategy import SearchStrategy
from search.types import Candidate, SearchResult


class SingleResponse(SearchStrategy):
    name = "none"
    honours_constraints = True
    takes_default_n = False

    n: Literal[1] = Field(default=1, description="one response: there is no search")

    async def run(self, ctx: SearchContext) -> SearchResult:
        with ctx.budget.phase("generate"):
            completions = await ctx.generate(ctx.prompt_ids, ctx.sampling.max_tokens, 1)
        candidates = [Candidate(c, 0.0) for c in completions]
        return SearchResult(ranked=candidates, candidates=candidates, budget=ctx.budget)
