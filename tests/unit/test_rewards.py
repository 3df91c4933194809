"""Remote reward over httpx.MockTransport, and the --reward spec."""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import httpx
import pytest

from rewards import prm_remote
from rewards.openai_judge import OpenAIJudgeReward
from rewards.prm_remote import RemotePRM
from rewards.remote import RemoteReward, first_float
from rewards.spec import RewardSpec, build_reward
from search.errors import RewardUnavailable
from search.fakes import CharTokenizer, ScriptedGenerator

CONV = [{"role": "system", "content": "s"}, {"role": "user", "content": "hi"}]


def reward_at(url: str, handler: Callable[[httpx.Request], httpx.Response]) -> RemoteReward:
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler), base_url="http://x")
    return RemoteReward(url, client=client)


# -- first_float -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [(1.5, 1.5), ([2.5], 2.5), ([[-3.0, 9.0]], -3.0), ([[[4]], [5]], 4.0), ("0.25", 0.25)],
)
def test_first_float(value: Any, expected: float) -> None:
    assert first_float(value) == expected


@pytest.mark.parametrize("value", [math.nan, math.inf, [-math.inf], "nan", "NaN", "Infinity"])
def test_m2_first_float_refuses_non_finite(value: Any) -> None:
    with pytest.raises(RewardUnavailable) as info:
        first_float(value)
    assert info.value.reason == "non_finite"


# -- RemoteReward ------------------------------------------------------------------------


async def test_pooling_body_and_rewards_in_order() -> None:
    bodies: list[dict[str, Any]] = []
    paths: list[str] = []
    values = {"r1": [[1.5]], "r2": [-2.0], "r3": 0.75}

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        bodies.append(body)
        paths.append(request.url.path)
        response = body["messages"][-1]["content"]
        return httpx.Response(200, json={"data": [{"index": 0, "data": values[response]}]})

    reward = reward_at("http://h:1/pooling", handler)
    assert reward.endpoint == "/pooling"
    assert await reward.score(CONV, ["r1", "r2", "r3"]) == [1.5, -2.0, 0.75]
    assert paths == ["/pooling"] * 3
    assert sorted(bodies, key=lambda b: b["messages"][-1]["content"]) == [
        {"messages": [*CONV, {"role": "assistant", "content": r}], "use_activation": False}
        for r in ("r1", "r2", "r3")
    ]
    await reward.aclose()


async def test_classify_reads_probs() -> None:
    paths: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.path)
        return httpx.Response(200, json={"data": [{"probs": [0.125, 0.875], "data": [9.0]}]})

    reward = reward_at("http://h:1/classify", handler)
    assert reward.endpoint == "/classify"
    assert await reward.score(CONV, ["a"]) == [0.125]
    assert paths == ["/classify"]


async def test_pooling_ignores_probs() -> None:
    reward = reward_at(
        "http://h:1",
        lambda _: httpx.Response(200, json={"data": [{"probs": [0.9], "data": [[-0.5]]}]}),
    )
    assert await reward.score(CONV, ["a"]) == [-0.5]


@pytest.mark.parametrize(
    ("url", "endpoint"),
    [
        ("http://h:1", "/pooling"),
        ("http://h:1/", "/pooling"),
        ("http://h:1/pooling/", "/pooling"),
        ("http://h:1/v1/classify", "/classify"),
    ],
)
async def test_endpoint_from_url(url: str, endpoint: str) -> None:
    reward = RemoteReward(url)
    assert reward.endpoint == endpoint
    await reward.aclose()


async def test_base_url_keeps_the_path_prefix() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(200, json={"data": [{"data": [1.0]}]})

    reward = RemoteReward("http://h:1/v1/pooling", api_key="k")
    assert str(reward._client.base_url).rstrip("/") == "http://h:1/v1"
    assert reward._client.headers["Authorization"] == "Bearer k"
    reward._client._transport = httpx.MockTransport(handler)
    assert await reward.score(CONV, ["x"]) == [1.0]
    assert seen == ["http://h:1/v1/pooling"]


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", '"nan"', '"inf"', "[[NaN]]"])
async def test_m2_non_finite_remote_reward_is_refused(value: str) -> None:
    # Python's json (as httpx's reply.json()) accepts NaN and Infinity.
    body = '{"data": [{"data": ' + value + "}]}"
    reward = reward_at("http://h:1/pooling", lambda _: httpx.Response(200, text=body))
    with pytest.raises(RewardUnavailable) as info:
        await reward.score(CONV, ["a"])
    assert info.value.reason == "non_finite"


async def test_m9_http_error_names_the_status_not_the_url(
    caplog: pytest.LogCaptureFixture,
) -> None:
    reward = reward_at(
        "http://vllm-reward:8000/pooling",
        lambda _: httpx.Response(400, text="input too long for http://vllm-reward:8000"),
    )
    with pytest.raises(RewardUnavailable) as info:
        await reward.score(CONV, ["a", "b"])
    assert info.value.status_code == 503
    assert info.value.message == "the remote reward model failed (HTTP 400)"
    # The detail is the operator's: in the log, with the URL and the body.
    assert "http://vllm-reward:8000/pooling answered 400: input too long" in caplog.text


