"""OpenAI's logprobs shapes, from the engine's numbers for the chosen answer.

Every answer-producing engine call of a search asks for the sampled tokens' logprobs (and
their top alternatives) when the client does, so each candidate carries them as the
engine computed them; a response stitched from several engine calls (the tree and step
searches) carries each piece's, concatenated (``search.partial``, ``search.steps``).
This module only formats the chosen candidates':

- chat: ``{"content": [{"token", "logprob", "bytes", "top_logprobs": [{"token",
  "logprob", "bytes"}, ...]}, ...], "refusal": null}``, one entry per generated token
  and the ``top_logprobs`` most likely tokens at each position, most likely first;
- completions: ``{"tokens", "token_logprobs", "top_logprobs", "text_offset"}``, where
  each ``top_logprobs`` entry maps the ``logprobs`` most likely tokens and the chosen one
  (up to k + 1 entries, as OpenAI and vLLM) to their logprobs; with ``echo`` the prompt's
  tokens come first, the first of them with null entries (it has no context).

One entry per generated token, as vLLM's: the end-of-sequence token and the tokens of a
stop string cut from the text have theirs (``usage`` counts them too). A token's
``bytes`` are its own (``TokenBytes``): a character split over several byte-level tokens
shows U+FFFD in each token's text, but the bytes of the entries join into the answer's
exact UTF-8. A logprob of -inf is sent as -9999.0, as OpenAI and vLLM do (JSON has no
infinity).
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass
from typing import Any

from search.protocols import ChatTokenizer, TokenBytes
from search.types import Candidate, Completion, PromptLogprobs
from server.search_service import Prepared

MIN_LOGPROB = -9999.0


def clamp(logprob: float) -> float:
    """-inf (and NaN) as OpenAI's -9999.0."""
    return logprob if logprob > MIN_LOGPROB else MIN_LOGPROB


def token_bytes(tokenizer: ChatTokenizer, token_id: int) -> bytes:
    if isinstance(tokenizer, TokenBytes):
        return tokenizer.token_bytes(token_id)
    return tokenizer.decode([token_id]).encode("utf-8")


def token_text(tokenizer: ChatTokenizer, token_id: int) -> str:
    return token_bytes(tokenizer, token_id).decode("utf-8", errors="replace")


def ranked(top: dict[int, float] | None, k: int) -> list[tuple[int, float]]:
    """The k most likely of ``top`` (token -> logprob), most likely first; ties to the
    lower id."""
    if not top or k <= 0:
        return []
    return sorted(top.items(), key=lambda item: (-item[1], item[0]))[:k]


@dataclass(frozen=True)
class TokenLogprobs:
    """Per-token logprobs of a text: its token ids, each one's logprob (None for a prompt's
    first token) and top alternatives (None where there are none)."""

    token_ids: tuple[int, ...]
    logprobs: tuple[float | None, ...]
    top: tuple[dict[int, float] | None, ...]

    @classmethod
    def of(cls, completion: Completion) -> TokenLogprobs | None:
        """A generated answer's, or None when the engine gave it none (an answer the
        deadline cut, rebuilt from its text)."""
        if completion.logprobs is None or len(completion.logprobs) != completion.num_tokens:
            return None
        given = completion.top_logprobs
        top: tuple[dict[int, float] | None, ...] = (None,) * completion.num_tokens
        if given is not None and len(given) == completion.num_tokens:
            top = tuple(given)
        return cls(completion.token_ids, tuple(completion.logprobs), top)

    @classmethod
    def of_prompt(cls, prompt: PromptLogprobs) -> TokenLogprobs:
        top = tuple(
            None if lp is None else t
            for t, lp in zip(prompt.top_logprobs, prompt.logprobs, strict=True)
        )
        return cls(prompt.token_ids, prompt.logprobs, top)

    def __add__(self, other: TokenLogprobs) -> TokenLogprobs:
        return TokenLogprobs(
            self.token_ids + other.token_ids,
            self.logprobs + other.logprobs,
            self.top + other.top,
        )


