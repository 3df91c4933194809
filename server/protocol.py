"""OpenAI chat-completions request model. It converts itself into engine parameters."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from search.errors import InvalidRequest
from search.types import Message, SamplingConfig
from server.tool_calls import render_calls


class TextPart(BaseModel):
    model_config = ConfigDict(strict=True)

    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None
    # An assistant turn's function calls, and a tool result's call (server.tool_calls).
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None

    def as_message(self, where: str = "messages") -> Message:
        if isinstance(self.content, list):
            text = "".join(part.text for part in self.content)
        else:
            text = self.content or ""
        if self.tool_calls:
            # The template reads plain text: the calls as the model writes them.
            calls = render_calls(self.tool_calls, where)
            text = f"{text}\n{calls}" if text else calls
        # The chat templates of small models know "system", not OpenAI's newer "developer".
        role = "system" if self.role == "developer" else self.role
        return {"role": role, "content": text}


class StreamOptions(BaseModel):
    model_config = ConfigDict(strict=True)

    include_usage: bool = False


# Fields of the OpenAI API that alignserve cannot honour: sent with a non-default value
# they are rejected, never silently dropped.
UNSUPPORTED = (
    "functions",
    "function_call",
    "logit_bias",
)
# Alternatives per token a chat request may ask for (OpenAI's and vLLM's default maximum).
MAX_TOP_LOGPROBS = 20


class ChatCompletionRequest(BaseModel):
    # Strict: JSON false is not 0.0 and "0.5" is not 0.5; what the schema says is what runs.
    model_config = ConfigDict(extra="allow", strict=True)

    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1, strict=True)
    max_completion_tokens: int | None = Field(default=None, ge=1, strict=True)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    # Bounded so no client value can overflow the engine's integer types.
    top_k: int | None = Field(default=None, ge=-1, le=1_000_000)
    # ε-sampling (alignserve's extension; engines.epsilon): tokens under this probability
    # are never sampled, the sampler of the RBoN, SRBoN and MBR papers.
    epsilon: float | None = Field(default=None, ge=0.0, lt=1.0)
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    n: int = Field(default=1, ge=1, strict=True)
    stop: str | list[str] | None = None
    seed: int | None = Field(default=None, ge=-(2**63), le=2**63 - 1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    search: dict[str, Any] | None = None
    # Structured outputs and tools (server.structured, server.tool_calls): checked there,
    # so a 400 names the exact part of them that is wrong.
    response_format: Any = None
    structured_outputs: Any = None
    tools: Any = None
    tool_choice: Any = None
    parallel_tool_calls: Any = None
    # The chosen answer's per-token logprobs, and the most likely alternatives at each
    # token (server.logprobs).
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=MAX_TOP_LOGPROBS)

    @field_validator("stop")
    @classmethod
    def _stop_strings(cls, value: str | list[str] | None) -> str | list[str] | None:
        stops = [value] if isinstance(value, str) else value or []
        if any(not s for s in stops):
            raise ValueError("stop strings must not be empty")
        if len(stops) > 4:
            raise ValueError("at most 4 stop strings")
        return value

    def unknown_fields(self) -> list[str]:
        return sorted(self.model_extra or {})

    def reject_unsupported(self) -> None:
        for name in UNSUPPORTED:
            value = (self.model_extra or {}).get(name)
            if value not in (None, False, [], {}):
                raise InvalidRequest(f"{name} is not supported by alignserve", param=name)
        if self.top_logprobs and not self.logprobs:
            raise InvalidRequest(
                "top_logprobs needs logprobs: true (as OpenAI's API)", param="top_logprobs"
            )

    def conversation(self) -> list[Message]:
        return [m.as_message(f"messages.{i}") for i, m in enumerate(self.messages)]

    def requested_max_tokens(self, default: int) -> int:
        return self.max_completion_tokens or self.max_tokens or default

    def sampling_config(self, default_max_tokens: int, *, logprobs: bool = False) -> SamplingConfig:
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())
        return SamplingConfig(
            max_tokens=self.requested_max_tokens(default_max_tokens),
            temperature=1.0 if self.temperature is None else self.temperature,
            top_p=1.0 if self.top_p is None else self.top_p,
            top_k=-1 if self.top_k is None else self.top_k,
            epsilon=self.epsilon or 0.0,
            presence_penalty=self.presence_penalty or 0.0,
            frequency_penalty=self.frequency_penalty or 0.0,
            seed=self.seed,
            stop=stop,
            logprobs=logprobs or bool(self.logprobs),
            top_logprobs=(self.top_logprobs or 0) if self.logprobs else 0,
        )
