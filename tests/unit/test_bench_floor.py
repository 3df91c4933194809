"""``alignserve bench --vs-vllm`` on fakes: the upstream's token counters read off its
/metrics text, the plain n-sample answers judged, and a whole sweep of both sides against
a fake upstream whose counters each side moves by a known amount."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from server.runtime import Runtime
from tools.bench_floor import (
    Sides,
    compare,
    floor_table,
    per_request,
    reset_prefix_cache,
    token_totals,
    vllm_call,
    vllm_outcome,
    write_floor_report,
)
from tools.bench_sweep import BenchConfig
from tools.evaluation import Prompt
from tools.loadgen import INVALID, OK, Workload, http_call

PROMPTS = [Prompt(i, f"q{i}", [{"role": "user", "content": f"question {i}"}]) for i in range(3)]

METRICS = """\
# HELP vllm:prompt_tokens_total Number of prefill tokens processed.
# TYPE vllm:prompt_tokens_total counter
vllm:prompt_tokens_total{engine="0",model_name="m"} 120.0
vllm:prompt_tokens_total{engine="1",model_name="m"} 30.0
vllm:prompt_tokens_created{engine="0",model_name="m"} 1.7e9
vllm:prefix_cache_hits_total{engine="0",model_name="m"} 64.0
vllm:prefix_cache_queries_total{engine="0",model_name="m"} 150.0
vllm:generation_tokens_total{engine="0",model_name="m"} 48.0
"""


def test_token_totals_sum_engines_and_skip_other_series() -> None:
    assert token_totals(METRICS) == {"prompt": 150.0, "prefix_hits": 64.0, "generated": 48.0}
    assert token_totals("alignserve_requests_total 3\n") is None


def test_per_request_divides_the_deltas_and_adds_computed_prompt() -> None:
    before = {"prompt": 100.0, "prefix_hits": 20.0, "generated": 10.0}
    after = {"prompt": 180.0, "prefix_hits": 60.0, "generated": 50.0}
    assert per_request(before, after, 4) == {
        "prompt": 20.0,
        "prefix_hits": 10.0,
        "generated": 10.0,
        "computed_prompt": 10.0,
    }
    assert per_request(None, after, 4) is None


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (
            200,
            {"object": "chat.completion", "choices": [{}, {}], "usage": {"completion_tokens": 9}},
            (OK, 9),
        ),
        (200, {"object": "chat.completion", "choices": [{}]}, (INVALID, 0)),
        (200, None, (INVALID, 0)),
        (503, {"error": {}}, ("503", 0)),
    ],
)
def test_vllm_outcome_wants_n_choices(status: int, body: Any, expected: tuple[str, int]) -> None:
    assert vllm_outcome(status, body, 2) == expected


class FakeUpstream:
    """A vLLM server's chat route and counters; alignserve's requests (which carry
    ``search``) cost it more prompt tokens than plain ones, and find part of them cached."""

    def __init__(self) -> None:
        self.totals = {"prompt": 0.0, "hits": 0.0, "generated": 0.0}
        self.bodies: list[dict[str, Any]] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/metrics":
            t = self.totals
            text = (
                f'vllm:prompt_tokens_total{{engine="0"}} {t["prompt"]}\n'
                f'vllm:prefix_cache_hits_total{{engine="0"}} {t["hits"]}\n'
                f'vllm:generation_tokens_total{{engine="0"}} {t["generated"]}\n'
            )
            return httpx.Response(200, text=text)
        if request.url.path == "/reset_prefix_cache":
            return httpx.Response(404)
        body = json.loads(request.content)
        self.bodies.append(body)
        searched = "search" in body
        n = body["search"]["n"] if searched else body["n"]
        self.totals["prompt"] += 40 if searched else 10
        self.totals["hits"] += 16 if searched else 0
        self.totals["generated"] += n * body["max_tokens"] + (2 * n if searched else 0)
        message = {"role": "assistant", "content": "x"}
        choices = [{"index": 0, "message": message}] * (1 if searched else n)
        answer: dict[str, Any] = {"object": "chat.completion", "choices": choices}
        if searched:
            answer["search"] = {"generated_tokens": n * body["max_tokens"]}
        else:
            answer["usage"] = {"completion_tokens": n * body["max_tokens"]}
        return httpx.Response(200, json=answer)

    def client(self, _concurrency: int = 1) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(self.handle), base_url="http://up")


async def test_floor_sweep_alternates_sides_and_counts_tokens_per_request(tmp_path: Path) -> None:
    from tools.bench_floor import floor_sweep

    fake = FakeUpstream()
    upstream = fake.client()
    sides = Sides(
        calls={
            "alignserve": lambda client, work: http_call(client, PROMPTS, work),
            "raw": lambda client, work: vllm_call(client, PROMPTS, work, "m"),
        },
        clients={"alignserve": fake.client, "raw": fake.client},
        upstream=upstream,
        reset=await reset_prefix_cache(upstream),
    )
    assert sides.reset is False
    config = BenchConfig(("bon",), (1, 2), requests=4, work=Workload(n=2, max_tokens=3))
    await sides.warm_up(PROMPTS, config.work)
    rows, tokens = await floor_sweep(config, sides)
    await upstream.aclose()
    assert [(r.concurrency, r.side) for r in rows] == [
        (1, "raw"),
        (1, "alignserve"),
        (2, "alignserve"),
        (2, "raw"),
    ]
    assert all(r.ok == 4 and r.generated_tokens == 4 * 2 * 3 for r in rows)
    raw = [b for b in fake.bodies if "search" not in b]
    # The warm-up, then the same four seeds at each level.
    assert sorted(b["seed"] for b in raw) == sorted([0] + [0, 1, 2, 3] * 2)
    assert {(b["model"], b["n"]) for b in raw} == {("m", 2)}
    by = {(t["concurrency"], t["side"]): t for t in tokens}
    assert by[1, "raw"] == {
        "concurrency": 1,
        "side": "raw",
        "prompt": 10.0,
        "prefix_hits": 0.0,
        "generated": 6.0,
        "computed_prompt": 10.0,
    }
    assert by[2, "alignserve"]["computed_prompt"] == 24.0
    assert by[2, "alignserve"]["generated"] == 10.0
    pairs = compare(rows, tokens)
    assert [p["concurrency"] for p in pairs] == [1, 2]
    assert all(p["computed_prompt_ratio"] == pytest.approx(2.4) for p in pairs)
    assert all(math.isfinite(p["latency_p50_ratio"]) for p in pairs)
    table = floor_table(rows, tokens, pairs)
    assert "| 2 | alignserve | 4 / 4 | 0 |" in table and "| 2.400 |" in table

    record = {"mode": "vs-vllm", "model": "m", "bench": {"requests": 4, "work": {"n": 2}}}
    assert write_floor_report(tmp_path, record, rows, tokens) == table
    document = json.loads((tmp_path / "bench.json").read_text())
    assert [r["side"] for r in document["levels"]] == ["alignserve", "alignserve"]
    assert [r["side"] for r in document["raw"]] == ["raw", "raw"]
    assert document["ratios"][0]["computed_prompt_ratio"] == pytest.approx(2.4)
    assert (tmp_path / "bench.md").read_text() == table
    for name in ("throughput.png", "latency.png"):
        assert (tmp_path / name).read_bytes().startswith(b"\x89PNG")


async def test_vs_engine_sweep_adds_the_generate_only_floor(
    runtime_of: Callable[..., Runtime],
) -> None:
    from server.app import create_app
    from server.settings import Settings
    from tests.unit.test_loadgen import CountingGenerator, ItemReward, asgi_clients
    from tools.bench_report import markdown_table, ratios
    from tools.bench_sweep import RawSide, sweep

    generator = CountingGenerator(delay_s=0.02)
    runtime = runtime_of(generator=generator, reward=ItemReward())
    settings = Settings()
    raw = RawSide.of(runtime, settings)
    config = BenchConfig(("bon",), (1, 2, 4), requests=4, work=Workload(n=2, max_tokens=5))
    try:
        rows = await sweep(
            config,
            PROMPTS,
            asgi_clients(create_app(settings, runtime=runtime)),
            raw=raw,
            floor=True,
        )
    finally:
        await raw.aclose()
    # Each level starts one side further on; the floor makes the same generate calls.
    sides = [r.side for r in rows]
    assert sides == ["raw", "http", "floor", "http", "floor", "raw", "floor", "raw", "http"]
    assert sorted(generator.calls) == sorted([(i, 2) for i in range(4)] * 9)
    floor = [r for r in rows if r.side == "floor"]
    assert all(r.ok == 4 and r.generated_tokens == 4 * 2 * 5 for r in floor)
    assert all(r.reward_batches is None for r in floor)  # it never scores
    pairs = ratios(rows)
    assert [p["concurrency"] for p in pairs] == [1, 2, 4]
    for p in pairs:
        assert p["floor_tokens_per_s_ratio"] > 0 and p["floor_latency_p50_ratio"] > 0
    assert "| HTTP / floor tok/s | HTTP / floor p50 |" in markdown_table(rows, pairs)
