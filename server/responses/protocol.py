"""OpenAI Responses request model, and its conversion into the chat-completions request
that the one search path serves (the answer's shape: ``server.responses.objects``).

The request never runs anything itself: ``to_chat`` turns ``instructions`` and ``input``
into chat messages and ``max_output_tokens`` into ``max_tokens``, so each sampling field
is validated by chat's model and reaches the engine exactly as chat's does, and chat's
``prepare`` bounds the converted conversation (--max-messages, --max-request-chars).
``input`` is converted by hand rather than by a pydantic union, so a refused item is a 400
naming exactly that item (``input.2.content.0.type``), not one error per arm of a union.

Function tools, ``function_call`` / ``function_call_output`` items and ``text.format``
convert into chat's ``tools``, messages and ``response_format`` (``chat_tools``,
``response_format``; checked here, so a 400 names this API's field). Fields of the API
that alignserve cannot honour (reasoning, stored conversations, ...) are refused with a
400 naming the field when sent with anything but their default value; none is silently
dropped. Fields whose default is all alignserve can do anyway (``store``: nothing is ever
stored) are accepted.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from search.errors import InvalidRequest, LimitExceeded, shown
from server.protocol import ChatCompletionRequest
from server.tool_calls import parse_tools

ROLES = ("user", "system", "developer", "assistant")
# Text content parts. An assistant turn fed back from an earlier response carries
# output_text; either kind is accepted in any role, as both are plain text.
TEXT_PARTS = ("input_text", "output_text")
# OpenAI's bounds on metadata: 16 pairs, keys up to 64 characters, values up to 512.
METADATA_PAIRS, METADATA_KEY, METADATA_VALUE = 16, 64, 512


def is_null(value: Any) -> bool:
    return value is None


def is_empty(value: Any) -> bool:
    return value is None or value == [] or value == {}


def all_null(value: Any) -> bool:
    return value is None or (isinstance(value, dict) and all(v is None for v in value.values()))


# Fields of the Responses API that alignserve cannot honour, with the test that a value
# is their default (then nothing is lost by not honouring them).
UNSUPPORTED: dict[str, Callable[[Any], bool]] = {
    "reasoning": all_null,
    "include": is_empty,
    "background": lambda v: v is None or v is False,
    "conversation": is_null,
    "prompt": is_null,
    "top_logprobs": lambda v: v is None or (v == 0 and v is not False),
    "truncation": lambda v: v is None or v == "disabled",
    "service_tier": lambda v: v is None or v in ("auto", "default"),
    "logit_bias": is_empty,
}
# Chat-completions fields a client may carry over by mistake: ignored, each would answer
# something other than what was asked (max_tokens above all), so each is a 400 that says
# what the Responses API uses instead.
CHAT_ONLY = {
    "messages": "send the conversation as input",
    "max_tokens": "use max_output_tokens",
    "max_completion_tokens": "use max_output_tokens",
    "n": "a response has one output; use /v1/chat/completions for several choices",
    "stop": "use /v1/chat/completions for stop strings",
    "seed": "use /v1/chat/completions for a seed",
    "response_format": "use text.format",
    "logprobs": "token logprobs are not returned",
}
# Chat's error params, as the Responses API names the same thing.
PARAMS = {
    "max_tokens": "max_output_tokens",
    "messages": "input",
    "response_format": "text.format",
    "response_format.type": "text.format.type",
    "response_format.json_schema.name": "text.format.name",
    "response_format.json_schema.schema": "text.format.schema",
    "response_format.json_schema.strict": "text.format.strict",
}

INPUT_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "string", "minLength": 1},
        {"type": "array", "minItems": 1, "items": {"type": "object"}},
    ],
    "description": "a string (one user message) or a list of message items "
    '({"role": ..., "content": str | [{"type": "input_text", "text": ...}]})',
}


class StreamOptions(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    # Accepted: alignserve never pads its deltas (see server.responses.router).
    include_obfuscation: bool = True


class ResponsesRequest(BaseModel):
    # Strict, as chat's: JSON false is not 0 and "0.5" is not 0.5.
    model_config = ConfigDict(extra="allow", strict=True)

    model: str | None = None
    input: Any = Field(json_schema_extra=INPUT_SCHEMA)
    instructions: str | None = None
    max_output_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    # vLLM's extensions of the Responses API, as chat has them.
    top_k: int | None = Field(default=None, ge=-1, le=1_000_000)
    epsilon: float | None = Field(default=None, ge=0.0, lt=1.0)
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    stream: bool = False
    stream_options: StreamOptions | None = None
    # Nothing is stored either way: every response says store: false.
    store: bool | None = None
    previous_response_id: str | None = None
    metadata: dict[str, str] | None = None
    # Function tools (server.tool_calls), in the Responses API's flat shape.
    tools: Any = None
    tool_choice: Any = None
    parallel_tool_calls: bool | None = None
    max_tool_calls: int | None = Field(default=None, ge=1)
    user: str | None = None
    # Hints alignserve has no use for: identifying end users, caching prefixes (vLLM's
    # prefix cache needs no key).
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None
    text: dict[str, Any] | None = None
    # vLLM's extension, as chat's (server.structured).
    structured_outputs: Any = None
    search: dict[str, Any] | None = None

    @field_validator("metadata")
    @classmethod
    def _metadata_bounds(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is None:
            return value
        if len(value) > METADATA_PAIRS:
            raise ValueError(f"at most {METADATA_PAIRS} key-value pairs")
        if any(len(k) > METADATA_KEY or len(v) > METADATA_VALUE for k, v in value.items()):
            raise ValueError(f"keys up to {METADATA_KEY} characters, values up to {METADATA_VALUE}")
        return value

    def unknown_fields(self) -> list[str]:
        extra = self.model_extra or {}
        return sorted(k for k in extra if k not in UNSUPPORTED and k not in CHAT_ONLY)

    def reject_unsupported(self) -> None:
        """400s naming the field, for what alignserve cannot honour or a client mixed up."""
        if self.previous_response_id is not None:
            raise InvalidRequest(
                "previous_response_id: alignserve stores no responses (every response is "
                "store: false), so there is none to continue; send the whole conversation "
                "as input",
                param="previous_response_id",
            )
        extra = self.model_extra or {}
        for name, is_default in UNSUPPORTED.items():
            if name in extra and not is_default(extra[name]):
                raise InvalidRequest(f"{name} is not supported by alignserve", param=name)
        for name, hint in CHAT_ONLY.items():
            if extra.get(name) is not None:
                raise InvalidRequest(
                    f"{name} is a chat-completions field, not part of the Responses API: {hint}",
                    param=name,
                )
        text = self.text or {}
        for key in text:
            if key not in ("format", "verbosity"):
                raise InvalidRequest(f"text.{shown(key)} is not supported", param="text")
        self.response_format()
        self.chat_tools()
        if text.get("verbosity") not in (None, "medium"):
            raise InvalidRequest(
                "text.verbosity is not supported by alignserve", param="text.verbosity"
            )

    def response_format(self) -> dict[str, Any] | None:
        """``text.format`` as chat's ``response_format`` (checked there)."""
        form = (self.text or {}).get("format")
        if form is None:
            return None
        if not isinstance(form, dict):
            raise InvalidRequest("text.format must be an object", param="text.format")
        if form.get("type") != "json_schema":
            return form
        for key in form:
            if key not in ("type", "name", "schema", "strict", "description"):
                raise InvalidRequest(
                    f"text.format.{shown(key)} is not supported", param="text.format"
                )
        spec = {k: v for k, v in form.items() if k != "type"}
        return {"type": "json_schema", "json_schema": spec}

    def chat_tools(self) -> tuple[list[dict[str, Any]] | None, Any]:
        """``tools`` and ``tool_choice`` as chat has them, checked here (400s name the
        Responses API's fields: ``tools.0.name``)."""
        checked = parse_tools(self.tools, self.tool_choice, self.parallel_tool_calls, flat=True)
        if checked is None:
            return None, None if self.tool_choice is None else "none"
        tools = [
            {
                "type": "function",
                "function": {
                    "name": name,
                    "description": checked.descriptions.get(name, ""),
                    "parameters": params,
                },
            }
            for name, params in checked.functions.items()
        ]
        choice: Any = checked.choice
        if checked.mode == "named":
            choice = {"type": "function", "function": {"name": checked.choice}}
        return tools, choice

    def messages(self, max_items: int) -> list[dict[str, Any]]:
        """The conversation: ``instructions`` as a system message, then ``input``. The
        number of items is bounded before any is converted."""
        head = [{"role": "system", "content": self.instructions}] if self.instructions else []
        items = self.input
        if isinstance(items, str):
            if not items:
                raise InvalidRequest("input is empty", param="input")
            return [*head, {"role": "user", "content": items}]
        if not isinstance(items, list):
            raise InvalidRequest("input must be a string or a list of message items", param="input")
        if not items:
            raise InvalidRequest("input is empty", param="input")
        if len(items) > max_items:
            raise LimitExceeded(
                f"input holds {len(items)} items; the server accepts at most {max_items} "
                "(--max-messages)",
                limit="messages",
                param="input",
            )
        messages: list[dict[str, Any]] = list(head)
        for i, item in enumerate(items):
            message = input_message(item, f"input.{i}")
            calls = message.get("tool_calls")
            last = messages[-1] if messages else None
            if calls and last is not None and last["role"] == "assistant" and "tool_calls" in last:
                last["tool_calls"] += calls  # consecutive function_call items: one turn
            else:
                messages.append(message)
        return messages

    def to_chat(self, max_items: int) -> ChatCompletionRequest:
        """The same request as chat completions has it."""
        tools, choice = self.chat_tools()
        return ChatCompletionRequest.model_validate(
            {
                "model": self.model,
                "messages": self.messages(max_items),
                "max_tokens": self.max_output_tokens,
                "temperature": self.temperature,
                "top_p": self.top_p,
                "top_k": self.top_k,
                "epsilon": self.epsilon,
                "presence_penalty": self.presence_penalty,
                "frequency_penalty": self.frequency_penalty,
                "stream": self.stream,
                "user": self.user,
                "search": self.search,
                "response_format": self.response_format(),
                "structured_outputs": self.structured_outputs,
                "tools": tools,
                "tool_choice": choice,
                "parallel_tool_calls": self.parallel_tool_calls,
            }
        )


