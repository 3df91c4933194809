"""OpenAIJudgeReward against a fake OpenAI-compatible server (a Starlette app under uvicorn,
in the test's event loop) on 127.0.0.1: real HTTP, scripted replies."""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from rewards.judge import judge_messages
from rewards.openai_judge import (
    SCORE_RESPONSE_FORMAT,
    OpenAIJudgeReward,
    api_base,
    gather_or_cancel,
)
from search.errors import RewardUnavailable

CONV = [{"role": "user", "content": "What is 2 + 2?"}]
Reply = tuple[int, Any]


def logprobs_reply(probs: dict[str, float]) -> Reply:
    """A one-token reply whose top logprobs are ``probs`` (the first entry is sampled)."""
    top = [{"token": t, "logprob": math.log(p), "bytes": None} for t, p in probs.items()]
    first = {**top[0], "top_logprobs": top}
    choice = {
        "index": 0,
        "message": {"role": "assistant", "content": top[0]["token"]},
        "logprobs": {"content": [first]},
        "finish_reason": "length",
    }
    return 200, {"id": "c", "object": "chat.completion", "choices": [choice]}


def content_reply(content: str | None) -> Reply:
    """A reply with no logprobs (an endpoint that does not return them)."""
    choice = {"index": 0, "message": {"role": "assistant", "content": content}, "logprobs": None}
    return 200, {"id": "c", "object": "chat.completion", "choices": [choice]}


def judged(body: dict[str, Any]) -> str:
    """The response a judge request is about (the user message's middle)."""
    text = body["messages"][1]["content"]
    return text.split("Assistant's response:\n")[1].split("\n\n")[0]


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class FakeOpenAI:
    url: str = ""
    chat: Callable[[dict[str, Any]], Reply] = lambda _body: logprobs_reply({"5": 1.0})
    models: list[str] = field(default_factory=lambda: ["judge-m", "other"])
    seen: list[Seen] = field(default_factory=list)

    def chat_bodies(self) -> list[dict[str, Any]]:
        return [s.body for s in self.seen if s.path.endswith("/chat/completions")]

    async def handle_chat(self, request: Request) -> Response:
        body = await request.json()
        self.seen.append(Seen(request.url.path, dict(request.headers), body))
        status, payload = self.chat(body)
        if isinstance(payload, str):
            return PlainTextResponse(payload, status_code=status)
        return JSONResponse(payload, status_code=status)

    async def handle_models(self, request: Request) -> Response:
        self.seen.append(Seen(request.url.path, dict(request.headers), None))
        await asyncio.sleep(0.05)  # long enough for concurrent first calls to overlap
        data = [{"id": m, "object": "model"} for m in self.models]
        return JSONResponse({"object": "list", "data": data})


@asynccontextmanager
async def serving(routes: list[Route]) -> AsyncIterator[str]:
    """A uvicorn server for ``routes`` on a free port of 127.0.0.1; yields its URL."""
    config = uvicorn.Config(
        Starlette(routes=routes), host="127.0.0.1", port=0, log_level="warning", lifespan="off"
    )
    server = uvicorn.Server(config)
    task = asyncio.ensure_future(server.serve())
    while not server.started:
        assert not task.done(), "the fake server did not start"
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@pytest.fixture(scope="module")
async def fake_server() -> AsyncIterator[list[FakeOpenAI]]:
    """One server for the module; each test gets a fresh script (``fake``)."""
    current = [FakeOpenAI()]

    async def chat(request: Request) -> Response:
        return await current[0].handle_chat(request)

    async def models(request: Request) -> Response:
        return await current[0].handle_models(request)

    routes = [
        Route("/v1/chat/completions", chat, methods=["POST"]),
        Route("/v1/models", models),
    ]
    async with serving(routes) as url:
        current[0].url = url
        yield current


@pytest.fixture
def fake(fake_server: list[FakeOpenAI]) -> FakeOpenAI:
    fake_server[0] = FakeOpenAI(url=fake_server[0].url)
    return fake_server[0]


