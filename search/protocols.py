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


class Utility(Protocol):
    """Similarity of responses to each other, for minimum-Bayes-risk selection."""

    async def matrix(self, texts: Sequence[str]) -> list[list[float]]:
        """U[i][j] = utility of texts[i] measured against texts[j] as the reference."""
        ...


class ReferenceModel(Protocol):
    """A second model that only scores: log pi_ref of each token of a sequence given the
    tokens before it (vLLM prompt logprobs). Entry 0 has no context and is None."""

    async def token_logprobs(self, token_ids: Sequence[int]) -> list[float | None]: ...


class ChatTokenizer(Protocol):
    """The policy model's tokenizer: renders the chat template once and decodes token ids."""

    def render_chat(self, messages: Sequence[Message]) -> list[int]: ...

    def decode(self, token_ids: Sequence[int]) -> str: ...

    def encode(self, text: str) -> list[int]: ...