def input_message(item: Any, where: str) -> dict[str, Any]:
    """One input item as a chat message: a message with text content, a function call
    (an assistant message with ``tool_calls``) or a function call's output (a ``tool``
    message), or a 400 naming the part of it that is something else."""
    if not isinstance(item, dict):
        raise InvalidRequest(f"{where} must be a message object", param=where)
    kind = item.get("type", "message")
    if kind in ("function_call", "function_call_output"):
        return function_item(item, kind, where)
    if kind != "message":
        raise InvalidRequest(
            f"{where}: input items of type {shown(kind)} are not supported by alignserve "
            "(only messages with text content, function_call and function_call_output)",
            param=f"{where}.type",
        )
    role = item.get("role")
    if not isinstance(role, str) or role not in ROLES:
        raise InvalidRequest(
            f"{where}.role must be one of {', '.join(ROLES)}", param=f"{where}.role"
        )
    content = item.get("content")
    if isinstance(content, str):
        return {"role": role, "content": content}
    if not isinstance(content, list):
        raise InvalidRequest(
            f"{where}.content must be a string or a list of text parts", param=f"{where}.content"
        )
    texts = []
    for j, part in enumerate(content):
        at = f"{where}.content.{j}"
        kind = part.get("type") if isinstance(part, dict) else None
        if not isinstance(kind, str) or kind not in TEXT_PARTS:
            raise InvalidRequest(
                f"{at}: content of type {shown(kind)} is not supported by alignserve "
                f"(only {' and '.join(TEXT_PARTS)})",
                param=f"{at}.type",
            )
        if not isinstance(part.get("text"), str):
            raise InvalidRequest(f"{at}.text must be a string", param=f"{at}.text")
        texts.append(part["text"])
    return {"role": role, "content": "".join(texts)}


def function_item(item: dict[str, Any], kind: str, where: str) -> dict[str, Any]:
    """A ``function_call`` input item as an assistant turn's call, or a
    ``function_call_output`` as the tool message that answers it."""
    fields = ("call_id", "name", "arguments") if kind == "function_call" else ("call_id", "output")
    for name in fields:
        if not isinstance(item.get(name), str):
            raise InvalidRequest(f"{where}.{name} must be a string", param=f"{where}.{name}")
    if kind == "function_call_output":
        return {"role": "tool", "tool_call_id": item["call_id"], "content": item["output"]}
    call = {
        "id": item["call_id"],
        "type": "function",
        "function": {"name": item["name"], "arguments": item["arguments"]},
    }
    return {"role": "assistant", "content": None, "tool_calls": [call]}
