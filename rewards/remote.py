"""Remote reward: a vLLM pooling server (``vllm serve RM --runner pooling``). Each response
is sent as a chat (the server applies the reward model's template) with
``use_activation: false``, so the reward is the raw head output, never a softmax.

``/pooling`` (default) answers ``data[0].data``; ``/classify`` answers ``data[0].probs``.

Failures are ``RewardUnavailable`` (503) whose message says only what failed ("the remote
reward model failed (HTTP 400)"): the server's URL, its reply and the exception go to the
log, never to the client. A reward that is not a finite number (JSON ``NaN``,
``Infinity``, the string ``"nan"``) is ``reason="non_finite"``: one NaN would break the
ranking of every candidate of the search, and the JSON of the response.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import httpx

from rewards.batcher import ScoreItem, gather_or_cancel
from rewards.health_get import answers_get
from rewards.values import as_float
from search.errors import RewardUnavailable
from search.protocols import AsyncClosable
from search.types import Message
from transport.retry import RetryBudget, post_with_retries

logger = logging.getLogger(__name__)


def first_float(value: Any) -> float:
    """The first number of a (nested) list, which must be finite."""
    while isinstance(value, list):
        value = value[0]
    number = as_float(value)
    if not math.isfinite(number):
        raise RewardUnavailable(
            "the remote reward model returned a non-finite reward", reason="non_finite"
        )
    return number


class RemoteReward(AsyncClosable):
    # The pooling server's raw head output: no known range.
    bounds = None
    # Scores the texts; token ids are not read.
    takes_token_ids = False

    def __init__(
        self,
        url: str,
        *,
        api_key: str | None = None,
        timeout_s: float = 120.0,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        url = url.rstrip("/")
        if url.endswith(("/pooling", "/classify")):
            base, _, endpoint = url.rpartition("/")
        else:
            base, endpoint = url, "pooling"
        self.endpoint = "/" + endpoint
        self._url = base + self.endpoint  # for the log only
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = client or httpx.AsyncClient(
            base_url=base, headers=headers, timeout=timeout_s
        )
        # Retries stop while most attempts fail, so an outage is not multiplied (L4).
        self._retries = RetryBudget()

    async def check_health(self) -> None:
        """vLLM's ``GET /health`` on the pooling server (``server.health`` polls it)."""
        await answers_get(self._client, "/health", "the remote reward model's")

    async def score(
        self,
        conversation: Sequence[Message],
        responses: Sequence[str],
        *,
        partial: bool = False,
        rubric: str | None = None,
        token_ids: Sequence[Sequence[int]] | None = None,
    ) -> list[float]:
        return await self.score_items([ScoreItem(conversation, r, partial) for r in responses])

    async def score_items(self, items: Sequence[ScoreItem]) -> list[float]:
        # One request per item, all in flight at once: the pooling server batches them. The
        # first failure cancels the rest, whose rewards could no longer be used.
        calls = [self._score_one(it.conversation, it.response) for it in items]
        return await gather_or_cancel(calls)

    async def _score_one(self, conversation: Sequence[Message], response: str) -> float:
        body = {
            "messages": [*conversation, {"role": "assistant", "content": response}],
            "use_activation": False,
        }
        try:
            reply = await post_with_retries(self._client, self.endpoint, body, budget=self._retries)
            reply.raise_for_status()
            item = reply.json()["data"][0]
            return first_float(item["probs"] if self.endpoint == "/classify" else item["data"])
        except httpx.HTTPStatusError as exc:
            status = exc.response.status_code
            logger.warning(
                "remote reward %s answered %d: %.200s", self._url, status, exc.response.text
            )
            raise RewardUnavailable(f"the remote reward model failed (HTTP {status})") from exc
        except httpx.HTTPError as exc:
            logger.warning("remote reward %s failed: %r", self._url, exc)
            raise RewardUnavailable(
                f"the remote reward model failed ({type(exc).__name__})"
            ) from exc
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            logger.warning("remote reward %s sent a malformed reply: %r", self._url, exc)
            raise RewardUnavailable("the remote reward model sent a malformed reply") from exc

    async def aclose(self) -> None:
        await self._client.aclose()
