"""The per-request context a strategy runs in, and the concurrency helpers every
search uses to call the generator (``gather_all``, ``generate_each``).

``SearchContext`` holds the models, the prompt and the sampling, and counts what the
search spends (search.budget) as it calls them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from search.budget import BudgetExhausted, SearchLimits, Work, first_over, trim_scored
from search.constraint import OutputConstraint
from search.errors import EngineUnavailable, RewardUnavailable
from search.protocols import (
    BatchGenerator,
    ChatTokenizer,
    Generator,
    ProcessRewardModel,
    RewardModel,
    StreamingGenerator,
    TokenScorer,
    Utility,
)
from search.types import Budget, Completion, Message, SamplingConfig

T = TypeVar("T")


class Generated(Protocol):
    """A response generated from the request's prompt: its text and its token ids."""

    @property
    def text(self) -> str: ...

    @property
    def token_ids(self) -> Sequence[int]: ...


@dataclass
class SearchContext:
    """Everything one request gives a strategy: the models, the prompt, the sampling."""

    generator: Generator
    reward: RewardModel
    tokenizer: ChatTokenizer
    conversation: Sequence[Message]
    prompt_ids: list[int]
    sampling: SamplingConfig
    budget: Budget = field(default_factory=Budget)
    # MBR utilities by name ("embedding", "chrf"); strategies that need one look it up.
    utilities: Mapping[str, Utility] = field(default_factory=dict)
    # TreeBoN's implicit DPO reward log pi_dpo - log pi_ref: the DPO-trained model and its
    # reference, both scoring by prompt logprobs; the server configures both or neither.
    dpo: TokenScorer | None = None
    reference: TokenScorer | None = None
    # The process reward model the step searches score each step with (search.prm).
    prm: ProcessRewardModel | None = None
    # Engine requests issued so far; continuations derive their seeds from it.
    calls_made: int = 0
    # Every (text, reward, partial) scored so far: what a search cut off by its deadline
    # can still answer with. Within limits.kept_chars characters (see keep_scored).
    scored: list[tuple[str, float, bool]] = field(default_factory=list)
    # Text every answer the search can still give starts with (see commit_common_prefix),
    # and who hears it grow: a stream sends it before the search ends.
    committed: str = ""
    on_commit: Callable[[str], None] | None = None
    # What this search may spend (search.budget); None: no limit (offline evaluation).
    limits: SearchLimits | None = None
    # For a search that continues partial responses under a structured-output grammar:
    # the constraint for the rest of a response after its text so far (the server's
    # server.continuation); None: every call decodes under the request's own constraint.
    constraint_after: Callable[[str], OutputConstraint] | None = None
    # The most the calls still running may spend, reserved when they start.
    in_flight: Work = field(default_factory=Work, init=False, repr=False)
    kept_chars: int = field(default=0, init=False, repr=False)

    def sampling_for(self, max_tokens: int, own: SamplingConfig | None = None) -> SamplingConfig:
        """The request's sampling (or ``own``, for a call that is not part of the answer)
        with a segment's max_tokens. Every call gets its own seed derived from the
        request's, so a seeded search is reproducible and two calls never repeat each
        other's samples (see ``call_seed``)."""
        seed = self.sampling.seed
        call = None if seed is None else call_seed(seed, self.calls_made)
        self.calls_made += 1
        base = self.sampling if own is None else own
        return dataclasses.replace(base, max_tokens=max_tokens, seed=call)

    def continued(self, params: SamplingConfig, prompt_ids: Sequence[int]) -> SamplingConfig:
        """``params`` with the grammar for the rest of the response that ``prompt_ids``
        holds after the request's prompt (see ``constraint_after``)."""
        if params.constraint is None or self.constraint_after is None:
            return params
        partial = self.tokenizer.decode(prompt_ids[len(self.prompt_ids) :])
        return dataclasses.replace(params, constraint=self.constraint_after(partial))

    async def generate(
        self,
        prompt_ids: Sequence[int],
        max_tokens: int,
        n: int = 1,
        *,
        sampling: SamplingConfig | None = None,
    ) -> list[Completion]:
        """One engine call for n samples of up to max_tokens, counted in the budget.

        Calls that produce (part of) an answer use the client's sampling. A call whose
        output is not an answer (DARWIN's instruction rewrite) passes its own ``sampling``,
        so the client's stop strings, penalties and temperature never reach it."""
        with self.spending(Work(tokens=n * max_tokens, engine_calls=1)):
            params = self.sampling_for(max_tokens, sampling)
            if sampling is None:
                params = self.continued(params, prompt_ids)
            completions = await self.generator.generate(prompt_ids, params, n)
            self.budget.count_generation(completions)
        return completions

    async def generate_stream(
        self, prompt_ids: Sequence[int], max_tokens: int, n: int = 1
    ) -> AsyncIterator[list[tuple[int, Completion]]]:
        """``generate``, with the samples yielded as they finish (lists of (index,
        completion), every index once) when the generator streams, else all at the end."""
        with self.spending(Work(tokens=n * max_tokens, engine_calls=1)):
            params = self.continued(self.sampling_for(max_tokens), prompt_ids)
            done: list[Completion] = []
            if not isinstance(self.generator, StreamingGenerator):
                done = await self.generator.generate(prompt_ids, params, n)
                yield list(enumerate(done))
            else:
                stream = self.generator.generate_stream(prompt_ids, params, n)
                async with contextlib.aclosing(stream) as finished:
                    async for group in finished:
                        done += [c for _, c in group]
                        yield group
            self.budget.count_generation(done)

    async def score(
        self,
        responses: Sequence[str],
        *,
        partial: bool,
        token_ids: Sequence[Sequence[int]] | None = None,
    ) -> list[float]:
        """One reward call against the request's conversation, counted in the budget.
        ``token_ids``: per response, the ids it was generated from (prompt, then the
        response's own), for a reward that reads them (the judge's continuation layout)."""
        if not responses:
            return []
        ids = token_ids if token_ids and self.reward.takes_token_ids else None
        with self.spending(Work(reward_items=len(responses))):
            rewards = await self.reward.score(
                self.conversation, responses, partial=partial, token_ids=ids
            )
            self.budget.count_scoring(len(responses))
        self.keep_scored([(t, r, partial) for t, r in zip(responses, rewards, strict=True)])
        return rewards

    async def score_generated(
        self, responses: Sequence[Generated], *, partial: bool
    ) -> list[float]:
        """``score`` for responses (completions, partial responses) generated from
        ``prompt_ids``: their token ids go along, so the judge continues their context."""
        return await self.score(
            [r.text for r in responses],
            partial=partial,
            token_ids=[[*self.prompt_ids, *r.token_ids] for r in responses],
        )

    async def score_last_steps(
        self, steps: Sequence[Sequence[str]], token_ids: Sequence[Sequence[int]]
    ) -> list[float]:
        """One process-reward call: per response (its steps, and its generated token ids),
        the score of its last step. Counted in the budget as a reward call."""
        if not steps:
            return []
        if self.prm is None:
            # Configured at start-up, not by the client: a server fault, so 503.
            raise EngineUnavailable("this server has no process reward model (--prm)")
        ids = [[*self.prompt_ids, *t] for t in token_ids]
        read = ids if self.prm.takes_token_ids else None
        with self.spending(Work(reward_items=len(steps))):
            scores = await self.prm.score_last_steps(self.conversation, steps, token_ids=read)
            self.budget.count_scoring(len(steps))
        if len(scores) != len(steps):
            raise RewardUnavailable(
                "the process reward model returned the wrong number of scores", reason="bad_value"
            )
        if not all(math.isfinite(s) for s in scores):
            raise RewardUnavailable(
                "the process reward model returned a score that is not finite",
                reason="non_finite",
            )
        return [float(s) for s in scores]

    @contextmanager
    def spending(self, work: Work) -> Iterator[None]:
        """Admit a call that may spend up to ``work``, or raise BudgetExhausted if what was
        spent, what the calls still running may spend and ``work`` together could pass a
        limit; while it runs, ``work`` is reserved, so calls started together (gather_all)
        cannot pass a limit between them. Count what it spent before leaving."""
        if self.limits is not None:
            spent = Work.spent(self.budget)
            over = first_over(self.limits, spent + self.in_flight + work, only=work)
            if over is not None:
                raise BudgetExhausted(over, getattr(self.limits, over))
        self.in_flight += work
        try:
            yield
        finally:
            self.in_flight -= work

    def keep_scored(self, entries: Sequence[tuple[str, float, bool]]) -> None:
        """Keep scored responses for the deadline fallback. Over limits.kept_chars, trim to
        half of it (search.budget.trim_scored), so trims are rare and the text kept is
        bounded whatever the search's length."""
        self.scored += entries
        self.kept_chars += sum(len(text) for text, _, _ in entries)
        if self.limits is not None and self.kept_chars > self.limits.kept_chars:
            self.scored = trim_scored(self.scored, self.committed, self.limits.kept_chars // 2)
            self.kept_chars = sum(len(text) for text, _, _ in self.scored)

    def commit_common_prefix(self, texts: Sequence[str]) -> None:
        """Called by searches that narrow: every answer still possible extends one of
        ``texts`` (responses grow by appending segments), so their common prefix is final.
        It only grows, since later sets descend from earlier ones."""
        prefix = os.path.commonprefix(list(texts))  # noqa: RUF071 (a text prefix is meant)
        if len(prefix) > len(self.committed) and prefix.startswith(self.committed):
            self.committed = prefix
            if self.on_commit is not None:
                self.on_commit(prefix)

    def utility(self, name: str) -> Utility:
        found = self.utilities.get(name)
        if found is None:
            # Configured at start-up, not by the client: a server fault, so 503.
            raise EngineUnavailable(f"the {name!r} utility is not available on this server")
        return found


def call_seed(seed: int, call: int) -> int:
    """The seed of a search's ``call``-th engine request. The first keeps the request's
    seed (a seeded Best-of-N samples what a seeded vLLM request with n would). Later ones
    are scattered by a splitmix64 step: vLLM seeds the samples of one request seed,
    seed + 1, ..., seed + n - 1, so consecutive call seeds would redraw the previous
    call's samples (with seed + 1, three of four again)."""
    if call == 0:
        return seed % 2**63
    x = (seed + call * 0x9E3779B97F4A7C15) % 2**64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) % 2**64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) % 2**64
    return (x ^ (x >> 31)) % 2**63


async def gather_all(aws: Sequence[Awaitable[T]]) -> list[T]:
    """asyncio.gather that cancels the siblings when one fails or the caller is
    cancelled, so no engine request outlives the search that issued it."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        return list(await asyncio.gather(*tasks))
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def generate_each(
    generator: Generator, prompts: Sequence[Sequence[int]], params: SamplingConfig
) -> list[Completion]:
    """One completion for each of ``prompts``, submitted together: in one call when the
    generator is a BatchGenerator (a remote engine: one HTTP request), else as
    concurrent calls (an in-process engine batches them itself; see gather_all)."""
    if isinstance(generator, BatchGenerator):
        return list(await generator.generate_batch(prompts, params))
    outs = await gather_all([generator.generate(p, params, 1) for p in prompts])
    return [out[0] for out in outs]
