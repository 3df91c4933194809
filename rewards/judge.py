"""Generative judge: the reward is the expected rubric score under the judge model's
next-token probabilities of the score tokens "1".."9", read from one forward pass per
response (max_tokens=1, top-20 logprobs). Nothing is sampled and no text is parsed, so a
small judge model still yields a graded, always-defined reward.

Rewards are normalised to [0, 1]: 0 is a certain "1", 1 a certain "9".
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Mapping, Sequence

from rewards.batcher import ScoreItem
from search.engines.tokenizer import HFChatTokenizer
from search.protocols import Generator
from search.types import Message, SamplingConfig

logger = logging.getLogger(__name__)

SCORES = tuple(range(1, 10))
TOP_LOGPROBS = 20  # vLLM's default max_logprobs

RUBRIC = (
    "You are a strict and fair judge of AI assistant answers. Rate how helpful, correct, "
    "relevant and clear the assistant's response is for the user's last message, on a scale "
    "from 1 (useless or wrong) to 9 (excellent). Reply with a single digit."
)
PARTIAL_NOTE = "The response is unfinished; rate how good it is so far and how promising."
SCORE_PREFIX = "Score: "


def render_conversation(conversation: Sequence[Message]) -> str:
    return "\n\n".join(f"[{m['role']}]\n{m['content']}" for m in conversation)


def rubric_task(rubric: str) -> str:
    """A request's own criteria (search.rubric) in place of RUBRIC; the 1-9 scale and the
    single-digit reply stay the judge's, so the score is read the same way."""
    return (
        "You are a strict and fair judge of AI assistant answers. Judge the assistant's "
        f"response to the user's last message by these criteria:\n{rubric}\n"
        "Rate it from 1 (fails the criteria) to 9 (meets them fully). Reply with a single digit."
    )


def judge_messages(
    conversation: Sequence[Message], response: str, partial: bool, rubric: str | None = None
) -> list[Message]:
    """The judge's prompt. The criteria come first (the system message), so every request
    with the same rubric shares a cached prefix."""
    task = RUBRIC if rubric is None else rubric_task(rubric)
    if partial:
        task = f"{task} {PARTIAL_NOTE}"
    body = (
        f"Conversation:\n{render_conversation(conversation)}\n\n"
        f"Assistant's response:\n{response}\n\n"
        "Rate the response from 1 to 9."
    )
    return [{"role": "system", "content": task}, {"role": "user", "content": body}]


def digit_score(probs: Mapping[int, float]) -> float | None:
    """Expected score in [0, 1] from (unnormalised) probabilities of the scores 1..9,
    renormalised over those present; None when they hold no probability."""
    total = sum(probs.values())
    if not (total > 0.0 and math.isfinite(total)):
        return None
    mean = sum(score * p for score, p in probs.items()) / total
    return (mean - SCORES[0]) / (SCORES[-1] - SCORES[0])


def expected_score(top_logprobs: Mapping[int, float], score_token_ids: Sequence[int]) -> float:
    """Expected score in [0, 1] from the score tokens' probabilities, renormalised over
    those present in the top-k. With none present, the midpoint (no information; after the
    "Score: " prefill the digits hold nearly all the mass, so this is rare)."""
    probs = {
        score: math.exp(top_logprobs[tok])
        for score, tok in zip(SCORES, score_token_ids, strict=True)
        if tok in top_logprobs
    }
    score = digit_score(probs)
    return 0.5 if score is None else score


class JudgeReward:
    # Expected scores normalised to [0, 1] (see expected_score).
    bounds = (0.0, 1.0)

    def __init__(self, generator: Generator, tokenizer: HFChatTokenizer) -> None:
        self._generator = generator
        self._tokenizer = tokenizer
        self._score_ids = [tokenizer.token_id(str(s)) for s in SCORES]
        self._params = SamplingConfig(max_tokens=1, temperature=0.0, top_logprobs=TOP_LOGPROBS)

    async def score(
        self,
        conversation: Sequence[Message],
        responses: Sequence[str],
        *,
        partial: bool = False,
        rubric: str | None = None,
    ) -> list[float]:
        items = [ScoreItem(conversation, r, partial, rubric) for r in responses]
        return await self.score_items(items)

    async def score_items(self, items: Sequence[ScoreItem]) -> list[float]:
        prompts = [
            self._tokenizer.render_with_prefix(
                judge_messages(it.conversation, it.response, it.partial, it.rubric), SCORE_PREFIX
            )
            for it in items
        ]
        # Submitted together, so the engine batches them; the shared rubric prefix is cached.
        outputs = await asyncio.gather(
            *(self._generator.generate(p, self._params, 1) for p in prompts)
        )
        rewards = []
        for out in outputs:
            steps = out[0].top_logprobs
            rewards.append(expected_score(steps[0] if steps else {}, self._score_ids))
        return rewards
