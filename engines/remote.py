"""Remote generator: a vLLM OpenAI-compatible server's ``/v1/completions`` with token-id
prompts, so alignserve can sit in front of a fleet of vLLM replicas behind a router.

Token ids travel both ways (``return_token_ids``), so tree searches never re-tokenise.
Cancelling the caller closes the HTTP request; vLLM aborts a request whose client left.

Four calls, one request each:

- ``generate``: n samples of one prompt (retried by :func:`post_with_retries`).
- ``generate_batch``: one sample for each of many prompts, the prompts sent as a list of
  token-id lists (the judge scores a batch of responses in one call this way).
- ``generate_stream``: ``generate`` over SSE, yielding choices as they finish, so a caller
  can score early finishers while the rest still decode; the chunk parsing lives in
  :mod:`engines.remote_stream`. A non-200 before the stream maps as for
  ``generate``; a broken or short stream is EngineUnavailable.
- ``prompt_logprobs``: a prompt's own tokens scored (``echo``, ``logprobs``,
  ``max_tokens: 0``), for completions' echo with logprobs.

ε-sampling travels as ``vllm_xargs`` and needs the upstream started with
``--logits-processors engines.epsilon:EpsilonLogitsProcessor``; an upstream without it
would ignore ε silently, so the first request with ε asks it once
(engines.remote_epsilon), and ε is a 400 on an upstream that does not have it.

Behind a router, ``affinity_header`` sends the running search's key (transport.affinity)
with every one of the four calls, so the router's header policy keeps a search on one replica.

What the upstream says goes to the log, not to clients: its bodies and exception texts can
carry internal URLs and HTML pages. A 400 keeps only the JSON error message, sanitized
(vLLM's own validation text helps the client fix its request). Health checks use a client
of their own with a short timeout and two connections, so a hung ``/health`` upstream can
neither hold the generation pool nor hold a probe.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
from collections.abc import AsyncGenerator, Sequence
from typing import Any

import httpx

from engines.remote_epsilon import EpsilonProbe
from engines.remote_stream import ChoiceStream, StreamError
from search.errors import EngineUnavailable, InvalidRequest
from search.protocols import AsyncClosable, HealthChecked, PromptScorer, SearchRouted
from search.types import Completion, FinishReason, PromptLogprobs, SamplingConfig
from transport import affinity
from transport.retry import RetryBudget, post_with_retries, retry_after_s

logger = logging.getLogger(__name__)

TOKEN_ID_PREFIX = "token_id:"
# A black-holed upstream fails a call after this, not after the long read timeout.
CONNECT_TIMEOUT_S = 10.0
MAX_CLIENT_MESSAGE_CHARS = 200
MAX_RETRY_AFTER_S = 3600
# Streams retry only a failed connect, which sent nothing.
CONNECT_ATTEMPTS = 3
CONNECT_BACKOFF_S = 0.2
_URL = re.compile(r"\b\w+://\S+")
_CONTEXT = re.compile(r"maximum (model|context) length|context length", re.I)


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
        if params.include_stop:
            body["include_stop_str_in_output"] = True
    if params.top_logprobs or params.logprobs:
        body["logprobs"] = params.top_logprobs or 0
    if params.constraint is not None:
        # vLLM's own field on /v1/completions: the upstream decodes under the same grammar.
        body["structured_outputs"] = params.constraint.vllm_fields()
    if params.epsilon:
        # vLLM's extra_args, read by engines.epsilon's processor on the upstream.
        body["vllm_xargs"] = {"epsilon": params.epsilon}
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
        stop_reason=stop if isinstance(stop := choice.get("stop_reason"), str) else None,
    )


def parse_prompt_logprobs(prompt_ids: Sequence[int], lp: dict[str, Any]) -> PromptLogprobs:
    """An echoed prompt's ``logprobs`` (tokens named ``token_id:N``): the first position
    has none. ValueError when it does not echo exactly ``prompt_ids``."""
    tokens = [_token_id(t) for t in lp["tokens"]]
    if tokens != list(prompt_ids):
        raise ValueError("the echoed tokens are not the prompt's")
    logprobs = tuple(None if x is None else float(x) for x in lp["token_logprobs"])
    top = tuple(
        {_token_id(k): float(v) for k, v in (step or {}).items()} for step in lp["top_logprobs"]
    )
    if len(logprobs) != len(tokens) or len(top) != len(tokens):
        raise ValueError("the echoed logprobs do not cover the prompt")
    return PromptLogprobs(tuple(prompt_ids), logprobs, top)


def choose_model(served: Sequence[str], fallback: str | None) -> str:
    """The upstream's single model; among several, ``fallback`` when it is one of them."""
    if len(served) == 1:
        return served[0]
    if fallback is not None and fallback in served:
        return fallback
    listed = ", ".join(repr(name[:80]) for name in served[:8]) or "none"
    raise EngineUnavailable(
        f"the remote engine serves {listed}; choose one with --remote-model-name"
    )


