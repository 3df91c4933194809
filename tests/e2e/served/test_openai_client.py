"""End to end: the server started exactly as the README starts it (`make serve`, with the
port from ALIGNSERVE_PORT), driven by the official openai client over real HTTP."""

from __future__ import annotations

import json
import re

import httpx
import openai
import pytest

from tests.e2e.conftest import MODEL, question

pytestmark = pytest.mark.e2e


def test_best_of_8_lists_candidates_and_returns_the_best(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model=MODEL,
        messages=question(),
        max_tokens=32,
        extra_body={"search": {"algorithm": "bon", "n": 8, "return_candidates": True}},
    )
    search = r.model_extra["search"]
    candidates = search["candidates"]
    assert len(candidates) == 8
    assert all({"text", "reward", "finish_reason"} <= c.keys() for c in candidates)
    best = max(candidates, key=lambda c: c["reward"])
    assert r.choices[0].message.content == best["text"]
    assert search["chosen_reward"] == best["reward"]
    assert search["candidates_generated"] == 8 and search["engine_calls"] == 1
    assert search["generated_tokens"] == sum(c["tokens"] for c in candidates)
    assert r.usage.completion_tokens == candidates[search["chosen_index"]]["tokens"]
    assert r.usage.completion_tokens <= 32


def test_openai_n_returns_top_distinct(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model=MODEL,
        messages=question(1),
        max_tokens=16,
        n=3,
        extra_body={"search": {"n": 6, "return_candidates": True}},
    )
    rewards = sorted((c["reward"] for c in r.model_extra["search"]["candidates"]), reverse=True)
    texts = [c.message.content for c in r.choices]
    assert len(texts) == 3 and len(set(texts)) == 3
    by_text = {c["text"]: c["reward"] for c in r.model_extra["search"]["candidates"]}
    assert by_text[texts[0]] == rewards[0]
    assert [by_text[t] for t in texts] == sorted((by_text[t] for t in texts), reverse=True)


def test_streaming_returns_chunks_and_done(client: openai.OpenAI, server: str) -> None:
    stream = client.chat.completions.create(
        model=MODEL,
        messages=question(2),
        max_tokens=24,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"search": {"n": 4}},
    )
    pieces, usage, report = [], None, None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
        if chunk.usage:
            assert not chunk.choices  # OpenAI's usage chunk, the last
            usage = chunk.usage
        if chunk.model_extra and "search" in chunk.model_extra:
            assert chunk.choices[0].finish_reason  # the report rides on the finish chunk
            report = chunk.model_extra["search"]
    assert len(pieces) > 1, "the answer came in one piece"
    assert usage is not None and usage.completion_tokens <= 24
    assert report is not None and report["candidates_generated"] == 4
    # The raw stream ends with [DONE].
    body = {
        "model": MODEL,
        "messages": question(2),
        "max_tokens": 8,
        "stream": True,
        "search": {"n": 2},
    }
    reply = httpx.post(f"{server}/v1/chat/completions", json=body, timeout=120)
    assert reply.headers["x-accel-buffering"] == "no"
    events = [line for line in reply.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]"
    # Without include_usage every chunk has a choice (OpenAI's ``chunk.choices[0]`` loop).
    chunks = [json.loads(line[len("data: ") :]) for line in events[:-1]]
    assert all(c["choices"] for c in chunks) and "search" in chunks[-1]


@pytest.mark.parametrize(
    "body, param",
    [
        ({"search": {"algorithm": "nope"}}, "search.algorithm"),
        ({"search": {"n": 0}}, "search.n"),
        ({"search": {"n": 10000}}, "search.n"),
        ({"max_tokens": -1}, "max_tokens"),
        ({"temperature": "hot"}, "temperature"),
        ({"messages": []}, "messages"),
    ],
)
def test_bad_requests_get_openai_errors(server: str, body: dict, param: str) -> None:
    full = {"model": MODEL, "messages": question(), "max_tokens": 4, **body}
    r = httpx.post(f"{server}/v1/chat/completions", json=full, timeout=60)
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error"


def test_malformed_json_and_unknown_model_then_still_serving(
    server: str, client: openai.OpenAI
) -> None:
    r = httpx.post(
        f"{server}/v1/chat/completions",
        content=b"{not json",
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 400 and "error" in r.json()
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-9", messages=question(), max_tokens=4)
    ok = client.chat.completions.create(model=MODEL, messages=question(), max_tokens=4)
    assert ok.choices[0].message.content is not None


def test_metrics_move_after_requests(server: str, client: openai.OpenAI) -> None:
    def requests_ok() -> float:
        text = httpx.get(f"{server}/metrics").text
        assert "vllm:" in text, "the in-process engine's metrics are missing"
        match = re.search(
            r'^alignserve_requests_total\{algorithm="bon",api="chat",status="200"\} (\S+)$',
            text,
            re.M,
        )
        return float(match.group(1)) if match else 0.0

    before = requests_ok()
    client.chat.completions.create(model=MODEL, messages=question(3), max_tokens=4)
    assert requests_ok() == before + 1
    text = httpx.get(f"{server}/metrics").text
    for series in (
        "alignserve_generated_tokens_total",
        "alignserve_candidates_generated_total",
        "alignserve_chosen_reward_bucket",
        "alignserve_reward_latency_seconds_bucket",
        "alignserve_request_latency_seconds_bucket",
    ):
        assert series in text, series


def test_models_health_ready(server: str, client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list()] == [MODEL]
    assert httpx.get(f"{server}/health").status_code == 200
    assert httpx.get(f"{server}/ready").json()["status"] == "ready"


def test_openai_s_documented_stream_loops_run_to_the_end(
    client: openai.OpenAI, capsys: pytest.CaptureFixture[str]
) -> None:
    """OpenAI's documented stream loops as its docs print them, no guard around
    ``chunk.choices[0]``: chat and completions, with a search, without include_usage."""
    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Name two rivers."}],
        max_tokens=12,
        stream=True,
        extra_body={"search": {"algorithm": "bon", "n": 2}},
    )
    for chunk in stream:
        print(chunk.choices[0].delta.content)
    stream = client.completions.create(
        model=MODEL, prompt="Two rivers are", max_tokens=12, best_of=2, stream=True
    )
    for chunk in stream:
        print(chunk.choices[0].text)
    assert capsys.readouterr().out.strip()
