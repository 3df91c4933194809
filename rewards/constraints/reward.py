"""Verifiable constraints as a reward model: the fraction of constraints a response meets.

Verdicts score pass 1, fail 0 and undecided 0.5: an undecided constraint on a prefix is
a coin flip. A prefix that already broke a constraint for good then ranks below one that
still may meet it, so tree searches prune on final verdicts, and only on them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from rewards.constraints.base import Constraint, Verdict
from search.types import Message

# Up to this many characters in one call the checks run inline (a few ms at most).
INLINE_CHARS = 8_000

_POINTS: dict[Verdict, float] = {"pass": 1.0, "fail": 0.0, "undecided": 0.5}


class ConstraintsReward:
    """The search layer's RewardModel over rule checks (IFEval's, through lm-eval): pure
    CPU, milliseconds per ordinary text, so it runs inline without batching; long texts go
    to a worker thread. The
    checks' imports (nltk, lm-eval) take seconds: the server loads them at start
    (``reference.load`` in a worker thread), so no request pays for them."""

    bounds = (0.0, 1.0)
    # Scores the texts; token ids are not read.
    takes_token_ids = False

    def __init__(self, constraints: Sequence[Constraint]) -> None:
        if not constraints:
            raise ValueError("ConstraintsReward needs at least one constraint")
        self.constraints = list(constraints)

    def verdicts(self, text: str, partial: bool) -> list[Verdict]:
        return [c.check(text, partial) for c in self.constraints]

    def loose_verdicts(self, text: str) -> list[Verdict]:
        """IFEval's loose verdicts on a complete text (the response without its first
        and/or last line, or without asterisks, may pass instead)."""
        return [c.check_loose(text) for c in self.constraints]

    def score_text(self, text: str, partial: bool) -> float:
        points = [_POINTS[v] for v in self.verdicts(text, partial)]
        return sum(points) / len(points)

    async def score(
        self,
        conversation: Sequence[Message],
        responses: Sequence[str],
        *,
        partial: bool = False,
        rubric: str | None = None,
        token_ids: Sequence[Sequence[int]] | None = None,
    ) -> list[float]:
        # The conversation is not needed: the constraints were written into the prompt.
        if sum(len(r) for r in responses) <= INLINE_CHARS:
            return [self.score_text(r, partial) for r in responses]
        # Long texts: nltk's tokenizers take about 70 us a character (seconds on 100k), so
        # they run in a worker thread, off the event loop.
        return await asyncio.to_thread(lambda: [self.score_text(r, partial) for r in responses])

    def passed(self, text: str) -> bool:
        return all(v == "pass" for v in self.verdicts(text, partial=False))

    def describe(self) -> list[dict[str, Any]]:
        return [c.model_dump(exclude_none=True) for c in self.constraints]


def instructions(constraints: Sequence[Constraint]) -> str:
    """The constraints' instructions as one paragraph, to append to a prompt."""
    return " ".join(c.instruction() for c in constraints)
