"""Fakes shared by the tests of the searches that score prefixes.

The fakes are one token per character; the chat prompt renders as "<user>hi<assistant>"
and a continuation's prompt is that plus the response so far, so PromptTableGenerator's
tables read as "which continuations follow this prefix". Every completion has log pi
-0.1 per token.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from search.context import SearchContext
from search.fakes import PromptTableGenerator, TableReward, fake_context
from search.types import Message, SamplingConfig

P = "<user>hi<assistant>"
# Roots with segments of 2 tokens: "aa", "bb", "dd" are cut (live), "c" stopped (finished).
ROOTS = {P: ["aaXX", "bbYY", "c", "ddZZ"]}


def context(
    generator: PromptTableGenerator,
    reward: TableReward,
    max_tokens: int,
    seed: int | None = 7,
    **kw: object,
) -> SearchContext:
    sampling = SamplingConfig(max_tokens=max_tokens, seed=seed, logprobs=True)
    return fake_context(generator, reward, sampling, **kw)  # type: ignore[arg-type]


@dataclass
class TwoRubricReward(TableReward):
    """A judge whose two rubrics differ in level: ``table`` answers partial=False (the
    complete rubric), ``partial_table`` partial=True (the unfinished one)."""

    partial_table: Mapping[str, float] = field(default_factory=dict)

    async def score(
        self,
        conversation: Sequence[Message],
        responses: Sequence[str],
        *,
        partial: bool = False,
        rubric: str | None = None,
        token_ids: Sequence[Sequence[int]] | None = None,
    ) -> list[float]:
        complete = await super().score(conversation, responses, partial=partial)
        return [self.partial_table[r] for r in responses] if partial else complete