class RemoteGenerator(HealthChecked, AsyncClosable, PromptScorer, SearchRouted):
    """``model``: the name sent upstream (``--remote-model-name``); None asks the
    upstream's ``/v1/models`` on first use: its single model, else ``fallback_model``
    (``--model``) when it is among several. The answer is kept once found; an upstream
    that cannot say yet (still loading) is asked again by the next request.

    ``client`` / ``health_client``: ready ``httpx.AsyncClient`` objects (tests); an
    injected ``client`` also serves the health checks unless ``health_client`` is given.

    ``affinity_header`` (``--upstream-affinity-header``): the header that carries the
    running search's key (transport.affinity) on every completions call, so a router's
    header policy keeps one search on one replica (docs/deployment.md); None sends none."""

    def __init__(
        self,
        base_url: str,
        model: str | None,
        *,
        fallback_model: str | None = None,
        api_key: str | None = None,
        timeout_s: float = 600.0,
        health_timeout_s: float = 5.0,
        client: httpx.AsyncClient | None = None,
        health_client: httpx.AsyncClient | None = None,
        affinity_header: str | None = None,
    ) -> None:
        self.affinity_header = affinity_header
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        base_url = base_url.rstrip("/")
        self.model = model
        self.fallback_model = fallback_model
        self._naming = asyncio.Lock()
        self._epsilon = EpsilonProbe()
        self._budget = RetryBudget()
        self._client = client or httpx.AsyncClient(
            base_url=base_url,
            headers=headers,
            timeout=httpx.Timeout(timeout_s, connect=min(CONNECT_TIMEOUT_S, timeout_s)),
        )
        if health_client is None and client is None:
            health_client = httpx.AsyncClient(
                base_url=base_url,
                headers=headers,
                timeout=health_timeout_s,
                limits=httpx.Limits(max_connections=2, max_keepalive_connections=1),
            )
        self._health_client = health_client or self._client

    async def generate(
        self, prompt_ids: Sequence[int], params: SamplingConfig, n: int = 1
    ) -> list[Completion]:
        await self.check_epsilon(params)
        body = completion_body(await self.upstream_model(), prompt_ids, params, n)
        return await self._complete(body, params, n)

    async def check_epsilon(self, params: SamplingConfig) -> None:
        """A 400 for ε-sampling on an upstream without its processor (module docstring)."""
        if params.epsilon:
            await self._epsilon.check(self._client, await self.upstream_model())

    async def generate_batch(
        self, prompts: Sequence[Sequence[int]], params: SamplingConfig
    ) -> list[Completion]:
        """One completion per prompt, in order, from ONE request (vLLM batches a list of
        token-id prompts; choice ``index`` is the prompt's, as n=1)."""
        if not prompts:
            return []
        await self.check_epsilon(params)
        body = completion_body(await self.upstream_model(), (), params, 1)
        body["prompt"] = [list(p) for p in prompts]
        return await self._complete(body, params, len(prompts))

    async def generate_stream(
        self, prompt_ids: Sequence[int], params: SamplingConfig, n: int = 1
    ) -> AsyncGenerator[list[tuple[int, Completion]], None]:
        """``generate``'s request streamed: yields ``(index, completion)`` lists as choices
        finish, each index in 0..n-1 exactly once, else EngineUnavailable at the end.

        Only a failed connect is retried (nothing was sent; same budget as ``generate``);
        a 429/5xx status maps to EngineUnavailable at once. Closing the iterator early
        (``aclose``, cancellation) closes the response, so vLLM aborts the request: wrap
        it in ``contextlib.aclosing`` when leaving before the end."""
        await self.check_epsilon(params)
        body = {
            **completion_body(await self.upstream_model(), prompt_ids, params, n),
            "stream": True,
            # vLLM's extension (0.32): hold a choice's tokens back until it finishes (its
            # first token still comes at once): two chunks per choice, not one per token.
            # Only finished choices are read; a server without it ignores the field.
            "stream_interval": params.max_tokens,
        }
        stream = ChoiceStream(n)
        response = await self._open_stream(body)
        try:
            if response.status_code != 200:
                await response.aread()
                raise_for_status(response)
            async for line in response.aiter_lines():
                finished = stream.feed(line)
                if finished:
                    yield [(c["index"], parse_choice(c, params)) for c in finished]
        except StreamError as exc:
            logger.warning("remote engine sent a malformed stream: %s", exc)
            raise EngineUnavailable("the remote engine sent a malformed reply") from exc
        except httpx.HTTPError as exc:
            logger.warning("remote engine stream failed: %r", exc)
            raise EngineUnavailable("the remote engine is unreachable") from exc
        finally:
            await response.aclose()
        if stream.missing():
            logger.warning(
                "remote engine stream ended without choices %s (done=%s)",
                stream.missing(),
                stream.done,
            )
            raise EngineUnavailable("the remote engine ended the stream early")

    async def prompt_logprobs(self, prompt_ids: Sequence[int], top_logprobs: int) -> PromptLogprobs:
        """The prompt's own tokens scored upstream: vLLM's completions API with ``echo``,
        ``logprobs`` and ``max_tokens: 0`` (nothing generated), tokens named by id."""
        body = {
            "model": await self.upstream_model(),
            "prompt": list(prompt_ids),
            "max_tokens": 0,
            "temperature": 0.0,
            "echo": True,
            "logprobs": top_logprobs,
            "return_tokens_as_token_ids": True,
        }
        response = await self._post(body)
        try:
            (choice,) = response.json()["choices"]
            return parse_prompt_logprobs(prompt_ids, choice["logprobs"])
        except (ValueError, KeyError, TypeError) as exc:
            logger.warning("remote engine sent a malformed reply: %r", exc)
            raise EngineUnavailable("the remote engine sent a malformed reply") from exc

    async def _post(self, body: dict[str, Any]) -> httpx.Response:
        """One non-streamed completions request (retried), its errors mapped to ours."""
        try:
            response = await post_with_retries(
                self._client,
                "/v1/completions",
                body,
                budget=self._budget,
                headers=self.routing_headers(),
            )
        except httpx.HTTPError as exc:
            logger.warning("remote engine unreachable: %r", exc)
            raise EngineUnavailable("the remote engine is unreachable") from exc
        raise_for_status(response)
        return response

    async def _complete(
        self, body: dict[str, Any], params: SamplingConfig, expected: int
    ) -> list[Completion]:
        response = await self._post(body)
        try:
            choices = sorted(response.json()["choices"], key=lambda c: c["index"])
            if [c["index"] for c in choices] != list(range(expected)):
                raise ValueError(f"choice indices are not 0..{expected - 1}")
            return [parse_choice(c, params) for c in choices]
        except (ValueError, KeyError, TypeError) as exc:
            logger.warning("remote engine sent a malformed reply: %r", exc)
            raise EngineUnavailable("the remote engine sent a malformed reply") from exc

    @property
    def routes_by_search(self) -> bool:
        """search.protocols.SearchRouted: true while the affinity header is sent."""
        return self.affinity_header is not None

    def routing_headers(self) -> dict[str, str]:
        """The running search's affinity header; empty when off or outside a search."""
        key = affinity.current()
        if self.affinity_header is None or key is None:
            return {}
        return {self.affinity_header: key}

    async def _open_stream(self, body: dict[str, Any]) -> httpx.Response:
        for attempt in range(CONNECT_ATTEMPTS):
            request = self._client.build_request(
                "POST", "/v1/completions", json=body, headers=self.routing_headers()
            )
            try:
                response = await self._client.send(request, stream=True)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                self._budget.failed()
                if attempt == CONNECT_ATTEMPTS - 1 or not self._budget.allows_retry():
                    logger.warning("remote engine unreachable: %r", exc)
                    raise EngineUnavailable("the remote engine is unreachable") from exc
                await asyncio.sleep(CONNECT_BACKOFF_S * 2**attempt)
            except httpx.HTTPError as exc:
                logger.warning("remote engine unreachable: %r", exc)
                raise EngineUnavailable("the remote engine is unreachable") from exc
            else:
                self._budget.succeeded()
                return response
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def upstream_model(self) -> str:
        """The model name the upstream serves (see the class docstring)."""
        if self.model is not None:
            return self.model
        async with self._naming:  # one /v1/models call, not one per waiting request
            if self.model is None:
                self.model = choose_model(await self.served_models(), self.fallback_model)
                logger.info("remote engine: sending model name %r upstream", self.model)
        return self.model

    async def served_models(self) -> list[str]:
        """The ids in the upstream's ``/v1/models``; EngineUnavailable when it cannot say."""
        try:
            response = await self._health_client.get("/v1/models")
            response.raise_for_status()
            data = response.json()["data"]
            return [str(entry["id"]) for entry in data]
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            logger.warning("remote engine: /v1/models failed: %s", type(exc).__name__)
            raise EngineUnavailable(
                "the remote engine did not list its models (GET /v1/models); "
                "name the model with --remote-model-name"
            ) from None

    async def check_health(self) -> None:
        """Raises when the upstream's /health is not 200; the message names no URL."""
        try:
            response = await self._health_client.get("/health")
        except httpx.HTTPError as exc:
            raise EngineUnavailable(
                f"remote engine health check failed: {type(exc).__name__}"
            ) from exc
        if response.status_code != 200:
            raise EngineUnavailable(
                f"remote engine health check answered HTTP {response.status_code}"
            )

    async def aclose(self) -> None:
        await self._client.aclose()
        if self._health_client is not self._client:
            await self._health_client.aclose()


