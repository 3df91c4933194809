"""Every failure is one OpenAI error JSON; the server keeps answering after each."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from search.errors import EngineUnavailable, RewardUnavailable
from search.fakes import TableReward
from search.types import Message
from server.settings import Settings

USER = [{"role": "user", "content": "hi"}]
URL = "/v1/chat/completions"
GOOD = {"model": "m", "messages": USER}


def assert_error(r: Any, status: int, error_type: str, param: str | None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    data = r.json()
    assert set(data) == {"error"}
    err = data["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert (err["type"], err["param"], err["code"]) == (error_type, param, status)
    assert isinstance(err["message"], str) and err["message"]
    assert "Traceback" not in r.text
    return dict(err)


BAD_REQUESTS: list[tuple[str, dict[str, Any], str | None, str | None]] = [
    # (case, json body, expected param, a fragment of the message)
    ("unknown algorithm", {**GOOD, "search": {"algorithm": "nope"}}, "search.algorithm", "nope"),
    ("search.n=0", {**GOOD, "search": {"n": 0}}, "search.n", None),
    ("search.n above max_n", {**GOOD, "search": {"n": 10000}}, "search.n", "at most 64"),
    ("search.n not a number", {**GOOD, "search": {"n": "abc"}}, "search.n", None),
    ("unknown search option", {**GOOD, "search": {"beam": 2}}, "search.beam", None),
    (
        "return_candidates not bool",
        {**GOOD, "search": {"return_candidates": "yes"}},
        "search.return_candidates",
        None,
    ),
    ("max_tokens=-1", {**GOOD, "max_tokens": -1}, "max_tokens", None),
    ("max_tokens=0", {**GOOD, "max_tokens": 0}, "max_tokens", None),
    ("messages empty", {**GOOD, "messages": []}, "messages", None),
    ("messages a string", {**GOOD, "messages": "hi"}, "messages", None),
    ("messages missing", {"model": "m"}, "messages", None),
    (
        "bad role",
        {**GOOD, "messages": [{"role": "robot", "content": "x"}]},
        "messages.0.role",
        None,
    ),
    ("temperature a string", {**GOOD, "temperature": "hot"}, "temperature", None),
    ("temperature too high", {**GOOD, "temperature": 2.5}, "temperature", None),
    ("top_p zero", {**GOOD, "top_p": 0}, "top_p", None),
    ("n zero", {**GOOD, "n": 0}, "n", None),
    ("n above search.n", {**GOOD, "n": 5, "search": {"n": 4}}, "n", "search.n (4)"),
    ("n above default search.n", {**GOOD, "n": 5}, "n", None),
    ("tools", {**GOOD, "tools": [{"type": "retrieval"}]}, "tools.0.type", None),
    ("logprobs a number", {**GOOD, "logprobs": 1}, "logprobs", None),
    ("top_logprobs without logprobs", {**GOOD, "top_logprobs": 2}, "top_logprobs", "logprobs"),
    ("top_logprobs over 20", {**GOOD, "logprobs": True, "top_logprobs": 21}, "top_logprobs", None),
    (
        "response_format",
        {**GOOD, "response_format": {"type": "xml"}},
        "response_format.type",
        None,
    ),
    ("bool as a number", {**GOOD, "presence_penalty": False}, "presence_penalty", None),
    ("number as a string", {**GOOD, "temperature": "0.5"}, "temperature", None),
    ("empty stop string", {**GOOD, "stop": ["ok", ""]}, "stop", "must not be empty"),
    ("five stop strings", {**GOOD, "stop": ["a", "b", "c", "d", "e"]}, "stop", "at most 4"),
    ("context too long", {**GOOD, "max_tokens": 4000}, "max_tokens", "context length (3000)"),
    ("max_tokens over the limit", {**GOOD, "max_tokens": 5000}, "max_tokens", "at most 4096"),
    (
        "too many live candidates",
        {**GOOD, "search": {"algorithm": "spec_rejection", "n": 4, "n_initial": 300}},
        "search",
        "300 candidates alive",
    ),
]


@pytest.mark.parametrize(
    ("body", "param", "fragment"),
    [case[1:] for case in BAD_REQUESTS],
    ids=[case[0] for case in BAD_REQUESTS],
)
async def test_bad_request_is_400_and_server_keeps_going(
    serve_app: Any, body: dict[str, Any], param: str | None, fragment: str | None
) -> None:
    async with serve_app() as client:
        r = await client.post(URL, json=body)
        err = assert_error(r, 400, "invalid_request_error", param)
        if fragment:
            assert fragment in err["message"]
        good = await client.post(URL, json=GOOD)
    assert good.status_code == 200
    assert good.json()["choices"][0]["message"]["content"] == "three"


async def test_malformed_json(serve_app: Any) -> None:
    async with serve_app() as client:
        r = await client.post(URL, content=b"{bad", headers={"content-type": "application/json"})
        assert r.status_code == 400
        err = r.json()["error"]
        assert err["message"] == "the request body is not valid JSON"
        assert (err["type"], err["code"]) == ("invalid_request_error", 400)
        assert set(err) == {"message", "type", "param", "code"}
        assert (await client.post(URL, json=GOOD)).status_code == 200


async def test_malformed_json_has_no_param(serve_app: Any) -> None:
    async with serve_app() as client:
        r = await client.post(URL, content=b"{bad", headers={"content-type": "application/json"})
    assert r.json()["error"]["param"] is None


async def test_body_not_an_object(serve_app: Any) -> None:
    async with serve_app() as client:
        r = await client.post(URL, json=["not", "an", "object"])
    assert_error(r, 400, "invalid_request_error", None)


async def test_unknown_model_is_404(serve_app: Any) -> None:
    async with serve_app() as client:
        r = await client.post(URL, json={**GOOD, "model": "other"})
        err = assert_error(r, 404, "not_found_error", "model")
        assert "'other'" in err["message"] and "'m'" in err["message"]
        assert (await client.post(URL, json=GOOD)).status_code == 200


async def test_unknown_route_and_method(serve_app: Any) -> None:
    async with serve_app() as client:
        missing = await client.get("/v1/nothing")
        wrong = await client.get(URL)
    assert_error(missing, 404, "not_found_error", None)
    assert_error(wrong, 405, "invalid_request_error", None)


async def test_unknown_fields_are_ignored(serve_app: Any) -> None:
    async with serve_app() as client:
        r = await client.post(URL, json={**GOOD, "metadata": {"k": "v"}, "tools": []})
    assert r.status_code == 200


class FlakyReward:
    """Raises a RuntimeError on the first call, then scores like the table."""

    bounds = None
    takes_token_ids = False

    def __init__(self) -> None:
        self.inner = TableReward({"one": 0.1, "three": 0.8, "seven": 0.5})
        self.calls = 0

    async def score(
        self, conversation: Sequence[Message], responses: Sequence[str], **options: Any
    ) -> list[float]:
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("secret internal detail /srv/model.py line 42")
        return await self.inner.score(conversation, responses, **options)


async def test_unexpected_error_is_a_bare_500(serve_app: Any, runtime_of: Any) -> None:
    async with serve_app(runtime_of(reward=FlakyReward()), raise_app_exceptions=False) as client:
        r = await client.post(URL, json=GOOD)
        err = assert_error(r, 500, "internal_error", None)
        assert err["message"] == "internal server error"
        assert "secret" not in r.text and "RuntimeError" not in r.text
        after = await client.post(URL, json=GOOD)
    assert after.status_code == 200
    assert after.json()["choices"][0]["message"]["content"] == "three"


class Unavailable:
    bounds = None
    takes_token_ids = False

    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    async def generate(self, *_: Any, **__: Any) -> Any:
        raise self.exc

    async def score(self, *_: Any, **__: Any) -> Any:
        raise self.exc


async def test_engine_unavailable_is_503(serve_app: Any, runtime_of: Any) -> None:
    async with serve_app(runtime_of(Unavailable(EngineUnavailable("engine gone")))) as client:
        r = await client.post(URL, json=GOOD)
    err = assert_error(r, 503, "service_unavailable", None)
    assert err["message"] == "engine gone"


async def test_reward_unavailable_is_503(serve_app: Any, runtime_of: Any) -> None:
    reward = Unavailable(RewardUnavailable("reward gone"))
    async with serve_app(runtime_of(reward=reward)) as client:
        r = await client.post(URL, json=GOOD)
    assert assert_error(r, 503, "service_unavailable", None)["message"] == "reward gone"


class HangingReward:
    bounds = None
    takes_token_ids = False

    def __init__(self) -> None:
        self.cancelled = 0

    async def score(self, *_: Any, **__: Any) -> Any:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise


async def test_reward_model_that_hangs_is_504_and_the_call_is_abandoned(
    serve_app: Any, runtime_of: Any
) -> None:
    reward = HangingReward()
    settings = Settings(reward_timeout_s=0.2)
    async with serve_app(runtime_of(reward=reward), settings) as client:
        r = await client.post(URL, json=GOOD)
        text = (await client.get("/metrics")).text
    err = assert_error(r, 504, "timeout", None)
    assert err["message"] == "the reward model did not answer within 0.2 s"
    assert reward.cancelled == 1
    assert 'alignserve_reward_errors_total{reward="judge"} 1.0' in text


async def test_stream_unexpected_error_ends_cleanly(
    serve_app: Any, runtime_of: Any, parse_sse: Any
) -> None:
    async with serve_app(runtime_of(reward=FlakyReward()), raise_app_exceptions=False) as client:
        r = await client.post(URL, json={**GOOD, "stream": True})
    events = parse_sse(r.text)
    assert events[-1] == "[DONE]"
    assert events[0]["error"]["code"] == 500