@pytest.mark.parametrize(
    "payload", [{}, {"data": []}, {"data": [{"probs": [1.0]}]}, {"data": [{"data": "x"}]}]
)
async def test_malformed_reply_is_reward_unavailable(payload: dict[str, Any]) -> None:
    reward = reward_at("http://h:1/pooling", lambda _: httpx.Response(200, json=payload))
    with pytest.raises(RewardUnavailable):
        await reward.score(CONV, ["a"])


async def test_transport_error_is_reward_unavailable() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout(f"slow {request.url}", request=request)

    with pytest.raises(RewardUnavailable) as info:
        await reward_at("http://h:1/pooling", handler).score(CONV, ["a"])
    assert info.value.message == "the remote reward model failed (ReadTimeout)"


# -- RewardSpec --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "kind", "target"),
    [
        ("judge", "judge", ""),
        ("classifier:path/to/rm", "classifier", "path/to/rm"),
        ("classifier:Skywork/Skywork-Reward", "classifier", "Skywork/Skywork-Reward"),
        ("remote:http://h:1/pooling", "remote", "http://h:1/pooling"),
    ],
)
def test_spec_parses(text: str, kind: str, target: str) -> None:
    spec = RewardSpec.parse(text)
    assert (spec.kind, spec.target) == (kind, target)
    assert str(spec) == text


@pytest.mark.parametrize(
    "text", ["classifier", "classifier:", "remote", "remote:", "bogus", "", "judge:x", "Judge"]
)
def test_spec_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="bad reward spec"):
        RewardSpec.parse(text)


async def test_build_remote_and_judge_reward() -> None:
    class Tok(CharTokenizer):
        def token_id(self, token: str) -> int:
            return ord(token)

    built = build_reward(
        RewardSpec.parse("remote:http://h:1/classify"),
        ScriptedGenerator([]),
        Tok(),  # type: ignore[arg-type]
    )
    assert isinstance(built, RemoteReward)
    assert built.endpoint == "/classify"
    await built.aclose()

    from rewards.judge import JudgeReward

    judge = build_reward(RewardSpec("judge"), ScriptedGenerator([]), Tok())  # type: ignore[arg-type]
    assert isinstance(judge, JudgeReward)


def test_m1_the_judge_is_built_with_the_engine_context() -> None:
    from rewards.judge import JudgeReward

    class Tok(CharTokenizer):
        def token_id(self, token: str) -> int:
            return ord(token)

    class InProcess(ScriptedGenerator):
        max_model_len = 512  # as VLLMGenerator knows its engine's

    given = build_reward(RewardSpec("judge"), ScriptedGenerator([]), Tok(), max_model_len=100)  # type: ignore[arg-type]
    known = build_reward(RewardSpec("judge"), InProcess([]), Tok())  # type: ignore[arg-type]
    unknown = build_reward(RewardSpec("judge"), ScriptedGenerator([]), Tok())  # type: ignore[arg-type]
    assert isinstance(given, JudgeReward) and given.max_prompt_tokens == 99
    assert isinstance(known, JudgeReward) and known.max_prompt_tokens == 511
    assert isinstance(unknown, JudgeReward) and unknown.max_prompt_tokens is None


# -- L4: retries within a budget ----------------------------------------------------------


@pytest.mark.parametrize("kind", ["remote", "openai_judge", "remote_prm"])
async def test_l4_a_remote_reward_outage_is_not_multiplied_by_retries(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The review: one request with n 2 made 12 POSTs to a reward answering 503. With a
    # retry budget, a sustained outage costs about one POST per call once it is spent.
    monkeypatch.setattr(prm_remote, "BACKOFF_S", 0.0)
    posts: list[str] = []

    def down(request: httpx.Request) -> httpx.Response:
        posts.append(request.url.path)
        return httpx.Response(503, json={"error": "overloaded"})

    client = httpx.AsyncClient(transport=httpx.MockTransport(down), base_url="http://x")
    score: Callable[[], Awaitable[Any]]
    if kind == "remote":
        remote = RemoteReward("http://x", client=client)
        score = partial(remote.score, CONV, ["a"])
    elif kind == "openai_judge":
        judge = OpenAIJudgeReward("http://x", model="j", client=client)
        score = partial(judge.score, CONV, ["a"])
    else:
        prm = RemotePRM("http://x", client=client)
        score = partial(prm.score_last_steps, CONV, [["a\n\n"]])
    calls = 10
    for _ in range(calls):
        with pytest.raises(RewardUnavailable):
            await score()
    assert len(posts) <= calls + 5, len(posts)  # without a budget: 3 attempts, 30 POSTs
