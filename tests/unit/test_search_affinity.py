"""Search affinity (transport/affinity.py, --upstream-affinity-header): every upstream call
of one search carries one routing key, two searches carry two, over httpx.MockTransport
standing in for a vLLM server behind a router."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from engines.remote import RemoteGenerator
from rewards.judge import JudgeReward
from search.fakes import CharTokenizer
from search.types import SamplingConfig
from server.runtime import Runtime
from server.settings import Settings
from transport import affinity

HEADER = "X-Session-ID"
SEVEN = ord("7")
SAMPLE = SamplingConfig(max_tokens=4)
JUDGE = SamplingConfig(max_tokens=1, temperature=0.0, top_logprobs=20)
# Each search's user message: the mark its calls' prompts carry.
MARKS = ("alpha", "bravo", "charlie")


class JudgeTokenizer(CharTokenizer):
    def token_id(self, token: str) -> int:
        return ord(token)


@dataclass
class Call:
    key: str | None
    prompts: list[list[int]]
    max_tokens: int

    def marks(self) -> set[str]:
        texts = ["".join(chr(t) for t in p) for p in self.prompts]
        return {m for m in MARKS for text in texts if m in text}


@dataclass
class FakeVLLM:
    """/v1/completions as vLLM answers it (token-id prompts, n samples, a list of prompts,
    SSE), recording each call's affinity header and prompts."""

    calls: list[Call] = field(default_factory=list)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        many = bool(body["prompt"]) and isinstance(body["prompt"][0], list)
        prompts = body["prompt"] if many else [body["prompt"]]
        self.calls.append(Call(request.headers.get(HEADER), prompts, body["max_tokens"]))
        if body.get("echo"):
            return httpx.Response(200, json={"choices": [echo(body["prompt"])]})
        choices = [
            sample(i, body["max_tokens"]) for i in range(len(prompts) if many else body["n"])
        ]
        if not body.get("stream"):
            return httpx.Response(200, json={"choices": choices})
        lines = [f"data: {json.dumps({'choices': [c]})}\n\n" for c in choices]
        return httpx.Response(200, content="".join([*lines, "data: [DONE]\n\n"]).encode())


def sample(index: int, max_tokens: int) -> dict[str, Any]:
    """A judge call (one token) answers a certain "7"; a sample, ``max_tokens`` letters."""
    if max_tokens == 1:
        top = {"tokens": ["token_id:55"], "top_logprobs": [{"token_id:55": 0.0}]}
        return {"index": index, "text": "7", "token_ids": [SEVEN], "logprobs": top}
    ids = [ord("a") + (index + k) % 26 for k in range(max_tokens)]
    text = "".join(map(chr, ids))
    return {"index": index, "text": text, "token_ids": ids, "finish_reason": "length"}


def echo(prompt: list[int]) -> dict[str, Any]:
    return {
        "index": 0,
        "logprobs": {
            "tokens": [f"token_id:{t}" for t in prompt],
            "token_logprobs": [None] + [-1.0] * (len(prompt) - 1),
            "top_logprobs": [None] + [{}] * (len(prompt) - 1),
        },
    }


def remote(fake: FakeVLLM, header: str | None = HEADER) -> RemoteGenerator:
    client = httpx.AsyncClient(transport=httpx.MockTransport(fake), base_url="http://router")
    return RemoteGenerator("http://unused", "m", client=client, affinity_header=header)


async def every_call(gen: RemoteGenerator) -> None:
    """One call of each kind the engine makes."""
    await gen.generate([1, 2], SAMPLE, 2)
    await gen.generate_batch([[1], [2, 3]], JUDGE)
    async with aclosing(gen.generate_stream([1, 2], SAMPLE, 2)) as stream:
        async for _ in stream:
            pass
    await gen.prompt_logprobs([1, 2, 3], 0)


# -- the engine sends the running search's key --------------------------------------------


async def test_every_kind_of_call_carries_the_key_of_its_scope() -> None:
    fake = FakeVLLM()
    gen = remote(fake)
    with affinity.scope("search-1"):
        await every_call(gen)
    with affinity.scope("search-2"):
        await every_call(gen)
    assert [c.key for c in fake.calls] == ["search-1"] * 4 + ["search-2"] * 4


