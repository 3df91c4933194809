"""vLLM's tokenizer routes, in vLLM's request and response shapes, on the served policy's
tokenizer: ``POST /tokenize``, ``POST /detokenize`` and ``GET /tokenizer_info``. Clients
written for vLLM find them (lm-eval's ``local-completions`` picks its remote tokenizer
when ``/tokenizer_info`` and ``/tokenize`` answer, so it needs no tokenizer of its own).

- ``/tokenize`` takes a prompt, ``{"prompt", "add_special_tokens" (default true)}``, or
  a conversation, ``{"messages", "add_generation_prompt" (default true),
  "add_special_tokens" (default false)}``, and ``return_token_strs``; it answers
  ``{"count", "max_model_len", "tokens", "token_strs"}``. A conversation's ids are the
  ones a chat request's search would start from (the same rendering: message text that
  spells a special token stays text).
- ``/detokenize`` takes ``{"tokens"}`` and answers ``{"prompt"}``, special tokens kept.
- ``/tokenizer_info`` answers the tokenizer's configuration (its special tokens, chat
  template, class; no file paths), which vLLM serves with
  ``--enable-tokenizer-info-endpoint`` and alignserve always.

Bounded as the search routes are: the API key (when the server has keys) is checked
before the body is read, the body limit applies, text is bounded by --max-messages and
--max-request-chars before it is tokenized, ids by the vocabulary and the model's context
length; tokenizing runs in the render thread, off the event loop. A ``model`` other than
the served one is a 404, as for the search routes; vLLM's fields alignserve cannot honour
(``chat_template``, ``tools``, ``continue_final_message``, ...) are 400s naming them.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from search.errors import InvalidRequest, LimitExceeded, ModelNotFound
from search.protocols import ServedTokenizer
from server.completions.protocol import valid_text
from server.completions.serving import off_loop, vocab_size
from server.openapi_docs import errors
from server.protocol import ChatMessage
from server.search_service import SearchService, check_request_chars
from server.serving_base import search_service

router = APIRouter()

# vLLM's fields of /tokenize that alignserve refuses when set: the server renders with the
# model's own template and no tools.
REFUSED = (
    "chat_template",
    "chat_template_kwargs",
    "tools",
    "mm_processor_kwargs",
    "media_io_kwargs",
    "continue_final_message",
)


class TokenizeRequest(BaseModel):
    """vLLM's two /tokenize requests in one: a ``prompt`` or a conversation
    (``messages``), never both."""

    # Strict, as the search routes: JSON 0 is not false.
    model_config = ConfigDict(extra="allow", strict=True)

    model: str | None = None
    prompt: str | None = None
    messages: list[ChatMessage] | None = Field(default=None, min_length=1)
    # vLLM's defaults: true for a prompt, false for a conversation (its template holds
    # the special tokens).
    add_special_tokens: bool | None = None
    add_generation_prompt: bool = True
    return_token_strs: bool | None = False

    def reject_unsupported(self) -> None:
        extra = self.model_extra or {}
        for name in REFUSED:
            if extra.get(name) not in (None, False, [], {}):
                raise InvalidRequest(f"{name} is not supported by alignserve", param=name)
        if (self.prompt is None) == (self.messages is None):
            raise InvalidRequest(
                "send a prompt (a string) or messages (a conversation), one of the two",
                param="prompt" if self.prompt is None else "messages",
            )


class TokenizeResponse(BaseModel):
    count: int
    max_model_len: int
    tokens: list[int]
    token_strs: list[str] | None


class DetokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    model: str | None = None
    tokens: list[Annotated[int, Field(ge=0, le=2**63 - 1)]]


class DetokenizeResponse(BaseModel):
    prompt: str


class TokenizerInfo(BaseModel):
    """The tokenizer's configuration (tokenizer_config.json's fields) and class."""

    model_config = ConfigDict(extra="allow")

    tokenizer_class: str


ERRORS = errors(400, 401, 404, 413, 500, 503)


def check_model(model: str | None, service: SearchService) -> None:
    served = service.runtime.model_name
    if model is not None and model != served:
        raise ModelNotFound(f"model {model!r} is not served here; use {served!r}", param="model")


@router.post("/tokenize", response_model=TokenizeResponse, responses=ERRORS)
async def tokenize(body: TokenizeRequest, raw: Request) -> dict[str, Any]:
    service = search_service(raw)
    check_model(body.model, service)
    body.reject_unsupported()
    tokenizer = service.runtime.tokenizer
    served = tokenizer if isinstance(tokenizer, ServedTokenizer) else None
    if body.messages is not None:
        request_messages = body.messages
        if len(request_messages) > service.settings.max_messages:
            raise LimitExceeded(
                f"{len(request_messages)} messages; the server accepts at most "
                f"{service.settings.max_messages} (--max-messages)",
                limit="messages",
                param="messages",
            )
        conversation = [m.as_message() for m in request_messages]
        chars = sum(len(m["content"]) for m in conversation)
        check_request_chars(chars, service.settings, what="the messages", param="messages")
        if served is not None:
            ids = await off_loop(
                service,
                lambda: served.render_conversation(
                    conversation, add_generation_prompt=body.add_generation_prompt
                ),
            )
        elif body.add_generation_prompt:
            ids = await service.tokenize(tokenizer.render_chat, conversation)
        else:
            raise InvalidRequest(
                "add_generation_prompt false is not supported by this server's tokenizer",
                param="add_generation_prompt",
            )
        if body.add_special_tokens and served is not None:
            # vLLM adds the tokenizer's BOS/EOS around the rendered template's ids.
            ids = await off_loop(service, add_special_ids, served, ids)
    else:
        assert body.prompt is not None  # reject_unsupported: one of the two
        prompt = body.prompt
        try:
            valid_text(prompt)
        except ValueError as exc:
            raise InvalidRequest(str(exc), param="prompt") from None
        check_request_chars(len(prompt), service.settings, what="the prompt", param="prompt")
        add = True if body.add_special_tokens is None else body.add_special_tokens
        if served is not None:
            ids = await off_loop(
                service, lambda: served.encode_text(prompt, add_special_tokens=add)
            )
        else:
            ids = await service.tokenize(tokenizer.encode, prompt)
    strings = None
    if body.return_token_strs:
        if served is not None:
            strings = await off_loop(service, served.token_strings, ids)
        else:
            strings = [tokenizer.decode([i]) for i in ids]
    return {
        "count": len(ids),
        "max_model_len": service.runtime.max_model_len,
        "tokens": ids,
        "token_strs": strings,
    }


def add_special_ids(tokenizer: ServedTokenizer, ids: list[int]) -> list[int]:
    """``ids`` with the special tokens the tokenizer adds around any text (the BOS of a
    Llama tokenizer; none for SmolLM2's): an empty text encoded with them gives them."""
    around = tokenizer.encode_text("", add_special_tokens=True)
    return [*around, *ids] if around else ids


@router.post("/detokenize", response_model=DetokenizeResponse, responses=ERRORS)
async def detokenize(body: DetokenizeRequest, raw: Request) -> dict[str, Any]:
    service = search_service(raw)
    check_model(body.model, service)
    ids = body.tokens
    limit = service.runtime.max_model_len
    if len(ids) > limit:
        raise InvalidRequest(
            f"{len(ids)} tokens; at most the model's context length ({limit}) are decoded",
            param="tokens",
        )
    size = await vocab_size(service)
    if ids and size is not None and max(ids) >= size:
        raise InvalidRequest(
            f"token id {max(ids)} is outside the vocabulary (0 to {size - 1})", param="tokens"
        )
    tokenizer = service.runtime.tokenizer
    if isinstance(tokenizer, ServedTokenizer):
        text = await off_loop(service, tokenizer.detokenize, ids)
    else:
        text = await off_loop(service, tokenizer.decode, ids)
    return {"prompt": str(text)}


@router.get("/tokenizer_info", response_model=TokenizerInfo, responses=errors(401, 500, 503))
async def tokenizer_info(raw: Request) -> dict[str, Any]:
    tokenizer = search_service(raw).runtime.tokenizer
    if isinstance(tokenizer, ServedTokenizer):
        return tokenizer.tokenizer_info()
    # A tokenizer that lists nothing more (the unit tests' fakes).
    return {
        "tokenizer_class": type(tokenizer).__name__,
        "bos_token": None,
        "eos_token": None,
        "pad_token": None,
    }
