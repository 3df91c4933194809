"""Fakes shipped beside the protocols, for unit tests of logic (never for integration tests).

- ``CharTokenizer``: one token per character (ids are code points); chat rendered as text.
- ``ScriptedGenerator``: answers each call with the next scripted list of texts; a text
  longer than the call's max_tokens is cut there and finishes with "length".
- ``TableReward``: a fixed reward per response text (default for unknown texts).
- ``fake_context``: a SearchContext over these.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from search.protocols import Generator, RewardModel
from search.strategy import SearchContext
from search.types import Completion, Message, SamplingConfig


class CharTokenizer:
    eos_token_id = 0

    def render_chat(self, messages: Sequence[Message]) -> list[int]:
        return self.encode(
            "".join(f"<{m['role']}>{m['content']}" for m in messages) + "<assistant>"
        )

    def render_with_prefix(self, messages: Sequence[Message], assistant_prefix: str) -> list[int]:
        return self.render_chat(messages) + self.encode(assistant_prefix)

    def encode(self, text: str) -> list[int]:
        return [ord(ch) for ch in text]

    def decode(self, token_ids: Sequence[int]) -> str:
        return "".join(chr(t) for t in token_ids)


def completion_of(text: str, finish_reason: str = "stop") -> Completion:
    ids = tuple(ord(ch) for ch in text)
    return Completion(
        token_ids=ids,
        text=text,
        finish_reason="stop" if finish_reason == "stop" else "length",
        cumulative_logprob=-0.1 * len(ids),
        logprobs=tuple(-0.1 for _ in ids),
    )


@dataclass
class ScriptedGenerator:
    """Each generate() call pops the next script entry; a callable entry gets (prompt, n)."""

    script: list[list[str] | Callable[[Sequence[int], int], list[str]]]
    delay_s: float = 0.0
    calls: list[tuple[list[int], SamplingConfig, int]] = field(default_factory=list)

    async def generate(
        self, prompt_ids: Sequence[int], params: SamplingConfig, n: int = 1
    ) -> list[Completion]:
        self.calls.append((list(prompt_ids), params, n))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        entry = self.script.pop(0)
        texts = entry(prompt_ids, n) if callable(entry) else entry
        if len(texts) != n:
            raise AssertionError(f"script gave {len(texts)} texts for n={n}")
        cut = params.max_tokens
        return [completion_of(t[:cut], "length" if len(t) > cut else "stop") for t in texts]


@dataclass
class TableReward:
    table: Mapping[str, float]
    default: float = 0.0
    calls: list[tuple[list[str], bool]] = field(default_factory=list)

    async def score(
        self, conversation: Sequence[Message], responses: Sequence[str], *, partial: bool = False
    ) -> list[float]:
        self.calls.append((list(responses), partial))
        return [self.table.get(r, self.default) for r in responses]


def fake_context(
    generator: Generator,
    reward: RewardModel,
    sampling: SamplingConfig,
    conversation: Sequence[Message] = ({"role": "user", "content": "hi"},),
) -> SearchContext:
    """A search context over the fakes, the prompt rendered by CharTokenizer."""
    tok = CharTokenizer()
    return SearchContext(
        generator=generator,
        reward=reward,
        tokenizer=tok,
        conversation=list(conversation),
        prompt_ids=tok.render_chat(conversation),
        sampling=sampling,
    )
