"""OpenAI completions request model, and the shapes of its answers for the OpenAPI document.

The request never runs anything itself: it converts into the chat-completions request
that the one search path serves (``chat_request``), so each sampling field is validated
by chat's model and reaches the engine exactly as chat's does. The fields below repeat
chat's types and bounds only so the OpenAPI document describes them; chat's model stays
the authority (its errors come back as 400s naming the field). What is particular to
completions is checked here: the four forms of ``prompt``, ``best_of``, ``logprobs: k``
(chat's ``logprobs`` and ``top_logprobs: k``), ``echo`` and ``max_tokens: 0`` (the prompt
scored, no search), and the fields of the API that alignserve cannot honour (``suffix``,
``logit_bias``), which are refused rather than silently dropped.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from search.errors import InvalidRequest
from server.openapi_docs import Usage, errors, stream_event
from server.protocol import ChatCompletionRequest, StreamOptions

# Prompts one request may send: each is its own search, all under one admission slot,
# so the count is bounded here rather than by the queue.
MAX_PROMPTS = 16
# Most likely tokens per position ``logprobs`` may ask for (OpenAI's maximum).
MAX_LOGPROBS = 5

TokenIds = list[Annotated[int, Field(ge=0)]]
# One prompt: its text, or its token ids as the client tokenized it.
Prompt = str | list[int]

PROMPT_FORMS = "a string, a list of strings, a list of token ids or a list of lists of token ids"


def is_token_id(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def valid_text(text: str) -> str:
    """JSON may carry a lone surrogate (``"\\ud800"``), which no tokenizer encodes."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("the prompt is not valid Unicode (it holds a lone surrogate)") from None
    return text


