"""Remote generator: a vLLM OpenAI-compatible server's ``/v1/completions`` with token-id
prompts, so alignserve can sit in front of a fleet of vLLM replicas behind a router.

Token ids travel both ways (``return_token_ids``), so tree searches never re-tokenise.
Cancelling the caller closes the HTTP request; vLLM aborts a request whose client left.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx

from search.engines.retry import post_with_retries
from search.errors import EngineUnavailable, InvalidRequest
from search.types import Completion, FinishReason, SamplingConfig

TOKEN_ID_PREFIX = "token_id:"


def completion_body(
    model: str, prompt_ids: Sequence[int], params: SamplingConfig, n: int
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "prompt": list(prompt_ids),
        "n": n,
        "max_tokens": params.max_tokens,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "top_k": params.top_k,
        "presence_penalty": params.presence_penalty,
        "frequency_penalty": params.frequency_penalty,
        "return_token_ids": True,
        "return_tokens_as_token_ids": True,
    }
    if params.seed is not None:
        body["seed"] = params.seed
    if params.stop:
        body["stop"] = list(params.stop)
    if params.top_logprobs or params.logprobs:
        body["logprobs"] = params.top_logprobs or 0
    return body


def _token_id(key: str) -> int:
    return int(key.removeprefix(TOKEN_ID_PREFIX))


def parse_choice(choice: dict[str, Any], params: SamplingConfig) -> Completion:
    token_ids = tuple(choice.get("token_ids") or ())
    logprobs = top = None
    cumulative = None
    lp = choice.get("logprobs")
    if lp:
        if params.logprobs:
            logprobs = tuple(float(x) for x in lp["token_logprobs"])
            cumulative = sum(logprobs)
        if params.top_logprobs:
            top = tuple(
                {_token_id(k): float(v) for k, v in (step or {}).items()}
                for step in lp["top_logprobs"]
            )
    reason = choice.get("finish_reason")
    finish: FinishReason = reason if reason in ("stop", "length") else "abort"
    return Completion(
        token_ids=token_ids,
        text=choice.get("text", ""),
        finish_reason=finish,
        cumulative_logprob=cumulative,
        logprobs=logprobs,
        top_logprobs=top,
    )


class RemoteGenerator:
    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        timeout_s: float = 600.0,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.model = model
        self._client = client or httpx.AsyncClient(
            base_url=base_url.rstrip("/"), headers=headers, timeout=timeout_s
        )

    async def generate(
        self, prompt_ids: Sequence[int], params: SamplingConfig, n: int = 1
    ) -> list[Completion]:
        body = completion_body(self.model, prompt_ids, params, n)
        try:
            response = await post_with_retries(self._client, "/v1/completions", body)
        except httpx.HTTPError as exc:
            raise EngineUnavailable(f"remote engine unreachable: {exc!r}") from exc
        if response.status_code in (400, 422):
            raise InvalidRequest(f"remote engine rejected the request: {_error_text(response)}")
        if response.status_code != 200:
            # Auth, routing and overload problems are the server's, not the client's.
            raise EngineUnavailable(
                f"remote engine answered HTTP {response.status_code}: {_error_text(response)}"
            )
        try:
            choices = sorted(response.json()["choices"], key=lambda c: c["index"])
            return [parse_choice(c, params) for c in choices]
        except (ValueError, KeyError, TypeError) as exc:
            raise EngineUnavailable(f"remote engine sent a malformed reply: {exc!r}") from exc

    async def check_health(self) -> None:
        try:
            (await self._client.get("/health")).raise_for_status()
        except httpx.HTTPError as exc:
            raise EngineUnavailable(f"remote engine unhealthy: {exc!r}") from exc

    async def aclose(self) -> None:
        await self._client.aclose()


def _error_text(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["message"])
    except Exception:
        return response.text[:200] or "(empty body)"
