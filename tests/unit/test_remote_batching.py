"""RemoteGenerator's batch and streaming calls over httpx.MockTransport."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from typing import Any

import httpx
import pytest

from engines.remote import RemoteGenerator, completion_body
from engines.remote_stream import ChoiceStream, StreamError, sse_data
from search.errors import EngineUnavailable, InvalidRequest
from search.types import Completion, SamplingConfig

JUDGE = SamplingConfig(max_tokens=1, temperature=0.0, top_logprobs=20)


def remote(handler: Callable[[httpx.Request], httpx.Response]) -> RemoteGenerator:
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler), base_url="http://x")
    return RemoteGenerator("http://unused", "judge", client=client)


def choice(index: int, token: int, **extra: Any) -> dict[str, Any]:
    return {"index": index, "text": chr(token), "token_ids": [token], **extra}


def top(token: int) -> dict[str, Any]:
    return {"tokens": [f"token_id:{token}"], "top_logprobs": [{f"token_id:{token}": -0.5}]}


# -- generate_batch ----------------------------------------------------------------------


async def test_batch_is_one_request_with_a_list_of_prompts_and_keeps_order() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(
            200,
            json={
                "choices": [
                    choice(2, 67, finish_reason="length", logprobs=top(67)),
                    choice(0, 65, finish_reason="length", logprobs=top(65)),
                    choice(1, 66, finish_reason="length", logprobs=top(66)),
                ]
            },
        )

    gen = remote(handler)
    out = await gen.generate_batch([[1, 2], [3], (4, 5, 6)], JUDGE)
    assert [c.token_ids for c in out] == [(65,), (66,), (67,)]
    assert [c.text for c in out] == ["A", "B", "C"]
    assert out[1].top_logprobs == ({66: -0.5},)
    assert len(seen) == 1
    body = json.loads(seen[0].content)
    assert body["prompt"] == [[1, 2], [3], [4, 5, 6]]
    assert body == {**completion_body("judge", [], JUDGE, 1), "prompt": body["prompt"]}
    assert body["n"] == 1 and body["logprobs"] == 20 and body["max_tokens"] == 1
    await gen.aclose()


async def test_empty_batch_sends_nothing() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise AssertionError("no request expected")

    assert await remote(handler).generate_batch([], JUDGE) == []


@pytest.mark.parametrize("count", [2, 4])
async def test_batch_with_the_wrong_choice_count_is_malformed(count: int) -> None:
    choices = [choice(i, 65, finish_reason="length") for i in range(count)]
    gen = remote(lambda _: httpx.Response(200, json={"choices": choices}))
    with pytest.raises(EngineUnavailable) as info:
        await gen.generate_batch([[1], [2], [3]], JUDGE)
    assert info.value.message == "the remote engine sent a malformed reply"


async def test_batch_with_repeated_indices_is_malformed() -> None:
    choices = [choice(0, 65, finish_reason="length"), choice(0, 66, finish_reason="length")]
    gen = remote(lambda _: httpx.Response(200, json={"choices": choices}))
    with pytest.raises(EngineUnavailable):
        await gen.generate_batch([[1], [2]], JUDGE)


async def test_batch_maps_errors_like_generate() -> None:
    message = "This model's maximum context length is 2048 tokens."
    gen = remote(lambda _: httpx.Response(400, json={"error": {"message": message}}))
    with pytest.raises(InvalidRequest) as rejected:
        await gen.generate_batch([[1]], JUDGE)
    assert rejected.value.message.endswith("fit in the model's context length")

    gen = remote(lambda _: httpx.Response(401))
    with pytest.raises(EngineUnavailable) as failed:
        await gen.generate_batch([[1]], JUDGE)
    assert failed.value.message == "the remote engine failed (HTTP 401)"

    gen = remote(lambda _: httpx.Response(200, text="<html>"))
    with pytest.raises(EngineUnavailable, match="malformed"):
        await gen.generate_batch([[1]], JUDGE)


async def test_batch_unreachable_is_engine_unavailable() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    gen = remote(handler)
    gen._budget.tokens = 0  # no retries: the test needs no backoff sleeps
    with pytest.raises(EngineUnavailable, match="unreachable"):
        await gen.generate_batch([[1]], JUDGE)


# -- generate_stream ---------------------------------------------------------------------


def sse(*chunks: dict[str, Any] | str) -> bytes:
    lines = [c if isinstance(c, str) else json.dumps(c) for c in chunks]
    return "".join(f"data: {line}\n\n" for line in lines).encode()


def chunk(
    index: int, text: str, ids: list[int], reason: str | None = None, **extra: Any
) -> dict[str, Any]:
    return {
        "id": "cmpl-1",
        "object": "text_completion",
        "choices": [
            {"index": index, "text": text, "token_ids": ids, "finish_reason": reason, **extra}
        ],
    }


INTERLEAVED = sse(
    chunk(0, "He", [10], prompt_token_ids=[1, 2]),
    chunk(1, "Yo", [20], prompt_token_ids=[1, 2]),
    chunk(2, "Ok", [30], "stop", prompt_token_ids=[1, 2]),
    chunk(0, "llo", [11]),
    chunk(1, "!", [21], "length"),
    chunk(0, "", [12], "stop"),
    {"id": "cmpl-1", "choices": [], "usage": {"prompt_tokens": 2}},
    "[DONE]",
)


async def collect(gen: RemoteGenerator, params: SamplingConfig, n: int) -> list[Any]:
    return [batch async for batch in gen.generate_stream([1, 2], params, n)]


async def test_stream_yields_each_choice_once_in_finish_order() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=INTERLEAVED)

    params = SamplingConfig(max_tokens=3, seed=0)
    out = await collect(remote(handler), params, 3)
    assert out == [
        [(2, Completion(token_ids=(30,), text="Ok", finish_reason="stop"))],
        [(1, Completion(token_ids=(20, 21), text="Yo!", finish_reason="length"))],
        [(0, Completion(token_ids=(10, 11, 12), text="Hello", finish_reason="stop"))],
    ]
    assert len(seen) == 1
    assert json.loads(seen[0].content) == {
        **completion_body("judge", [1, 2], params, 3),
        "stream": True,
        "stream_interval": 3,  # finished choices only: no chunk per token
    }


async def test_stream_accumulates_logprobs() -> None:
    def lp(token: int, value: float) -> dict[str, Any]:
        return {
            "tokens": [f"token_id:{token}"],
            "token_logprobs": [value],
            "top_logprobs": [{f"token_id:{token}": value, "token_id:99": -9.0}],
        }

    body = sse(
        chunk(0, "a", [10], logprobs=lp(10, -0.25)),
        chunk(0, "b", [11], "length", logprobs=lp(11, -0.5)),
        "[DONE]",
    )
    params = SamplingConfig(logprobs=True, top_logprobs=2)
    out = await collect(remote(lambda _: httpx.Response(200, content=body)), params, 1)
    [[(index, comp)]] = out
    assert index == 0
    assert comp.logprobs == (-0.25, -0.5)
    assert comp.cumulative_logprob == pytest.approx(-0.75)
    assert comp.top_logprobs == ({10: -0.25, 99: -9.0}, {11: -0.5, 99: -9.0})


@pytest.mark.parametrize(
    "body",
    [
        sse(chunk(0, "a", [10], "stop"), "[DONE]"),
        sse(chunk(0, "a", [10], "stop"), chunk(1, "b", [11])),
        b"",
    ],
    ids=["done-too-soon", "cut-off", "empty"],
)
async def test_stream_that_ends_early_is_engine_unavailable(body: bytes) -> None:
    gen = remote(lambda _: httpx.Response(200, content=body))
    with pytest.raises(EngineUnavailable, match="ended the stream early"):
        await collect(gen, SamplingConfig(), 2)


@pytest.mark.parametrize(
    "body",
    [
        sse({"error": {"message": "Internal server error", "code": 500}}),
        sse("{not json"),
        sse(chunk(5, "a", [10], "stop")),
        sse(chunk(0, "a", [10], "stop"), chunk(0, "b", [11], "stop")),
    ],
    ids=["error-chunk", "not-json", "unknown-index", "repeated-index"],
)
async def test_stream_broken_mid_way_is_engine_unavailable(body: bytes) -> None:
    gen = remote(lambda _: httpx.Response(200, content=body))
    with pytest.raises(EngineUnavailable, match="malformed reply"):
        await collect(gen, SamplingConfig(), 2)


async def test_stream_maps_statuses_before_the_stream() -> None:
    message = "top_k must be -1 or at least 1, got 0"
    gen = remote(lambda _: httpx.Response(400, json={"error": {"message": message}}))
    with pytest.raises(InvalidRequest) as rejected:
        await collect(gen, SamplingConfig(), 1)
    assert rejected.value.message == f"the remote engine rejected the request: {message}"

    gen = remote(lambda _: httpx.Response(503, headers={"Retry-After": "7"}))
    with pytest.raises(EngineUnavailable) as failed:
        await collect(gen, SamplingConfig(), 1)
    assert failed.value.message == "the remote engine failed (HTTP 503)"
    assert failed.value.headers == {"Retry-After": "7"}


async def test_stream_retries_a_failed_connect_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("engines.remote.CONNECT_BACKOFF_S", 0.0)
    attempts: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        attempts.append(1)
        if len(attempts) == 1:
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(200, content=sse(chunk(0, "a", [10], "stop"), "[DONE]"))

    out = await collect(remote(handler), SamplingConfig(), 1)
    assert len(attempts) == 2 and out[0][0][0] == 0

    def always_down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(EngineUnavailable, match="unreachable"):
        await collect(remote(always_down), SamplingConfig(), 1)


class TrackedStream(httpx.AsyncByteStream):
    """A body that hands out ``first`` then waits forever, recording its close."""

    def __init__(self, first: bytes) -> None:
        self.first = first
        self.closed = asyncio.Event()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.first
        await asyncio.Event().wait()

    async def aclose(self) -> None:
        self.closed.set()


async def test_leaving_the_stream_early_closes_the_response() -> None:
    body = TrackedStream(sse(chunk(0, "a", [10], "stop")))
    gen = remote(lambda _: httpx.Response(200, stream=body))
    async with aclosing(gen.generate_stream([1], SamplingConfig(), 2)) as stream:
        first = await anext(stream)
        assert first[0][0] == 0
    assert body.closed.is_set()


async def test_cancelling_the_consumer_closes_the_response() -> None:
    body = TrackedStream(sse(chunk(0, "a", [10], "stop")))
    gen = remote(lambda _: httpx.Response(200, stream=body))
    got: list[object] = []

    async def consume() -> None:
        async for batch in gen.generate_stream([1], SamplingConfig(), 2):
            got.append(batch)

    task = asyncio.create_task(consume())
    while not got:
        await asyncio.sleep(0)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled()
    assert body.closed.is_set()


# -- the SSE parser ----------------------------------------------------------------------


def test_sse_data_ignores_other_lines() -> None:
    assert sse_data("data: {}") == "{}"
    assert sse_data("data:{}") == "{}"
    assert sse_data("") is None
    assert sse_data(": keep-alive") is None
    assert sse_data("event: x") is None


def test_choice_stream_tracks_done_and_missing() -> None:
    stream = ChoiceStream(2)
    assert stream.feed(": ping") == []
    assert stream.feed("data: " + json.dumps(chunk(1, "b", [11], "stop")))[0]["index"] == 1
    assert stream.missing() == [0]
    stream.feed("data: [DONE]")
    assert stream.done
    with pytest.raises(StreamError):
        stream.feed('data: {"choices": [{"index": "0"}]}')