def raise_for_status(response: httpx.Response) -> None:
    """Maps a non-200 (its body already read) to our errors; 200 passes."""
    if response.status_code in (400, 422):
        logger.info(
            "remote engine rejected a request (HTTP %d): %r",
            response.status_code,
            response.text[:500],
        )
        raise InvalidRequest(client_message(response))
    if response.status_code != 200:
        # Auth, routing and overload problems are the server's, not the client's.
        logger.warning(
            "remote engine answered HTTP %d: %r", response.status_code, response.text[:500]
        )
        raise EngineUnavailable(
            f"the remote engine failed (HTTP {response.status_code})",
            headers=retry_after_header(response),
        )


def client_message(response: httpx.Response) -> str:
    """What a client may read of an upstream 400: a context-length error in our words
    (its numbers would show internal prompts, e.g. the judge's), else the JSON error
    message on one line, without URLs, capped; never a raw body."""
    try:
        message = response.json()["error"]["message"]
    except Exception:
        message = None
    if not isinstance(message, str) or not message.strip():
        return "the remote engine rejected the request"
    if _CONTEXT.search(message):
        return "the prompt and max_tokens do not fit in the model's context length"
    text = " ".join(_URL.sub("<url>", message).split())
    if len(text) > MAX_CLIENT_MESSAGE_CHARS:
        text = text[: MAX_CLIENT_MESSAGE_CHARS - 3] + "..."
    return f"the remote engine rejected the request: {text}"


def retry_after_header(response: httpx.Response) -> dict[str, str] | None:
    """An upstream's Retry-After (429 or 503), passed on to our 503."""
    seconds = retry_after_s(response)
    if seconds is None:
        return None
    return {"Retry-After": str(min(MAX_RETRY_AFTER_S, max(1, math.ceil(seconds))))}
