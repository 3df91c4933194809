"""Remote reward: a vLLM pooling server (``vllm serve RM --runner pooling``). Each response
is sent as a chat (the server applies the reward model's template) with
``use_activation: false``, so the reward is the raw head output, never a softmax.

``/pooling`` (default) answers ``data[0].data``; ``/classify`` answers ``data[0].probs``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import httpx

from rewards.batcher import ScoreItem
from search.engines.retry import post_with_retries
from search.errors import RewardUnavailable
from search.types import Message


def first_float(value: Any) -> float:
    while isinstance(value, list):
        value = value[0]
    return float(value)


class RemoteReward:
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
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = client or httpx.AsyncClient(
            base_url=base, headers=headers, timeout=timeout_s
        )

    async def score(
        self, conversation: Sequence[Message], responses: Sequence[str], *, partial: bool = False
    ) -> list[float]:
        return await self.score_items([ScoreItem(conversation, r, partial) for r in responses])

    async def score_items(self, items: Sequence[ScoreItem]) -> list[float]:
        # One request per item, all in flight at once: the pooling server batches them.
        calls = [self._score_one(it.conversation, it.response) for it in items]
        return list(await asyncio.gather(*calls))

    async def _score_one(self, conversation: Sequence[Message], response: str) -> float:
        body = {
            "messages": [*conversation, {"role": "assistant", "content": response}],
            "use_activation": False,
        }
        try:
            reply = await post_with_retries(self._client, self.endpoint, body)
            reply.raise_for_status()
            item = reply.json()["data"][0]
            return first_float(item["probs"] if self.endpoint == "/classify" else item["data"])
        except (httpx.HTTPError, KeyError, IndexError, TypeError, ValueError) as exc:
            raise RewardUnavailable(f"remote reward model failed: {exc!r}") from exc

    async def aclose(self) -> None:
        await self._client.aclose()
