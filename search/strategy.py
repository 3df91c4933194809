"""The strategy base class.

A strategy is a small pydantic model whose fields are its validated options; the
registry maps an algorithm name to its class. The strategy receives the generator and
reward model through the context (search.context); it never constructs them.
"""

from __future__ import annotations

import math
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

from search.budget import Work
from search.context import SearchContext
from search.types import SearchResult


class SearchStrategy(BaseModel):
    """Base of every algorithm. Subclasses set ``name`` and implement ``run``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: ClassVar[str]
    # Strategies that need per-token logprobs from the engine set this (or override
    # ``wants_logprobs`` when only some of their options need them).
    needs_logprobs: ClassVar[bool] = False
    # Whether the server's --default-n applies when a request names no n (false for a
    # strategy whose n is fixed).
    takes_default_n: ClassVar[bool] = True
    # Whether it scores partial responses step by step with a process reward model (the
    # step searches; a request's search.prm applies only to those).
    scores_steps: ClassVar[bool] = False
    # Whether every response it answers with is sampled whole, in one engine call from
    # the prompt, under the request's sampling: then a structured-output grammar
    # (search.constraint) holds for every candidate. Searches that continue a partial
    # response in a new call would restart the grammar there, and a rewrite samples
    # free text: they leave it False, and the server refuses a grammar for them.
    honours_constraints: ClassVar[bool] = False
    # Whether it continues partial responses only through SearchContext.generate and
    # generate_stream, from the request's prompt: then each continuation can decode under
    # the grammar for the rest of its response (SearchContext.constraint_after).
    continues_constraints: ClassVar[bool] = False

    n: int = Field(default=4, ge=1, strict=True, description="number of candidate responses")

    def wants_logprobs(self) -> bool:
        """Whether this search, with these options, reads the samples' logprobs."""
        return self.needs_logprobs

    def peak_candidates(self) -> int:
        """The most responses this search keeps alive at once (for the server's limit)."""
        return self.n

    def samples_per_call(self) -> int:
        """The most samples one answer-producing engine call asks for (n of a vLLM request).
        Greedy decoding (temperature 0) has one answer, so above 1 it is refused up front."""
        return self.n

    def parallel_samples(self) -> int:
        """The most responses it draws from one same context: above 1, greedy decoding
        (temperature 0) makes them identical, so the server refuses it up front. The
        samples of one call by default; the step searches start N paths from the prompt
        (one request each for particle_filtering), so N."""
        return self.samples_per_call()

    def worst_case(self, max_tokens: int) -> Work:
        """The most this search can spend at ``max_tokens`` (search.budget): an upper
        bound, checked against the server's limits before it runs. An option out of bounds
        for this max_tokens raises InvalidRequest naming it.

        The default is the one-shot shape: peak_candidates responses of max_tokens each,
        sampled samples_per_call at a time, each scored once. Searches that go in rounds
        override it."""
        peak = self.peak_candidates()
        return Work(
            tokens=peak * max_tokens,
            engine_calls=math.ceil(peak / self.samples_per_call()),
            reward_items=peak,
        )

    def fit_live_limit(self, max_live: int) -> None:
        """Lower a default that would use all the room there is (speculative rejection's
        n_initial) to the server's ``max_live`` live candidates, so a request that left it
        out is admitted; an option the client set is never changed. Called by the server
        before it checks peak_candidates."""

    async def preflight(self) -> None:
        """Checks too costly for the request's validation (which runs on the event loop
        before admission): the server awaits it inside the search's slot and deadline,
        before ``run``. Raises InvalidRequest naming the option."""

    async def run(self, ctx: SearchContext) -> SearchResult:
        raise NotImplementedError