async def test_no_key_outside_a_search_and_none_when_the_option_is_off() -> None:
    fake = FakeVLLM()
    await every_call(remote(fake))
    with affinity.scope("search-1"):
        await every_call(remote(fake, header=None))
    assert [c.key for c in fake.calls] == [None] * 8


async def test_a_task_started_in_the_search_keeps_its_key() -> None:
    """The algorithms start tasks (concurrent samples, layers): they inherit the key."""
    fake = FakeVLLM()
    gen = remote(fake)

    async def search(key: str) -> None:
        with affinity.scope(key):
            await asyncio.gather(*(gen.generate([i], SAMPLE, 1) for i in range(3)))

    await asyncio.gather(search("a"), search("b"))
    assert sorted(c.key or "" for c in fake.calls) == ["a"] * 3 + ["b"] * 3
    assert {c.prompts[0][0] for c in fake.calls if c.key == "a"} == {0, 1, 2}


# -- served searches: samples, judge, tree layers -------------------------------------------


def fleet_runtime(gen: RemoteGenerator) -> Runtime:
    return Runtime(
        generator=gen,
        tokenizer=CharTokenizer(),
        reward=JudgeReward(gen, JudgeTokenizer()),
        model_name="m",
        max_model_len=3000,
    )


SEARCHES = {
    "alpha": {"algorithm": "bon", "n": 4},
    "bravo": {"algorithm": "bon", "n": 4},
    "charlie": {"algorithm": "treebon", "n": 2, "layers": 2},
}


async def serve_three(serve_app: Callable[..., Any], header: str | None) -> FakeVLLM:
    """Three concurrent searches; a long batch window so the judge's micro-batches mix
    them."""
    fake = FakeVLLM()
    settings = Settings(
        remote_engine_url="http://router",
        upstream_affinity_header=header,
        reward_max_wait_ms=50,
    )
    async with serve_app(fleet_runtime(remote(fake, header)), settings) as client:

        async def ask(mark: str) -> None:
            response = await client.post(
                "/v1/chat/completions",
                json={
                    "model": "m",
                    "messages": [{"role": "user", "content": mark}],
                    "max_tokens": 4,
                    "search": SEARCHES[mark],
                },
            )
            assert response.status_code == 200, response.text

        await asyncio.gather(*(ask(mark) for mark in MARKS))
    return fake


async def test_all_calls_of_one_search_carry_one_key_and_searches_differ(
    serve_app: Callable[..., Any],
) -> None:
    fake = await serve_three(serve_app, HEADER)
    keys: dict[str, set[str | None]] = {mark: set() for mark in MARKS}
    for call in fake.calls:
        # A judge request holds one search's responses only: one key, one replica.
        (mark,) = call.marks()
        keys[mark].add(call.key)
    assert all(len(found) == 1 and None not in found for found in keys.values()), keys
    assert len({next(iter(found)) for found in keys.values()}) == len(MARKS)
    judged = {mark for c in fake.calls if c.max_tokens == 1 for mark in c.marks()}
    assert judged == set(MARKS)  # the judge's calls were among them


async def test_without_the_option_no_header_and_the_judge_batches_across_searches(
    serve_app: Callable[..., Any],
) -> None:
    """A single upstream server: the judge keeps one request for a mixed micro-batch."""
    fake = await serve_three(serve_app, None)
    assert {c.key for c in fake.calls} == {None}
    assert any(len(c.marks()) > 1 for c in fake.calls if c.max_tokens == 1)


# -- the option ---------------------------------------------------------------------------


def test_the_header_needs_a_remote_engine() -> None:
    with pytest.raises(ValidationError, match="--remote-engine-url"):
        Settings(upstream_affinity_header=HEADER)
    assert Settings(remote_engine_url="http://r", upstream_affinity_header=HEADER)


@pytest.mark.parametrize("name", ["Authorization", "content-type", "bad header", "x:y", ""])
def test_a_header_the_client_owns_or_a_malformed_name_is_refused(name: str) -> None:
    with pytest.raises(ValidationError):
        Settings(remote_engine_url="http://r", upstream_affinity_header=name)