@pytest.fixture
async def judge(fake: FakeOpenAI) -> AsyncIterator[Callable[..., OpenAIJudgeReward]]:
    made: list[OpenAIJudgeReward] = []

    def make(**kw: Any) -> OpenAIJudgeReward:
        kw.setdefault("model", "judge-m")
        made.append(OpenAIJudgeReward(kw.pop("base_url", fake.url + "/v1"), **kw))
        return made[-1]

    yield make
    for reward in made:
        await reward.aclose()


# -- logprobs ----------------------------------------------------------------------------

SCRIPT = {
    "good": {"9": 0.9, "The": 0.1},
    "bad": {"1": 0.5, "I": 0.5},
    # "7" and " 7" are one digit; "The" is not a digit: (7 * 0.6 + 3 * 0.2) / 0.8 = 6.
    "mixed": {"7": 0.5, "The": 0.2, "3": 0.2, " 7": 0.1},
}


async def test_logprobs_expected_score(fake: FakeOpenAI, judge: Callable[..., Any]) -> None:
    fake.chat = lambda body: logprobs_reply(SCRIPT[judged(body)])
    reward = judge()
    assert reward.bounds == (0.0, 1.0)
    scores = await reward.score(CONV, ["good", "bad", "mixed"])
    assert scores == pytest.approx([1.0, 0.0, 5 / 8])
    body = fake.chat_bodies()[0]
    assert body["model"] == "judge-m"
    assert body["max_tokens"] == 1
    assert body["temperature"] == 0
    assert body["logprobs"] is True
    assert body["top_logprobs"] == 20
    assert "response_format" not in body
    assert "continue_final_message" not in body  # hosted APIs reject unknown fields
    assert sorted(judged(b) for b in fake.chat_bodies()) == ["bad", "good", "mixed"]
    assert reward.active_mode == "logprobs"


