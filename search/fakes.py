"""Fakes shipped beside the protocols, for unit tests of logic (never for integration tests).

- ``CharTokenizer``: one token per character (ids are code points); chat rendered as text.
- ``ScriptedGenerator``: answers each call with the next scripted list of texts; a text
  longer than the call's max_tokens is cut there and finishes with "length".
- ``PromptTableGenerator``: answers by the decoded prompt, for searches that continue
  prefixes (the prompt then ends with the response so far).
- ``TableReward``: a fixed reward per response text (default for unknown texts).
- ``TokenTableReference``: a scoring model (TreeBoN's DPO model or reference) with a
  fixed logprob per token.
- ``WordOverlapUtility``: Jaccard similarity of whitespace-split word sets (MBR utility).
- ``FixedGenerator`` / ``FixedUtility``: the same completions (with chosen summed
  logprobs) every call / a fixed utility matrix, for the regularised searches.
- ``StepTableGenerator``: answers step requests by the response so far, honouring stop
  strings as vLLM does (for the step searches).
- ``TablePRM``: a process reward model with a fixed score per response or per step text.
- ``LogprobGenerator``: wraps any of these generators and gives its samples the logprobs
  the call asked for (each token's fixed ``token_logprob`` and a fixed ranking of
  alternatives, ``alternatives``), and scores prompts the same way (``PromptScorer``).
- ``fake_context``: a SearchContext over these.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from search.context import SearchContext
from search.protocols import (
    Generator,
    ProcessRewardModel,
    RewardModel,
    TokenScorer,
    Utility,
)
from search.types import Completion, Message, PromptLogprobs, SamplingConfig


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

    def encode_plain(self, text: str) -> list[int]:
        return self.encode(text)

    def next_user_turn(self) -> tuple[list[int], list[int]]:
        return self.encode("</assistant><user>"), self.encode("<assistant>")

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
    conversations: list[list[Message]] = field(default_factory=list)
    # The range the scores can take, as a real reward model declares it (the judge's [0, 1]).
    bounds: tuple[float, float] | None = None
    # Token ids go unread, as for every reward but the judge.
    takes_token_ids = False

    async def score(
        self,
        conversation: Sequence[Message],
        responses: Sequence[str],
        *,
        partial: bool = False,
        rubric: str | None = None,
        token_ids: Sequence[Sequence[int]] | None = None,
    ) -> list[float]:
        self.calls.append((list(responses), partial))
        self.conversations.append([dict(m) for m in conversation])
        return [self.table.get(r, self.default) for r in responses]


@dataclass
class PromptTableGenerator:
    """Answers by the decoded prompt (chat text + response so far): ``table[prompt]`` lists
    the texts, the first n are returned, each cut at max_tokens (finish "length" when cut).
    Unknown prompts go to ``fallback`` if set. For the searches that continue prefixes."""

    table: Mapping[str, list[str]]
    fallback: Callable[[str], list[str]] | None = None
    calls: list[tuple[str, int, int | None, int]] = field(default_factory=list)

    async def generate(
        self, prompt_ids: Sequence[int], params: SamplingConfig, n: int = 1
    ) -> list[Completion]:
        prompt = CharTokenizer().decode(prompt_ids)
        self.calls.append((prompt, params.max_tokens, params.seed, n))
        if prompt in self.table or self.fallback is None:
            texts = self.table[prompt]
        else:
            texts = self.fallback(prompt)
        if len(texts) < n:
            raise AssertionError(f"table has {len(texts)} texts for {prompt!r}, n={n}")
        cut = params.max_tokens
        return [completion_of(t[:cut], "length" if len(t) > cut else "stop") for t in texts[:n]]


@dataclass
class TokenTableReference:
    """A reference model with a fixed log-probability per token (``default`` otherwise)."""

    table: Mapping[str, float]
    default: float = -0.1
    calls: list[list[int]] = field(default_factory=list)

    async def token_logprobs(self, token_ids: Sequence[int]) -> list[float | None]:
        self.calls.append(list(token_ids))
        return [None] + [self.table.get(chr(t), self.default) for t in token_ids[1:]]


@dataclass
class WordOverlapUtility:
    """U[i][j] = |w_i & w_j| / |w_i | w_j| over whitespace-split word sets; two empty texts
    are identical (1.0). Symmetric, so hand-computed MBR examples stay small."""

    calls: list[list[str]] = field(default_factory=list)

    async def matrix(self, texts: Sequence[str]) -> list[list[float]]:
        self.calls.append(list(texts))
        words = [set(t.split()) for t in texts]
        return [[len(a & b) / len(a | b) if a | b else 1.0 for b in words] for a in words]


@dataclass
class FixedGenerator:
    """Answers every call with the first n of ``rows``: (text, token count, summed logprob)."""

    rows: Sequence[tuple[str, int, float]]

    async def generate(
        self, prompt_ids: Sequence[int], params: SamplingConfig, n: int = 1
    ) -> list[Completion]:
        if len(self.rows) < n:
            raise AssertionError(f"{len(self.rows)} rows for n={n}")
        return [
            Completion(tuple(range(1, k + 1)), text, "stop", cumulative_logprob=lp)
            for text, k, lp in self.rows[:n]
        ]


@dataclass
class FixedUtility:
    """A fixed utility matrix, whatever the texts (it must have one row per text)."""

    table: Sequence[Sequence[float]]
    calls: list[list[str]] = field(default_factory=list)

    async def matrix(self, texts: Sequence[str]) -> list[list[float]]:
        self.calls.append(list(texts))
        if len(texts) != len(self.table):
            raise AssertionError(f"{len(self.table)} rows for {len(texts)} texts")
        return [list(row) for row in self.table]


def stepped(text: str, params: SamplingConfig) -> Completion:
    """``text`` (what the model would write to its end) as vLLM returns it under ``params``:
    cut after the earliest stop string that ends within max_tokens (finish "stop", its
    ``stop_reason``, the string kept in the text only with ``include_stop``), else at
    max_tokens ("length"), else whole (the end-of-sequence token: "stop", no reason)."""
    cut, reason = None, None
    for stop in params.stop:
        at = text.find(stop)
        if at != -1 and (cut is None or at + len(stop) < cut):
            cut, reason = at + len(stop), stop
    if reason is not None and cut is not None and cut <= params.max_tokens:
        kept = text[:cut] if params.include_stop else text[: cut - len(reason)]
        return Completion(tuple(ord(c) for c in text[:cut]), kept, "stop", stop_reason=reason)
    if len(text) > params.max_tokens:
        text = text[: params.max_tokens]
        return Completion(tuple(ord(c) for c in text), text, "length")
    return Completion(tuple(ord(c) for c in text), text, "stop")


@dataclass
class StepTableGenerator:
    """Answers by the response so far: the decoded prompt less the chat ``prompt`` it starts
    with keys ``table``, whose texts are what the model writes from there to its end. Each
    call takes the next n texts of its key (a second call on the same key gets the ones
    after; running out fails the test), each returned as vLLM would under the call's stop
    strings and max_tokens (``stepped``)."""

    table: Mapping[str, list[str]]
    prompt: str = ""
    # (response so far, max_tokens, stop strings, n) per call.
    calls: list[tuple[str, int, tuple[str, ...], int]] = field(default_factory=list)
    taken: dict[str, int] = field(default_factory=dict)

    async def generate(
        self, prompt_ids: Sequence[int], params: SamplingConfig, n: int = 1
    ) -> list[Completion]:
        decoded = CharTokenizer().decode(prompt_ids)
        if not decoded.startswith(self.prompt):
            raise AssertionError(f"prompt {decoded!r} does not start with {self.prompt!r}")
        key = decoded[len(self.prompt) :]
        self.calls.append((key, params.max_tokens, params.stop, n))
        start = self.taken.get(key, 0)
        texts = self.table[key][start : start + n]
        if len(texts) < n:
            raise AssertionError(f"table has too few texts after {key!r} for n={n}")
        self.taken[key] = start + n
        return [stepped(t, params) for t in texts]


@dataclass
class TablePRM:
    """A process reward model: the last step's score is ``table`` of the whole response so
    far, else of that step's text, else ``default``."""

    table: Mapping[str, float]
    default: float = 0.0
    bounds: tuple[float, float] | None = (0.0, 1.0)
    takes_token_ids = False
    # The responses (their steps) of each call.
    calls: list[list[tuple[str, ...]]] = field(default_factory=list)

    async def score_last_steps(
        self,
        conversation: Sequence[Message],
        steps: Sequence[Sequence[str]],
        *,
        token_ids: Sequence[Sequence[int]] | None = None,
    ) -> list[float]:
        self.calls.append([tuple(s) for s in steps])
        return [
            self.table.get("".join(s), self.table.get(s[-1], self.default)) if s else self.default
            for s in steps
        ]


