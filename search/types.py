"""Value types shared by the engines, the reward models, the algorithms and the server."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

from search.constraint import OutputConstraint

FinishReason = Literal["stop", "length", "abort"]


@dataclass(frozen=True)
class SamplingConfig:
    """Per-call sampling parameters; every OpenAI sampling field a client sends lands here."""

    max_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    # ε-sampling (Hewitt et al. 2022; the RBoN, SRBoN and MBR papers' sampler): tokens whose
    # probability is below epsilon are never sampled; 0.0 is off (engines.epsilon).
    epsilon: float = 0.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    # Per-token logprobs of the sampled tokens (needed by KL-regularised searches).
    logprobs: bool = False
    # Top-k alternatives per position (the judge reads score-token probabilities from these).
    top_logprobs: int = 0
    # Keep a matched stop string at the end of the text (vLLM's include_stop_str_in_output):
    # the step searches stop at a step delimiter and join the steps' texts exactly.
    include_stop: bool = False
    # Structured outputs: the grammar every sample decodes under (search.constraint).
    constraint: OutputConstraint | None = None


@dataclass(frozen=True)
class Completion:
    """One sampled continuation, on token ids; text is decoded only to score and to answer."""

    token_ids: tuple[int, ...]
    text: str
    finish_reason: FinishReason
    cumulative_logprob: float | None = None
    logprobs: tuple[float, ...] | None = None
    top_logprobs: tuple[dict[int, float], ...] | None = None
    # The stop string that ended it (vLLM's stop_reason); None for the end-of-sequence token,
    # a length cut or an engine that does not say.
    stop_reason: str | None = None

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)


@dataclass(frozen=True)
class Candidate:
    """A complete response with its reward, as the search reports it."""

    completion: Completion
    reward: float

    @property
    def text(self) -> str:
        return self.completion.text


@dataclass
class Budget:
    """What a search actually spent. Strategies add to it as they go."""

    generated_tokens: int = 0
    engine_calls: int = 0
    reward_calls: int = 0
    scored_responses: int = 0
    phase_seconds: dict[str, float] = field(default_factory=dict)
    # Told (name, start, end), in time.perf_counter() seconds, as each phase ends: the
    # server's tracing makes a span of it. Times, not a "current phase": phases of one
    # search may overlap (scoring while samples still decode).
    on_phase: Callable[[str, float, float], None] | None = field(
        default=None, repr=False, compare=False
    )

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add_phase(name, time.perf_counter() - start, start=start)

    def add_phase(self, name: str, seconds: float, *, start: float | None = None) -> None:
        """Count ``seconds`` to ``name``; ``start``: when it began (else it ends now)."""
        self.phase_seconds[name] = self.phase_seconds.get(name, 0.0) + seconds
        if self.on_phase is not None:
            begin = time.perf_counter() - seconds if start is None else start
            self.on_phase(name, begin, begin + seconds)

    def count_generation(self, completions: list[Completion]) -> None:
        self.engine_calls += 1
        self.generated_tokens += sum(c.num_tokens for c in completions)

    def count_scoring(self, n_responses: int) -> None:
        self.reward_calls += 1
        self.scored_responses += n_responses


@dataclass(frozen=True)
class SearchResult:
    """Candidates ranked best first (``ranked[0]`` is the answer) plus everything generated.

    ``details`` is the algorithm's own account (vote table, layers, rounds, instructions),
    JSON-serialisable, reported as ``search.details``."""

    ranked: list[Candidate]
    candidates: list[Candidate]
    budget: Budget
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def best(self) -> Candidate:
        return self.ranked[0]


Message = dict[str, str]


@dataclass(frozen=True)
class PromptLogprobs:
    """A prompt's own tokens scored by the model (vLLM's prompt logprobs): ``logprobs[i]``
    is log p(token i | the tokens before it), None for the first token (it has no context);
    ``top_logprobs[i]`` the most likely tokens at position i with theirs (token i itself
    included, as vLLM returns them), empty for the first."""

    token_ids: tuple[int, ...]
    logprobs: tuple[float | None, ...]
    top_logprobs: tuple[dict[int, float], ...]
