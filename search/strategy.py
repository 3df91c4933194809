"""The strategy base class, the per-request context, and selection as pure functions.

A strategy is a small pydantic model whose fields are its validated options; the
registry maps an algorithm name to its class. The strategy receives the generator and
reward model through the context; it never constructs them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

from search.protocols import ChatTokenizer, Generator, RewardModel
from search.types import Budget, Candidate, Message, SamplingConfig, SearchResult


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


class SearchStrategy(BaseModel):
    """Base of every algorithm. Subclasses set ``name`` and implement ``run``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: ClassVar[str]
    # Strategies that need per-token logprobs from the engine set this.
    needs_logprobs: ClassVar[bool] = False

    n: int = Field(default=4, ge=1, strict=True, description="number of candidate responses")

    async def run(self, ctx: SearchContext) -> SearchResult:
        raise NotImplementedError


def rank_candidates(candidates: Sequence[Candidate]) -> list[Candidate]:
    """Best first; ties keep generation order, so the choice is deterministic."""
    order = sorted(range(len(candidates)), key=lambda i: (-candidates[i].reward, i))
    return [candidates[i] for i in order]


def top_distinct(ranked: Sequence[Candidate], k: int) -> list[Candidate]:
    """The k best candidates with distinct texts; repeats fill in only if too few are distinct."""
    distinct: list[Candidate] = []
    repeats: list[Candidate] = []
    seen: set[str] = set()
    for cand in ranked:
        (repeats if cand.text in seen else distinct).append(cand)
        seen.add(cand.text)
    return (distinct + repeats)[:k]


async def sample_and_score(ctx: SearchContext, n: int) -> list[Candidate]:
    """Sample n complete responses in one engine call and score them in one reward call."""
    with ctx.budget.phase("generate"):
        completions = await ctx.generator.generate(ctx.prompt_ids, ctx.sampling, n)
    ctx.budget.count_generation(completions)
    with ctx.budget.phase("score"):
        rewards = await ctx.reward.score(ctx.conversation, [c.text for c in completions])
    ctx.budget.count_scoring(len(completions))
    return [Candidate(c, r) for c, r in zip(completions, rewards, strict=True)]


def finish(ctx: SearchContext, candidates: list[Candidate]) -> SearchResult:
    return SearchResult(
        ranked=rank_candidates(candidates), candidates=candidates, budget=ctx.budget
    )
