"""Logprobs through the server on the real model, with the in-process engine and with the
remote engine in front of a real `vllm serve`: a searched answer's per-token logprobs
(sampled once by Best-of-N, stitched from segments by TreeBoN) are the ones the engine
gives the same tokens when it scores them after the prompt, and echo with max_tokens 0
returns the prompt's own, as the engine scores it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from engines.remote import RemoteGenerator
from rewards.judge import JudgeReward
from server.app import create_app
from server.runtime import Runtime
from server.settings import Settings

pytestmark = pytest.mark.integration

MESSAGES = [{"role": "user", "content": "Name two colours of the rainbow."}]
EOS = "<|im_end|>"


@pytest.fixture(params=["in-process", "remote"])
async def served(
    request: pytest.FixtureRequest, engine: Any, tokenizer: Any, model_path: str
) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    """A client of the app over the engine, and the engine (to score with)."""
    generator: Any = engine
    if request.param == "remote":
        generator = RemoteGenerator(request.getfixturevalue("vllm_server"), model_path)
    runtime = Runtime(
        generator=generator,
        tokenizer=tokenizer,
        reward=JudgeReward(generator, tokenizer),
        model_name="m",
        max_model_len=2048,
    )
    app = create_app(Settings(), runtime=runtime)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t", timeout=300) as c:
            yield c, generator
    if isinstance(generator, RemoteGenerator):
        await generator.aclose()


async def engine_scores(generator: Any, prompt: list[int], answer: list[int]) -> list[float]:
    scored = await generator.prompt_logprobs([*prompt, *answer], 0)
    return [lp for lp in scored.logprobs[len(prompt) :]]


@pytest.mark.parametrize(
    "search",
    [
        {"algorithm": "bon", "n": 4},
        {"algorithm": "treebon", "n": 2, "layers": 2, "branching": 2},
    ],
    ids=["bon", "treebon"],
)
async def test_a_searched_answers_logprobs_are_the_engines(
    served: tuple[httpx.AsyncClient, Any], tokenizer: Any, search: dict[str, Any]
) -> None:
    client, generator = served
    r = await client.post(
        "/v1/chat/completions",
        json={
            "messages": MESSAGES,
            "max_tokens": 12,
            "logprobs": True,
            "top_logprobs": 2,
            "search": search,
        },
    )
    assert r.status_code == 200, r.text
    data = r.json()
    choice = data["choices"][0]
    content = choice["logprobs"]["content"]
    text = choice["message"]["content"]
    assert len(content) == data["usage"]["completion_tokens"]
    joined = bytes(b for entry in content for b in entry["bytes"]).decode("utf-8")
    assert joined in (text, text + EOS)
    for entry in content:
        top = entry["top_logprobs"]
        assert len(top) == 2 and top[0]["logprob"] >= top[1]["logprob"] >= -9999.0
        assert entry["logprob"] <= 0.0
    # The same tokens (found by their bytes) scored after the prompt: the numbers the
    # engine sampled them with.
    by_bytes = {tokenizer.token_bytes(i): i for i in sorted(tokenizer.vocab().values())}
    answer = [by_bytes[bytes(entry["bytes"])] for entry in content]
    scores = await engine_scores(generator, tokenizer.render_chat(MESSAGES), answer)
    assert [e["logprob"] for e in content] == pytest.approx(scores, abs=5e-3)


async def test_echo_with_max_tokens_0_is_the_prompts_logprobs(
    served: tuple[httpx.AsyncClient, Any], tokenizer: Any
) -> None:
    client, generator = served
    prompts = ["The sky is blue and the grass is", "One, two, three,"]
    r = await client.post(
        "/v1/completions",
        json={"prompt": prompts, "echo": True, "max_tokens": 0, "logprobs": 1},
    )
    assert r.status_code == 200, r.text
    choices = sorted(r.json()["choices"], key=lambda c: c["index"])
    assert [c["text"] for c in choices] == prompts
    for choice, text in zip(choices, prompts, strict=True):
        ids = tokenizer.encode(text)
        lp = choice["logprobs"]
        assert len(lp["tokens"]) == len(ids)
        assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
        expected = (await generator.prompt_logprobs(ids, 1)).logprobs[1:]
        assert lp["token_logprobs"][1:] == pytest.approx(list(expected), abs=1e-4)
        assert all(1 <= len(top) <= 2 for top in lp["top_logprobs"][1:])
    assert r.json()["usage"]["completion_tokens"] == 0


async def test_lm_evals_loglikelihood_request_on_the_real_model(
    served: tuple[httpx.AsyncClient, Any], tokenizer: Any
) -> None:
    """echo, logprobs 1, max_tokens 1, temperature 0 on token ids: the prompt's tokens and
    one generated token, whatever that token is (the end of the turn included)."""
    client, _ = served
    ids = tokenizer.encode("The capital of France is Paris")
    r = await client.post(
        "/v1/completions",
        json={
            "prompt": [ids],
            "echo": True,
            "logprobs": 1,
            "max_tokens": 1,
            "temperature": 0,
            "seed": 1234,
        },
    )
    assert r.status_code == 200, r.text
    lp = r.json()["choices"][0]["logprobs"]
    assert len(lp["token_logprobs"]) == len(ids) + 1
    assert lp["token_logprobs"][0] is None
    assert all(x <= 0.0 for x in lp["token_logprobs"][1:])