# The token the fake model always finds most likely (a space), and its logprob.
LIKELIEST = 32
LIKELIEST_LOGPROB = -0.01


def token_logprob(token_id: int) -> float:
    """The fake model's logprob of ``token_id`` wherever it stands (a space: the most
    likely)."""
    return LIKELIEST_LOGPROB if token_id == LIKELIEST else -0.05 - (token_id % 7) / 10


def alternatives(token_id: int, k: int) -> dict[int, float]:
    """What vLLM returns at a position where ``token_id`` was chosen, asked for k: the k
    most likely (the space, then ``token_id`` and the ids after it, each 1.0 less likely)
    and the chosen token among them."""
    ranked = dict([(LIKELIEST, LIKELIEST_LOGPROB)])
    for j in range(k):
        ranked.setdefault(token_id + j, token_logprob(token_id) - j)
    return {token_id: token_logprob(token_id), **dict(list(ranked.items())[:k])}


@dataclass
class LogprobGenerator:
    """``inner``'s samples with the logprobs each call asks for (``token_logprob`` per
    token; with ``top_logprobs``, ``alternatives``), as vLLM returns them; prompts scored
    the same way, the first token without a logprob."""

    inner: Generator
    prompts_scored: list[tuple[list[int], int]] = field(default_factory=list)

    async def generate(
        self, prompt_ids: Sequence[int], params: SamplingConfig, n: int = 1
    ) -> list[Completion]:
        return [with_logprobs(c, params) for c in await self.inner.generate(prompt_ids, params, n)]

    async def prompt_logprobs(self, prompt_ids: Sequence[int], top_logprobs: int) -> PromptLogprobs:
        self.prompts_scored.append((list(prompt_ids), top_logprobs))
        ids = tuple(prompt_ids)
        return PromptLogprobs(
            ids,
            tuple(None if i == 0 else token_logprob(t) for i, t in enumerate(ids)),
            tuple({} if i == 0 else alternatives(t, top_logprobs) for i, t in enumerate(ids)),
        )


