"""The seams of the search layer: what engines, reward models and tokenizers give it.
Optional engine capabilities are protocols of their own (``BatchGenerator``,
``StreamingGenerator``, ``ContextSized``), checked with isinstance. So are the ones the
server and tools read of the same engines, models and tokenizers (``HealthChecked``,
``DeathWatched``, ``PrefixCached``, ``PromptScorer``, ``AsyncClosable``, ``Wrapping``,
``VocabListing``, ``TokenBytes``, ``ServedTokenizer``):
declared here, with the seams they extend, so that engines and rewards can declare them."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Sequence
from typing import Any, Protocol, runtime_checkable

from search.types import Completion, Message, PromptLogprobs, SamplingConfig

# A reward's known range [lo, hi] (the judge's [0, 1]).
Bounds = tuple[float, float]


class Generator(Protocol):
    """Token ids in, completions out. Cancelling the awaiting task aborts the engine work."""

    async def generate(
        self, prompt_ids: Sequence[int], params: SamplingConfig, n: int = 1
    ) -> list[Completion]: ...


@runtime_checkable
class BatchGenerator(Generator, Protocol):
    """A generator that takes many prompts in one call (a remote engine: one HTTP request),
    one completion per prompt; see search.context.generate_each."""

    async def generate_batch(
        self, prompts: Sequence[Sequence[int]], params: SamplingConfig
    ) -> list[Completion]: ...


@runtime_checkable
class StreamingGenerator(Generator, Protocol):
    """A generator that yields the samples as they finish: lists of ``(index, Completion)``,
    every index once, so scoring can start before the last sample ends."""

    def generate_stream(
        self, prompt_ids: Sequence[int], params: SamplingConfig, n: int = 1
    ) -> AsyncGenerator[list[tuple[int, Completion]], None]: ...


@runtime_checkable
class PromptScorer(Protocol):
    """An engine that scores a prompt's own tokens (vLLM's prompt logprobs, in-process or
    through a vLLM server's completions API): what ``/v1/completions`` answers ``echo``
    with ``logprobs`` from (lm-eval's loglikelihood requests). ``top_logprobs``: the
    alternatives wanted per position (0: the prompt tokens' own logprobs only)."""

    async def prompt_logprobs(
        self, prompt_ids: Sequence[int], top_logprobs: int
    ) -> PromptLogprobs: ...


@runtime_checkable
class SearchRouted(Protocol):
    """An engine behind a router that sends the running search's key with each call
    (transport.affinity; ``routes_by_search`` while the key is sent): calls that need the
    prefix cache of their search's replica go out under their own search's key, never
    batched into one request with other searches' calls."""

    @property
    def routes_by_search(self) -> bool: ...


@runtime_checkable
class ContextSized(Protocol):
    """An engine that knows its context length (an in-process engine does)."""

    @property
    def max_model_len(self) -> int: ...


@runtime_checkable
class HealthChecked(Protocol):
    """An engine or model with something behind it that can fail (a server, an engine
    core): ``check_health`` raises, or hangs, while it is unhealthy. The server's readiness
    runs it in the background (server.health)."""

    async def check_health(self) -> None: ...


@runtime_checkable
class DeathWatched(Protocol):
    """An engine that can die for good (the in-process engine): ``is_dead`` is a flag read,
    cheap enough for every readiness probe; ``on_death`` registers a callback for a death
    a request runs into."""

    def is_dead(self) -> bool: ...

    def on_death(self, callback: Callable[[], None]) -> None: ...


@runtime_checkable
class PrefixCached(Protocol):
    """An engine whose prefix cache can be emptied (the in-process engine), so a measured
    run starts cold."""

    async def reset_prefix_cache(self) -> None: ...


@runtime_checkable
class AsyncClosable(Protocol):
    """A model that holds something to release when the server stops (an HTTP client, a
    worker thread or process)."""

    async def aclose(self) -> None: ...


@runtime_checkable
class Wrapping(Protocol):
    """A wrapper that keeps the model it wraps as ``inner`` (the server's ``TimedReward``,
    ``TimedPRM``, ``MicroBatcher``): what the wrapped model can do beyond the seam it
    forwards (``check_health``) is found through it."""

    inner: object


class RewardModel(Protocol):
    """Scores responses to a conversation; implementations batch internally.

    ``bounds``: the range its scores can take when it is known (the judge's [0, 1]); None
    for unbounded ones (a classifier's logits). ``rubric``: the request's criteria, which
    replace a judge's own; models without criteria ignore it. ``token_ids``: per response,
    the generation prompt's ids then the response's (the judge continues that context); a
    model that reads them says so with ``takes_token_ids``, so callers need not build them
    for one that ignores them."""

    @property
    def bounds(self) -> Bounds | None: ...

    @property
    def takes_token_ids(self) -> bool: ...

    async def score(
        self,
        conversation: Sequence[Message],
        responses: Sequence[str],
        *,
        partial: bool = False,
        rubric: str | None = None,
        token_ids: Sequence[Sequence[int]] | None = None,
    ) -> list[float]: ...


class ProcessRewardModel(Protocol):
    """Scores the reasoning steps of responses built step by step (a process reward model,
    PRM), kept apart from the outcome rewards above.

    ``score_last_steps`` gives, per response (its steps so far, texts that join into the
    response), the score of its last step given the conversation and the steps before it.
    A PRM is causal (a step's score never depends on later steps), so a search keeps each
    step's score from the round that added it and aggregates them (search.steps). Scores
    are the PRM's raw values (a PRM's probability that the step is correct, the judge's
    [0, 1] rating); ``bounds`` as for RewardModel. ``token_ids`` as for the judge: per
    response, the generation prompt's ids then the response's; a PRM that reads them says
    so with ``takes_token_ids``."""

    @property
    def bounds(self) -> Bounds | None: ...

    @property
    def takes_token_ids(self) -> bool: ...

    async def score_last_steps(
        self,
        conversation: Sequence[Message],
        steps: Sequence[Sequence[str]],
        *,
        token_ids: Sequence[Sequence[int]] | None = None,
    ) -> list[float]: ...


class Utility(Protocol):
    """Similarity of responses to each other, for minimum-Bayes-risk selection."""

    async def matrix(self, texts: Sequence[str]) -> list[list[float]]:
        """U[i][j] = utility of texts[i] measured against texts[j] as the reference."""
        ...


class TokenScorer(Protocol):
    """A model that only scores: log p of each token of a sequence given the tokens before
    it (vLLM prompt logprobs). Entry 0 has no context and is None. TreeBoN's DPO model and
    its reference are two of these (either may be the served engine itself)."""

    async def token_logprobs(self, token_ids: Sequence[int]) -> list[float | None]: ...


class ChatTokenizer(Protocol):
    """The policy model's tokenizer: renders the chat template once and decodes token ids."""

    def render_chat(self, messages: Sequence[Message]) -> list[int]: ...

    def decode(self, token_ids: Sequence[int]) -> str: ...

    def encode(self, text: str) -> list[int]: ...


@runtime_checkable
class TokenBytes(Protocol):
    """A tokenizer that tells each token's own bytes (engines.tokenizer's does): a token
    that holds part of a character (byte-level BPE, SentencePiece byte tokens) decodes to
    U+FFFD on its own, while its bytes still join into the answer's exact UTF-8. What the
    ``bytes`` of OpenAI's logprobs show."""

    def token_bytes(self, token_id: int) -> bytes: ...


@runtime_checkable
class VocabListing(Protocol):
    """A tokenizer that lists its vocabulary (engines.tokenizer's does; the unit tests'
    fakes mostly do not): token text -> id, added tokens included."""

    def vocab(self) -> dict[str, int]: ...


@runtime_checkable
class ServedTokenizer(Protocol):
    """What vLLM's tokenizer routes (``/tokenize``, ``/detokenize``, ``/tokenizer_info``)
    tell of the policy's tokenizer (engines.tokenizer's implements it; the server answers
    from ChatTokenizer alone for one that does not)."""

    def encode_text(self, text: str, *, add_special_tokens: bool) -> list[int]:
        """``text`` with special-token strings parsed, the tokenizer's BOS/EOS added when
        ``add_special_tokens`` (vLLM's /tokenize of a prompt)."""
        ...

    def render_conversation(
        self, messages: Sequence[Message], *, add_generation_prompt: bool
    ) -> list[int]:
        """``render_chat``, or without the assistant turn's opening."""
        ...

    def detokenize(self, token_ids: Sequence[int]) -> str:
        """The text of ``token_ids``, special tokens kept (vLLM's /detokenize)."""
        ...

    def token_strings(self, token_ids: Sequence[int]) -> list[str]:
        """The vocabulary's strings of ``token_ids``."""
        ...

    def tokenizer_info(self) -> dict[str, Any]:
        """The tokenizer's configuration (tokenizer_config.json's fields) and class."""
        ...


class JudgeTokenizer(ChatTokenizer, Protocol):
    """What the generative judge needs of the policy's tokenizer (engines.tokenizer
    implements it): it renders its own prompts and continues the generation's context."""

    def encode_plain(self, text: str) -> list[int]:
        """``text`` (a client's) with special-token strings encoded as plain text."""
        ...

    def token_id(self, token: str) -> int:
        """The id of a text that is one token; ValueError otherwise."""
        ...

    def next_user_turn(self) -> tuple[list[int], list[int]]:
        """The template's ids that close an assistant turn and open a user turn, and those
        that close that user turn and open the assistant's; ValueError when the template
        cannot be continued that way."""
        ...

    def render_with_prefix(self, messages: Sequence[Message], assistant_prefix: str) -> list[int]:
        """The conversation rendered up to the assistant turn, then ``assistant_prefix``."""
        ...
