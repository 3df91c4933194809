"""Does a remote vLLM server honour ε-sampling? It does only when started with
``--logits-processors engines.epsilon:EpsilonLogitsProcessor``; without the processor
vLLM passes ``vllm_xargs`` on to nobody and samples as if ε were 0, so a client's ε would
be dropped silently (what DESIGN.md forbids of every sampling parameter).

The question is asked once, on the first request with ε: a one-token request with ε = 2.
The processor's ``validate_params`` refuses it (a 400 naming epsilon); a server without
it samples the token (200). Anything else is the upstream's failure and is asked again
by the next request.
"""

from __future__ import annotations

import asyncio
import logging

import httpx

from search.errors import EngineUnavailable, InvalidRequest

logger = logging.getLogger(__name__)


class EpsilonProbe:
    def __init__(self) -> None:
        self.supported: bool | None = None  # None: not asked yet
        self._asking = asyncio.Lock()

    async def check(self, client: httpx.AsyncClient, model: str) -> None:
        """InvalidRequest (400, ``param="epsilon"``) when the upstream lacks the processor."""
        if self.supported is None:
            async with self._asking:  # one probe, not one per waiting request
                if self.supported is None:
                    self.supported = await ask(client, model)
                    logger.info("remote engine: epsilon sampling available: %s", self.supported)
        if not self.supported:
            raise InvalidRequest(
                "epsilon sampling needs the remote engine started with --logits-processors "
                "engines.epsilon:EpsilonLogitsProcessor",
                param="epsilon",
            )


async def ask(client: httpx.AsyncClient, model: str) -> bool:
    body = {"model": model, "prompt": [0], "max_tokens": 1, "vllm_xargs": {"epsilon": 2.0}}
    try:
        response = await client.post("/v1/completions", json=body)
    except httpx.HTTPError as exc:
        logger.warning("remote engine unreachable: %r", exc)
        raise EngineUnavailable("the remote engine is unreachable") from exc
    if response.status_code == 200:
        return False
    if response.status_code in (400, 422) and "epsilon" in response.text:
        return True
    logger.warning("remote engine: the epsilon probe answered HTTP %d", response.status_code)
    raise EngineUnavailable(f"the remote engine failed (HTTP {response.status_code})")
