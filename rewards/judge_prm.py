"""The generative judge as a process reward model: it rates the latest step of a response
in context (the embedded default PRM, so the step searches run on the CPU with no
download).

Each call asks the judge (rewards/judge.py) to rate the response so far by one criterion,
its last step, and reads the expected 1-9 score from the score tokens' probabilities, in
[0, 1]. A response given as one step (its first, or any with the step searches'
``aggregation: model``, reward_hub's whole response as one step) is rated whole
(``WHOLE_CRITERIA``): its "last paragraph" would be only part of that one step.

In the judge's continuation layout the prompt continues the generation's own context
(the prefix cache holds the conversation and the steps), so a step costs the question's
tokens; in the separate layout the steps are re-rendered as text.

The request's ``search.rubric`` is not applied here: a PRM rates steps by its own
criterion, and the rubric stays with the outcome reward.
"""

from __future__ import annotations

from collections.abc import Sequence

from rewards.batcher import gather_or_cancel
from search.protocols import RewardModel
from search.types import Message

# Replaces the judge's criteria (about 25 tokens in the continuation layout).
STEP_CRITERIA = (
    "Judge only the last step (the last paragraph): is it correct, and does it lead "
    "toward a right final answer?"
)
# For a response given as one step.
WHOLE_CRITERIA = (
    "Judge the response so far as one step: is it correct, and does it lead toward a right "
    "final answer?"
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
        whole = [i for i, s in enumerate(steps) if len(s) <= 1]
        stepped = [i for i, s in enumerate(steps) if len(s) > 1]
        groups = [(g, c) for g, c in ((stepped, STEP_CRITERIA), (whole, WHOLE_CRITERIA)) if g]
        calls = [
            self.judge.score(
                conversation,
                ["".join(steps[i]) for i in group],
                partial=False,
                rubric=criteria,
                token_ids=None if ids is None else [ids[i] for i in group],
            )
            for group, criteria in groups
        ]
        scores = [0.0] * len(steps)
        # The first failure cancels the other call: its scores could not be used.
        for (group, _), got in zip(groups, await gather_or_cancel(calls), strict=True):
            for i, score in zip(group, got, strict=True):
                scores[i] = score
        return scores
