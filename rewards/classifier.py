"""Hugging Face sequence-classification reward model (Skywork-Reward, ArmoRM-style heads,
OpenAssistant deberta): the conversation plus the response is rendered with the reward
model's own chat template and the first logit is the reward. bf16 on CUDA, float32 on CPU.
Rendering, tokenizing and torch all run on one worker thread, never on the event loop.

Long inputs keep the response. The model reads at most ``max_length`` tokens, and a
tokenizer truncates from the right by default: past the limit the response itself would
be cut, every candidate would score the same, and the choice would be arbitrary without
any error. So the oldest turns are left out first (``fit_text``: rewards.fit's ``turns``
stage, keeping the system prompt, the last user turn and the response), and what is still
too long is cut from the left (``truncation_side = "left"``): the start of the system
prompt goes before a single token of the response. A reward that is not finite fails the
call (``reason="non_finite"``).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from rewards.batcher import ScoreItem
from rewards.fit import Shortened, fit
from rewards.judge import render_conversation
from search.errors import RewardUnavailable
from search.types import Message


def prepare_tokenizer(tokenizer: Any) -> Any:
    """Pad with EOS when there is no pad token; truncate from the left (module docstring)."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.truncation_side = "left"
    return tokenizer


def render(tokenizer: Any, conversation: Sequence[Message], response: str) -> str:
    messages = [*conversation, {"role": "assistant", "content": response}]
    if tokenizer.chat_template:
        return str(tokenizer.apply_chat_template(messages, tokenize=False))
    return render_conversation(messages)


def fit_text(
    tokenizer: Any, conversation: Sequence[Message], response: str, max_length: int
) -> str:
    """The rendered input, with the oldest turns left out while it is over ``max_length``
    tokens (it may still be over: then the tokenizer cuts it from the left)."""

    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    start = Shortened.of(conversation, response)
    _, text, _ = fit(
        start,
        lambda s: render(tokenizer, s.conversation(), s.response_text),
        count,
        max_length,
        count,
        stages=("turns",),
    )
    return text


class ClassifierReward:
    # The head's raw output (logits): no known range.
    bounds = None
    # Scores the texts; token ids are not read.
    takes_token_ids = False

    def __init__(self, model: str, *, batch_size: int = 16, max_length: int = 4096) -> None:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self._torch = torch
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = torch.bfloat16 if self.device == "cuda" else torch.float32
        self.tokenizer: Any = prepare_tokenizer(AutoTokenizer.from_pretrained(model))
        self.model: Any = AutoModelForSequenceClassification.from_pretrained(model, dtype=dtype)
        # Sequence classifiers pool at the last non-pad token: they must know the pad id.
        self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.model.to(self.device).eval()
        self.batch_size = batch_size
        self.max_length = max_length
        # One thread: torch already uses every core, and batches must not interleave.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="reward")

    def render(self, conversation: Sequence[Message], response: str) -> str:
        return render(self.tokenizer, conversation, response)

    async def score(
        self,
        conversation: Sequence[Message],
        responses: Sequence[str],
        *,
        partial: bool = False,
        rubric: str | None = None,
        token_ids: Sequence[Sequence[int]] | None = None,
    ) -> list[float]:
        return await self.score_items([ScoreItem(conversation, r, partial) for r in responses])

    async def score_items(self, items: Sequence[ScoreItem]) -> list[float]:
        # An outcome model has no partial mode: a prefix is scored as a response.
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.score_items_sync, list(items))

    def score_items_sync(self, items: Sequence[ScoreItem]) -> list[float]:
        texts = [
            fit_text(self.tokenizer, it.conversation, it.response, self.max_length) for it in items
        ]
        return self.score_texts(texts)

    def score_texts(self, texts: Sequence[str]) -> list[float]:
        rewards: list[float] = []
        with self._torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                batch = self.tokenizer(
                    list(texts[start : start + self.batch_size]),
                    return_tensors="pt",
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    add_special_tokens=False,
                ).to(self.device)
                logits = self.model(**batch).logits
                rewards.extend(logits[:, 0].float().cpu().tolist())
        if not all(math.isfinite(r) for r in rewards):
            raise RewardUnavailable(
                "the classifier returned a non-finite reward", reason="non_finite"
            )
        return rewards