class CompletionRequest(BaseModel):
    # Strict, as chat's: JSON false is not 0 and "0.5" is not 0.5.
    model_config = ConfigDict(extra="allow", strict=True)

    model: str | None = None
    prompt: str | list[str] | TokenIds | list[TokenIds]
    # 0 only with echo: the prompt scored, nothing generated (lm-eval's loglikelihood).
    max_tokens: int | None = Field(default=None, ge=0)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=-1, le=1_000_000)
    epsilon: float | None = Field(default=None, ge=0.0, lt=1.0)
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    n: int = Field(default=1, ge=1)
    best_of: int | None = Field(default=None, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = Field(default=None, ge=-(2**63), le=2**63 - 1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    search: dict[str, Any] | None = None
    # The prompt before each answer (with logprobs, the prompt tokens' logprobs first).
    echo: bool | None = None
    # The chosen answers' per-token logprobs and the k most likely tokens at each.
    logprobs: int | None = Field(default=None, ge=0, le=MAX_LOGPROBS)
    # Accepted at their defaults only (see reject_unsupported).
    suffix: str | None = None
    logit_bias: dict[str, float] | None = None

    @field_validator("prompt", mode="before")
    @classmethod
    def _prompt_forms(cls, value: Any) -> Any:
        """One clear message per malformed prompt (the union's own errors name its arms)."""
        if isinstance(value, str):
            if not value:
                raise ValueError("the prompt is empty")
            return valid_text(value)
        if not isinstance(value, list):
            raise ValueError(f"must be {PROMPT_FORMS}")
        if not value:
            raise ValueError("the prompt is empty")
        if all(is_token_id(t) for t in value):
            if min(value) < 0:
                raise ValueError("token ids are never negative")
            return value
        if len(value) > MAX_PROMPTS:
            raise ValueError(f"{len(value)} prompts; a request may send at most {MAX_PROMPTS}")
        if all(isinstance(p, str) for p in value):
            if not all(value):
                raise ValueError("a prompt is empty")
            return [valid_text(p) for p in value]
        if not all(isinstance(p, list) and all(is_token_id(t) for t in p) for p in value):
            raise ValueError(f"must be {PROMPT_FORMS}")
        if not all(value):
            raise ValueError("a prompt is empty")
        if min(min(p) for p in value) < 0:
            raise ValueError("token ids are never negative")
        return value

    def prompts(self) -> list[Prompt]:
        """The prompts, one search each."""
        prompt = self.prompt
        if isinstance(prompt, str) or is_token_id(prompt[0]):
            return [prompt]  # type: ignore[list-item]
        return list(prompt)  # type: ignore[arg-type]

    def text_chars(self) -> int:
        """Characters of the text prompts, which --max-request-chars bounds per request."""
        return sum(len(p) for p in self.prompts() if isinstance(p, str))

    def unknown_fields(self) -> list[str]:
        return sorted(self.model_extra or {})

    def reject_unsupported(self) -> None:
        """400s naming the field, for what alignserve cannot honour or a client mixed up."""
        refused = {
            "suffix": (self.suffix is not None, "there is no insertion mode"),
            "logit_bias": (self.logit_bias, "logits are not biased"),
        }
        for name, (given, why) in refused.items():
            if given:
                raise InvalidRequest(f"{name} is not supported by alignserve: {why}", param=name)
        for name in self.unknown_fields():
            if name in CHAT_ONLY:
                # Forwarded, it would be honoured; ignored, it would answer something else.
                raise InvalidRequest(
                    f"{name} is a chat-completions field; /v1/completions "
                    + CHAT_ONLY_HINTS.get(name, "takes prompt and max_tokens"),
                    param=name,
                )
        if self.stream and len(self.prompts()) > 1:
            raise InvalidRequest(
                "a stream answers one prompt; send several prompts without stream",
                param="stream",
            )
        self.reject_echo()
        if self.best_of is None:
            return
        if self.n > self.best_of:
            raise InvalidRequest(
                f"best_of ({self.best_of}) must be at least n ({self.n})", param="best_of"
            )
        if self.search is not None and self.best_of > 1:
            raise InvalidRequest(
                "best_of asks for Best-of-N; with a search object, set search.n instead",
                param="best_of",
            )
        if self.best_of > 1 and self.temperature == 0:
            # What lm-eval sends (temperature 0 with best_of in --gen_kwargs): the error
            # names the fields the client sent, not the search.n they become.
            raise InvalidRequest(
                f"temperature 0 (greedy) yields a single candidate, but best_of asks for "
                f"{self.best_of}: send best_of 1 or a temperature above 0",
                param="best_of",
            )

    @property
    def scores_only(self) -> bool:
        """``echo`` with ``max_tokens: 0``: the prompt (and its logprobs) comes back, nothing
        is generated and no search runs."""
        return bool(self.echo) and self.max_tokens == 0

    def reject_echo(self) -> None:
        """What echo and ``max_tokens: 0`` cannot go with."""
        if self.max_tokens == 0 and not self.echo:
            raise InvalidRequest(
                "max_tokens 0 generates nothing; it is allowed with echo: true, which returns "
                "the prompt (and with logprobs its tokens' logprobs)",
                param="max_tokens",
            )
        if not self.echo:
            return
        if self.stream:
            raise InvalidRequest(
                "echo is answered without stream: send stream: false", param="echo"
            )
        if not self.scores_only:
            return
        if self.search is not None or (self.best_of or 1) > 1:
            raise InvalidRequest(
                "echo with max_tokens 0 scores the prompt and generates nothing, so there is "
                "nothing to search: leave out "
                + ("search" if self.search is not None else "best_of"),
                param="search" if self.search is not None else "best_of",
            )
        if self.n > 1:
            raise InvalidRequest(
                "echo with max_tokens 0 returns each prompt once: n must be 1", param="n"
            )

    def search_object(self) -> dict[str, Any] | None:
        """``best_of: k`` (k > 1) is Best-of-N over k samples under the server's reward;
        ``best_of: 1`` is OpenAI's default, which some clients always send: no change.
        Scoring a prompt (``scores_only``) is no search."""
        if self.scores_only:
            return {"algorithm": "none"}
        if self.best_of is not None and self.best_of > 1:
            return {"algorithm": "bon", "n": self.best_of}
        return self.search

    def chat_request(self) -> ChatCompletionRequest:
        """The chat request the search path serves; its one user message gets each prompt's
        text before it is prepared. Unknown fields travel with it, so chat logs them and
        refuses the ones it refuses (``tools``, ...); ``response_format`` and vLLM's
        ``structured_outputs`` constrain the samples as on chat (vLLM's completions take
        both)."""
        shared = {name: getattr(self, name) for name in SHARED}
        if self.stream_options is not None:
            shared["stream_options"] = self.stream_options.model_dump()
        if self.scores_only:
            shared["max_tokens"] = 1  # the search that never runs; nothing is generated
        if self.logprobs is not None:
            shared.update(logprobs=True, top_logprobs=self.logprobs)
        data = {
            **(self.model_extra or {}),
            **shared,
            "messages": [{"role": "user", "content": ""}],
            "search": self.search_object(),
        }
        try:
            return ChatCompletionRequest.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            param = ".".join(str(p) for p in first["loc"]) or None
            raise InvalidRequest(f"{param}: {first['msg']}", param=param) from None


SHARED = (
    "model",
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "epsilon",
    "presence_penalty",
    "frequency_penalty",
    "n",
    "stop",
    "seed",
    "stream",
    "user",
)
CHAT_ONLY = (
    frozenset(ChatCompletionRequest.model_fields)
    - frozenset(CompletionRequest.model_fields)
    # Structured outputs: vLLM's completions take them, and so do these (see chat_request).
    - {"response_format", "structured_outputs"}
)
# What a chat-only field is called here, where there is one.
CHAT_ONLY_HINTS = {
    "top_logprobs": "takes logprobs: k (the k most likely tokens at each position)",
    "max_completion_tokens": "takes max_tokens",
}


# -- answers, for the OpenAPI document (the router builds the JSON by hand) ---------------
class TextLogprobs(BaseModel):
    """Per token of the choice's text (with echo, the prompt's first): its text, its
    logprob (null for a prompt's first token), the most likely tokens and the chosen one
    with theirs, and where it starts in the text (server.logprobs)."""

    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[int]


class TextChoice(BaseModel):
    index: int
    text: str
    # With logprobs: k; null otherwise (or for an answer the deadline cut).
    logprobs: TextLogprobs | None
    finish_reason: Literal["stop", "length"]


class TextCompletion(BaseModel):
    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[TextChoice]
    usage: Usage
    # One report per search: an object for one prompt, a list for several.
    search: dict[str, Any] | list[dict[str, Any]]


STREAM_EVENT = stream_event("text_completion")
COMPLETION_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "model": TextCompletion,
        "content": {"text/event-stream": {"schema": STREAM_EVENT}},
        "description": "a text_completion, or with stream=true server-sent events",
    },
    **errors(400, 401, 404, 413, 429, 500, 503, 504),
}