def with_logprobs(completion: Completion, params: SamplingConfig) -> Completion:
    """``completion`` with the logprobs ``params`` ask for (none otherwise)."""
    ids = completion.token_ids
    logprobs = tuple(token_logprob(t) for t in ids) if params.logprobs else None
    top = tuple(alternatives(t, params.top_logprobs) for t in ids) if params.top_logprobs else None
    return dataclasses.replace(
        completion,
        logprobs=logprobs,
        cumulative_logprob=None if logprobs is None else sum(logprobs),
        top_logprobs=top,
    )


def fake_context(
    generator: Generator,
    reward: RewardModel,
    sampling: SamplingConfig,
    conversation: Sequence[Message] = ({"role": "user", "content": "hi"},),
    utilities: Mapping[str, Utility] | None = None,
    reference: TokenScorer | None = None,
    dpo: TokenScorer | None = None,
    prm: ProcessRewardModel | None = None,
) -> SearchContext:
    """A search context over the fakes, the prompt rendered by CharTokenizer. Every MBR
    utility name defaults to a WordOverlapUtility."""
    tok = CharTokenizer()
    if utilities is None:
        utilities = {"embedding": WordOverlapUtility(), "chrf": WordOverlapUtility()}
    return SearchContext(
        generator=generator,
        reward=reward,
        tokenizer=tok,
        conversation=list(conversation),
        prompt_ids=tok.render_chat(conversation),
        sampling=sampling,
        utilities=utilities,
        reference=reference,
        dpo=dpo,
        prm=prm,
    )
