"""The policy model's Hugging Face tokenizer: the chat template is rendered once per request."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from search.types import Message


class HFChatTokenizer:
    def __init__(self, tokenizer: Any) -> None:
        self._tok = tokenizer

    @classmethod
    def load(cls, model: str) -> HFChatTokenizer:
        from transformers import AutoTokenizer

        return cls(AutoTokenizer.from_pretrained(model))

    @property
    def eos_token_id(self) -> int | None:
        return self._tok.eos_token_id  # type: ignore[no-any-return,unused-ignore]

    def render_chat(self, messages: Sequence[Message]) -> list[int]:
        # Render to text, then encode without adding special tokens: the template already
        # holds them, and encoding the text avoids version-specific return types.
        text = self._tok.apply_chat_template(
            list(messages), tokenize=False, add_generation_prompt=True
        )
        return self.encode(text)

    def render_with_prefix(self, messages: Sequence[Message], assistant_prefix: str) -> list[int]:
        """The conversation rendered up to the assistant turn, then ``assistant_prefix``."""
        return self.render_chat(messages) + self.encode(assistant_prefix)

    def encode(self, text: str) -> list[int]:
        return list(self._tok.encode(text, add_special_tokens=False))

    def decode(self, token_ids: Sequence[int]) -> str:
        return str(self._tok.decode(list(token_ids), skip_special_tokens=True))

    def vocab(self) -> dict[str, int]:
        return dict(self._tok.get_vocab())

    def token_id(self, token: str) -> int:
        ids = self.encode(token)
        if len(ids) != 1:
            raise ValueError(f"{token!r} is not a single token for this tokenizer")
        return ids[0]
