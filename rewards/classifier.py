"""Hugging Face sequence-classification reward model (Skywork-Reward, ArmoRM-style heads,
OpenAssistant deberta): the conversation plus the response is rendered with the reward
model's own chat template and the first logit is the reward. bf16 on CUDA, float32 on CPU.
Torch runs on one worker thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from rewards.batcher import ScoreItem
from rewards.judge import render_conversation
from search.types import Message


class ClassifierReward:
    def __init__(self, model: str, *, batch_size: int = 16, max_length: int = 4096) -> None:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self._torch = torch
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = torch.bfloat16 if self.device == "cuda" else torch.float32
        self.tokenizer: Any = AutoTokenizer.from_pretrained(model)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model: Any = AutoModelForSequenceClassification.from_pretrained(model, dtype=dtype)
        # Sequence classifiers pool at the last non-pad token: they must know the pad id.
        self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.model.to(self.device).eval()
        self.batch_size = batch_size
        self.max_length = max_length
        # One thread: torch already uses every core, and batches must not interleave.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="reward")

    def render(self, conversation: Sequence[Message], response: str) -> str:
        messages = [*conversation, {"role": "assistant", "content": response}]
        if self.tokenizer.chat_template:
            return str(self.tokenizer.apply_chat_template(messages, tokenize=False))
        return render_conversation(messages)

    async def score(
        self, conversation: Sequence[Message], responses: Sequence[str], *, partial: bool = False
    ) -> list[float]:
        return await self.score_items([ScoreItem(conversation, r, partial) for r in responses])

    async def score_items(self, items: Sequence[ScoreItem]) -> list[float]:
        # An outcome model has no partial mode: a prefix is scored as a response.
        texts = [self.render(it.conversation, it.response) for it in items]
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.score_texts, texts)

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
        return rewards
