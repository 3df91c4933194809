"""The two swap points of the search layer. Engines and reward models implement these."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from search.types import Completion, Message, SamplingConfig


class Generator(Protocol):
    """Token ids in, completions out. Cancelling the awaiting task aborts the engine work."""

    async def generate(
        self, prompt_ids: Sequence[int], params: SamplingConfig, n: int = 1
    ) -> list[Completion]: ...


class RewardModel(Protocol):
    """Scores responses to a conversation; implementations batch internally."""

    async def score(
        self, conversation: Sequence[Message], responses: Sequence[str], *, partial: bool = False
    ) -> list[float]: ...


class ChatTokenizer(Protocol):
    """The policy model's tokenizer: renders the chat template once and decodes token ids."""

    def render_chat(self, messages: Sequence[Message]) -> list[int]: ...

    def decode(self, token_ids: Sequence[int]) -> str: ...

    def encode(self, text: str) -> list[int]: ...