async def test_no_digit_in_top_logprobs_is_no_score(
    fake: FakeOpenAI, judge: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    fake.chat = lambda _body: logprobs_reply({"The": 0.6, "Rating": 0.4})
    with pytest.raises(RewardUnavailable) as info:
        await judge().score(CONV, ["x"])
    assert info.value.reason == "no_score"
    assert info.value.status_code == 503
    assert info.value.message == (
        "the judge's reply held no score: no digit 1-9 among the top tokens"
    )
    # The judge's own reply goes to the operator's log only (M9).
    assert "Rating" not in info.value.message
    assert "openai-judge judge-m: the judge's reply held no score" in caplog.text
    assert "Rating" in caplog.text


async def test_sampled_token_stands_in_for_missing_top_logprobs(
    fake: FakeOpenAI, judge: Callable[..., Any]
) -> None:
    def reply(_body: dict[str, Any]) -> Reply:
        status, payload = logprobs_reply({"3": 0.9})
        payload["choices"][0]["logprobs"]["content"][0]["top_logprobs"] = []
        return status, payload

    fake.chat = reply
    assert await judge().score(CONV, ["x"]) == pytest.approx([0.25])


async def test_logprobs_mode_does_not_fall_back(
    fake: FakeOpenAI, judge: Callable[..., Any]
) -> None:
    fake.chat = lambda _body: content_reply("7")
    reward = judge(mode="logprobs")
    with pytest.raises(RewardUnavailable) as info:
        await reward.score(CONV, ["x"])
    assert info.value.reason == "no_score"
    assert "no logprobs" in info.value.message
    assert reward.active_mode == "logprobs"


async def test_prefill_continues_a_score_turn(fake: FakeOpenAI, judge: Callable[..., Any]) -> None:
    await judge(prefill=True).score(CONV, ["x"])
    body = fake.chat_bodies()[0]
    assert body["messages"] == [
        *judge_messages(CONV, "x", False),
        {"role": "assistant", "content": "Score: "},
    ]
    assert body["continue_final_message"] is True
    assert body["add_generation_prompt"] is False


# -- json --------------------------------------------------------------------------------


def json_or_no_logprobs(body: dict[str, Any]) -> Reply:
    if "response_format" in body:
        return content_reply(json.dumps({"score": 7}))
    return content_reply("7")


async def test_no_logprobs_switches_to_json_for_good(
    fake: FakeOpenAI, judge: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    fake.chat = json_or_no_logprobs
    reward = judge()
    with caplog.at_level(logging.INFO, logger="rewards.openai_judge"):
        assert await reward.score(CONV, ["a", "b"]) == [0.75, 0.75]
        assert reward.active_mode == "json"
        first = len(fake.chat_bodies())
        assert await reward.score(CONV, ["c"]) == [0.75]
    bodies = fake.chat_bodies()
    assert sum("logprobs" in b for b in bodies[:first]) == 2  # both asked before the switch
    later = bodies[first:]
    assert len(later) == 1
    assert "logprobs" not in later[0]
    assert later[0]["response_format"] == SCORE_RESPONSE_FORMAT
    assert later[0]["temperature"] == 0
    assert later[0]["max_tokens"] == 20
    switched = [r for r in caplog.records if "JSON-constrained" in r.getMessage()]
    assert len(switched) == 1


@pytest.mark.parametrize("k", [1, 5, 9])
async def test_json_score(fake: FakeOpenAI, judge: Callable[..., Any], k: int) -> None:
    fake.chat = lambda _body: content_reply(f' {{"score": {k}}}\n')
    assert await judge(mode="json").score(CONV, ["x"]) == [(k - 1) / 8]
    assert "logprobs" not in fake.chat_bodies()[0]


@pytest.mark.parametrize(
    "content",
    [
        "I would rate it 7.",
        '{"score": 10}',
        '{"score": 0}',
        '{"score": true}',
        '{"score": "7"}',
        '{"score": 7.5}',
        '{"rating": 7}',
        "[7]",
        "",
        None,
    ],
)
async def test_json_garbage_is_no_score(
    fake: FakeOpenAI,
    judge: Callable[..., Any],
    content: str | None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake.chat = lambda _body: content_reply(content)
    with pytest.raises(RewardUnavailable) as info:
        await judge(mode="json").score(CONV, ["x"])
    assert info.value.reason == "no_score"
    assert info.value.status_code == 503
    assert info.value.message == 'the judge\'s reply held no score: not a {"score": 1-9} object'
    if content:
        assert content[:20] in caplog.text


# -- errors ------------------------------------------------------------------------------


async def test_m9_http_500_is_error_without_the_url_or_the_body(
    fake: FakeOpenAI, judge: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    fake.chat = lambda _body: (500, "judge exploded")
    with pytest.raises(RewardUnavailable) as info:
        await judge().score(CONV, ["x"])
    assert info.value.reason == "error"
    assert info.value.message == "the judge failed (HTTP 500)"
    assert len(fake.chat_bodies()) == 1  # a 500 is not retried
    # The URL and the body are the operator's, in the log.
    assert f"POST {fake.url}/v1/chat/completions answered 500: judge exploded" in caplog.text


async def test_transient_503_is_retried(fake: FakeOpenAI, judge: Callable[..., Any]) -> None:
    replies = iter([(503, "busy"), logprobs_reply({"9": 1.0})])
    fake.chat = lambda _body: next(replies)
    assert await judge().score(CONV, ["x"]) == [1.0]
    assert len(fake.chat_bodies()) == 2


@pytest.mark.parametrize("payload", ["not json", {"choices": []}, {"object": "error"}])
async def test_malformed_reply_is_error(
    fake: FakeOpenAI, judge: Callable[..., Any], payload: Any
) -> None:
    fake.chat = lambda _body: (200, payload)
    with pytest.raises(RewardUnavailable) as info:
        await judge().score(CONV, ["x"])
    assert info.value.reason == "error"


async def test_connection_refused_is_error(judge: Callable[..., Any]) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again when the judge connects
    with pytest.raises(RewardUnavailable) as info:
        await judge(base_url=f"http://127.0.0.1:{port}").score(CONV, ["x"])
    assert info.value.reason == "error"
    assert info.value.message == "the judge failed (ConnectError)"
    assert str(port) not in info.value.message


async def test_first_failure_cancels_the_others() -> None:
    cancelled = asyncio.Event()

    async def slow() -> float:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return 1.0

    async def fail() -> float:
        await asyncio.sleep(0.01)
        raise RewardUnavailable("no", reason="no_score")

    with pytest.raises(RewardUnavailable):
        await gather_or_cancel([slow(), fail()])
    assert cancelled.is_set()


# -- request shape -----------------------------------------------------------------------


async def test_rubric_and_partial_reach_the_system_message(
    fake: FakeOpenAI, judge: Callable[..., Any]
) -> None:
    await judge().score(CONV, ["x"], partial=True, rubric="Answers must cite a source.")
    messages = fake.chat_bodies()[0]["messages"]
    assert messages == judge_messages(CONV, "x", True, "Answers must cite a source.")
    assert messages[0]["role"] == "system"
    assert "Answers must cite a source." in messages[0]["content"]
    assert "unfinished" in messages[0]["content"]


@pytest.mark.parametrize("suffix", ["", "/", "/v1", "/v1/", "/v1/chat/completions"])
async def test_model_discovered_once(
    fake: FakeOpenAI, judge: Callable[..., Any], suffix: str
) -> None:
    reward = judge(base_url=fake.url + suffix, model=None)
    first, second = await asyncio.gather(reward.score(CONV, ["a"]), reward.score(CONV, ["b"]))
    assert first == second == [0.5]
    assert [s.path for s in fake.seen].count("/v1/models") == 1
    assert {b["model"] for b in fake.chat_bodies()} == {"judge-m"}
    assert reward.model == "judge-m"


async def test_no_models_is_error(fake: FakeOpenAI, judge: Callable[..., Any]) -> None:
    fake.models = []
    with pytest.raises(RewardUnavailable) as info:
        await judge(model=None).start()
    assert info.value.reason == "error"
    assert "lists no model" in info.value.message


async def test_api_key_header(fake: FakeOpenAI, judge: Callable[..., Any]) -> None:
    await judge(model=None, api_key="sk-test").score(CONV, ["x"])
    assert {s.headers.get("authorization") for s in fake.seen} == {"Bearer sk-test"}
    assert len(fake.seen) == 2  # /models and the chat request


async def test_no_api_key_no_header(fake: FakeOpenAI, judge: Callable[..., Any]) -> None:
    await judge().score(CONV, ["x"])
    assert "authorization" not in fake.seen[0].headers


async def test_empty_responses_ask_nothing(fake: FakeOpenAI, judge: Callable[..., Any]) -> None:
    assert await judge(model=None).score(CONV, []) == []
    assert fake.seen == []


async def test_concurrency_is_bounded(fake: FakeOpenAI, judge: Callable[..., Any]) -> None:
    in_flight = peak = 0

    async def handle(request: Request) -> Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.02)
        in_flight -= 1
        return JSONResponse(logprobs_reply({"5": 1.0})[1])

    async with serving([Route("/v1/chat/completions", handle, methods=["POST"])]) as url:
        reward = judge(base_url=url, max_concurrency=2)
        assert await reward.score(CONV, [str(i) for i in range(6)]) == [0.5] * 6
        await reward.aclose()  # before its server stops
    assert peak == 2


@pytest.mark.parametrize(
    ("url", "base"),
    [
        ("http://h:8001", "http://h:8001/v1"),
        ("http://h:8001/v1/", "http://h:8001/v1"),
        ("https://api.example.com/v1beta/openai/", "https://api.example.com/v1beta/openai"),
        ("http://h/v1/chat/completions", "http://h/v1"),
    ],
)
def test_api_base(url: str, base: str) -> None:
    assert api_base(url) == base


@pytest.mark.parametrize(
    ("kw", "match"),
    [({"mode": "free-text"}, "judge mode"), ({"max_concurrency": 0}, "max_concurrency")],
)
def test_bad_options(kw: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        OpenAIJudgeReward("http://h:1", "m", **kw)


def test_not_a_url() -> None:
    with pytest.raises(ValueError, match="not an http"):
        OpenAIJudgeReward("localhost", "m")
