"""The generative judge as a process reward model: it rates the latest step of a response
in context (the embedded default PRM, so the step searches run on the CPU with no
download).

Each call asks the judge (rewards/judge.py) to rate the response so far by one criterion,
its last step, and reads the expected 1-9 score from the score tokens' probabilities, in
[0, 1]. In the judge's continuation layout the prompt continues the generation's own
context (the prefix cache holds the conversation and the steps), so a step costs the
question's tokens; in the separate layout the steps are re-rendered as text.

The request's ``search.rubric`` is not applied here: a PRM rates steps by its own
criterion, and the rubric stays with the outcome reward.
"""

from __future__ import annotations

from collections.abc import Sequence

from search.protocols import RewardModel
from search.types import Message

# Replaces the judge's criteria (about 25 tokens in the continuation layout).
STEP_CRITERIA = (
    "Judge only the last step (the last paragraph): is it correct, and does it lead "
    "toward a right final answer?"
)


class JudgePRM:
    bounds = (0.0, 1.0)
    takes_token_ids = True

    def __init__(self, judge: RewardModel) -> None:
        # The judge reward model (the server wraps it with batching and its timeout).
        self.judge = judge

    async def score_last_steps(
        self,
        conversation: Sequence[Message],
        steps: Sequence[Sequence[str]],
        *,
        token_ids: Sequence[Sequence[int]] | None = None,
    ) -> list[float]:
        ids = token_ids if self.judge.takes_token_ids else None
        responses = ["".join(s) for s in steps]
        return await self.judge.score(
            conversation, responses, partial=False, rubric=STEP_CRITERIA, token_ids=ids
        )