# -- chat ---------------------------------------------------------------------------
def chat_entries(
    tokenizer: ChatTokenizer, tokens: TokenLogprobs, top_logprobs: int
) -> list[dict[str, Any]]:
    """``logprobs.content`` of a chat choice: one entry per token."""

    def entry(token_id: int, logprob: float) -> dict[str, Any]:
        raw = token_bytes(tokenizer, token_id)
        return {
            "token": raw.decode("utf-8", errors="replace"),
            "logprob": clamp(logprob),
            "bytes": list(raw),
        }

    content = []
    for token_id, logprob, top in zip(tokens.token_ids, tokens.logprobs, tokens.top, strict=True):
        item = entry(token_id, MIN_LOGPROB if logprob is None else logprob)
        item["top_logprobs"] = [entry(t, lp) for t, lp in ranked(top, top_logprobs)]
        content.append(item)
    return content


def chat_logprobs(content: list[dict[str, Any]]) -> dict[str, Any]:
    return {"content": content, "refusal": None}


def chat_choice_content(prepared: Prepared, candidate: Candidate) -> list[dict[str, Any]] | None:
    """The chosen ``candidate``'s ``logprobs.content`` when the request asked for logprobs;
    None when it did not, or when the engine gave the answer none (an answer the deadline
    cut, rebuilt from its text: its choice says ``logprobs: null``)."""
    request = prepared.request
    if not request.logprobs:
        return None
    tokens = TokenLogprobs.of(candidate.completion)
    if tokens is None:
        return None
    return chat_entries(prepared.context.tokenizer, tokens, request.top_logprobs or 0)


# -- completions --------------------------------------------------------------------
def completion_logprobs(
    tokenizer: ChatTokenizer, tokens: TokenLogprobs, logprobs: int
) -> dict[str, Any]:
    """A text choice's ``logprobs``: ``logprobs`` (k) alternatives and the chosen token at
    each position. ``text_offset``: where each token starts in the text, counted in
    characters of its bytes decoded (a token that starts a split character starts where
    that character does)."""
    texts: list[str] = []
    offsets: list[int] = []
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    chars = 0
    for token_id in tokens.token_ids:
        raw = token_bytes(tokenizer, token_id)
        texts.append(raw.decode("utf-8", errors="replace"))
        offsets.append(chars)
        chars += len(decoder.decode(raw))
    tops: list[dict[str, float] | None] = []
    for token_id, logprob, top in zip(tokens.token_ids, tokens.logprobs, tokens.top, strict=True):
        if logprob is None:
            tops.append(None)
            continue
        chosen = [*ranked(top, logprobs), (token_id, logprob)]
        entries: dict[str, float] = {}
        for t, lp in chosen:
            entries.setdefault(token_text(tokenizer, t), clamp(lp))
        tops.append(entries)
    return {
        "tokens": texts,
        "token_logprobs": [None if lp is None else clamp(lp) for lp in tokens.logprobs],
        "top_logprobs": tops,
        "text_offset": offsets,
    }


def sliced(whole: dict[str, Any], start: int, end: int) -> dict[str, Any]:
    """Tokens ``start:end`` of a choice's ``logprobs`` (a stream chunk's)."""
    return {key: values[start:end] for key, values in whole.items()}


def text_choice_logprobs(
    prepared: Prepared,
    candidate: Candidate,
    logprobs: int | None,
    prompt: PromptLogprobs | None = None,
) -> dict[str, Any] | None:
    """A text choice's ``logprobs`` when the request asked for them (``logprobs``: k),
    the ``prompt``'s first when it is echoed; None when it did not ask, or when the
    engine gave the answer none (an answer the deadline cut)."""
    if logprobs is None:
        return None
    tokens = TokenLogprobs.of(candidate.completion)
    if tokens is None:
        return None
    if prompt is not None:
        tokens = TokenLogprobs.of_prompt(prompt) + tokens
    return completion_logprobs(prepared.context.tokenizer, tokens, logprobs)
