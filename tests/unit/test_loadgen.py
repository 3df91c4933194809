"""alignserve bench on fakes: percentiles and level statistics on hand-computed data, the
/metrics batch-size parser, the load loop (request count, concurrency, seeds) against the
app over ASGI, the raw engine side, the in-process server and the written report."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from rewards.batcher import ScoreItem
from search.fakes import completion_of
from search.types import Completion, Message, SamplingConfig
from server.app import create_app
from server.cli import settings_from_args
from server.runtime import Runtime
from server.settings import Settings
from tools import bench_cli
from tools.bench_report import markdown_table, ratios, write_report
from tools.bench_sweep import BenchConfig, ClientFor, RawSide, sweep
from tools.cli import build_parser
from tools.evaluation import Prompt
from tools.loadgen import (
    INVALID,
    OK,
    Sample,
    Workload,
    batch_counts,
    batch_delta,
    outcome_of,
    percentile,
    run_level,
    summarize,
)

PROMPTS = [Prompt(i, f"q{i}", [{"role": "user", "content": f"question {i}"}]) for i in range(4)]
REWARDS = {"three": 0.8}


@dataclass
class CountingGenerator:
    """Answers n copies of ``text`` (cut at max_tokens) after ``delay_s``; records the peak
    number of calls in flight and every call's seed and n."""

    delay_s: float = 0.02
    text: str = "three"
    active: int = 0
    peak: int = 0
    calls: list[tuple[int | None, int]] = field(default_factory=list)

    async def generate(
        self, prompt_ids: Sequence[int], params: SamplingConfig, n: int = 1
    ) -> list[Completion]:
        self.calls.append((params.seed, n))
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            await asyncio.sleep(self.delay_s)
        finally:
            self.active -= 1
        return [completion_of(self.text[: params.max_tokens]) for _ in range(n)]


class ItemReward:
    """A table reward that scores mixed items, so the server micro-batches it."""

    bounds = None
    takes_token_ids = False

    async def score(
        self, conversation: Sequence[Message], responses: Sequence[str], *, partial: bool = False
    ) -> list[float]:
        return [REWARDS.get(r, 0.0) for r in responses]

    async def score_items(self, items: Sequence[ScoreItem]) -> list[float]:
        return [REWARDS.get(it.response, 0.0) for it in items]


@dataclass
class Bar:
    updates: int = 0
    labels: list[str] = field(default_factory=list)

    def set_description_str(self, desc: str) -> None:
        self.labels.append(desc)

    def update(self, n: int = 1) -> None:
        self.updates += n


def asgi_clients(app: Any) -> ClientFor:
    def client_for(concurrency: int) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")

    return client_for


def test_percentile_interpolates_between_closest_ranks() -> None:
    assert percentile([4.0, 1.0, 3.0, 2.0], 50) == 2.5
    assert percentile([4.0, 1.0, 3.0, 2.0], 0) == 1.0
    assert percentile([4.0, 1.0, 3.0, 2.0], 100) == 4.0
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 95) == pytest.approx(95.05)
    assert percentile(values, 99) == pytest.approx(99.01)
    assert percentile([7.0], 99) == 7.0
    assert percentile([], 50) is None


def test_summarize_counts_ok_requests_tokens_and_errors_by_outcome() -> None:
    samples = [
        Sample(0, 1.0, OK, 40),
        Sample(1, 3.0, OK, 24),
        Sample(2, 0.1, "503"),
        Sample(3, 2.0, OK, 32),
        Sample(4, 0.2, "503"),
        Sample(5, 9.0, INVALID),
    ]
    stats = summarize(samples, 4.0, algorithm="bon", concurrency=2, side="http", batches=(3, 5.5))
    assert (stats.requests, stats.ok) == (6, 3)
    assert stats.errors == {"503": 2, INVALID: 1}
    assert stats.requests_per_s == 0.75  # 3 ok requests in 4 s
    assert (stats.generated_tokens, stats.tokens_per_s) == (96, 24.0)
    assert (stats.latency_p50, stats.latency_mean) == (2.0, 2.0)  # errors are left out
    assert stats.latency_p99 == pytest.approx(2.98)
    assert (stats.reward_batches, stats.reward_batch_mean) == (3, 5.5)


def test_outcome_of_accepts_only_a_chat_completion_with_one_choice() -> None:
    body = {
        "object": "chat.completion",
        "choices": [{"message": {"role": "assistant", "content": "hi"}}],
        "search": {"generated_tokens": 17},
    }
    assert outcome_of(200, body) == (OK, 17)
    assert outcome_of(200, {**body, "choices": body["choices"] * 2}) == (INVALID, 0)
    assert outcome_of(200, None) == (INVALID, 0)
    assert outcome_of(200, {"object": "list"}) == (INVALID, 0)
    assert outcome_of(429, body) == ("429", 0)


METRICS = """\
# HELP alignserve_reward_batch_size Responses per batch sent to the reward model
# TYPE alignserve_reward_batch_size histogram
alignserve_reward_batch_size_bucket{le="4.0",reward="judge"} 2.0
alignserve_reward_batch_size_count{reward="judge"} 3.0
alignserve_reward_batch_size_sum{reward="judge"} 20.0
alignserve_reward_batch_size_count{reward="classifier"} 1.0
alignserve_reward_batch_size_sum{reward="classifier"} 4.0
alignserve_reward_batch_wait_seconds_sum{reward="judge"} 0.5
alignserve_reward_batch_wait_seconds_count{reward="judge"} 3.0
"""


def test_batch_counts_sum_every_label_set_and_delta_gives_the_mean() -> None:
    assert batch_counts(METRICS) == (24.0, 4.0)
    assert batch_counts("") == (0.0, 0.0)
    assert batch_delta((24.0, 4.0), (60.0, 10.0)) == (6, 6.0)
    assert batch_delta((24.0, 4.0), (24.0, 4.0)) == (0, None)
    assert batch_delta(None, (24.0, 4.0)) == (None, None)


async def test_run_level_issues_each_request_once_with_bounded_concurrency() -> None:
    active, peak, seen = 0, 0, []

    async def call(index: int) -> Sample:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.01 * (index % 3))
        active -= 1
        seen.append(index)
        return Sample(index, 0.0, OK, 1)

    done: list[Sample] = []
    samples, wall = await run_level(call, 10, 4, on_done=done.append)
    assert sorted(seen) == list(range(10)) and len(done) == 10
    assert [s.index for s in samples] == list(range(10))
    assert peak == 4 and wall > 0
    with pytest.raises(ValueError):
        await run_level(call, 0, 4)


@pytest.mark.parametrize("concurrency", [1, 3])
async def test_sweep_over_http_respects_concurrency_and_reads_batch_sizes(
    concurrency: int, runtime_of: Callable[..., Runtime]
) -> None:
    generator = CountingGenerator()
    app = create_app(Settings(), runtime=runtime_of(generator=generator))
    work = Workload(n=2, max_tokens=4, seed=100)
    config = BenchConfig(("bon",), (concurrency,), requests=6, work=work)
    bar = Bar()
    [row] = await sweep(config, PROMPTS, asgi_clients(app), bar=bar)
    assert (row.side, row.concurrency, row.requests, row.ok, row.errors) == (
        "http",
        concurrency,
        6,
        6,
        {},
    )
    assert generator.peak == concurrency
    assert sorted(generator.calls) == [(100 + i, 2) for i in range(6)]
    assert row.generated_tokens == 6 * 2 * 4  # "three" cut at 4 tokens, 2 samples each
    # The table reward is not micro-batched: every request is one batch of n = 2.
    assert (row.reward_batches, row.reward_batch_mean) == (6, 2.0)
    assert bar.updates == 6 and bar.labels == [f"bon x{concurrency} http"]


async def test_sweep_vs_engine_alternates_sides_and_batches_both_alike(
    runtime_of: Callable[..., Runtime],
) -> None:
    generator = CountingGenerator(delay_s=0.05)
    runtime = runtime_of(generator=generator, reward=ItemReward())
    settings = Settings(reward_max_wait_ms=40)
    app = create_app(settings, runtime=runtime)
    raw = RawSide.of(runtime, settings)
    assert "MicroBatcher" in raw.batching
    config = BenchConfig(("bon",), (1, 4), requests=8, work=Workload(n=2, max_tokens=5))
    bar = Bar()
    try:
        rows = await sweep(config, PROMPTS, asgi_clients(app), raw=raw, bar=bar)
    finally:
        await raw.aclose()
    assert [(r.concurrency, r.side) for r in rows] == [
        (1, "raw"),
        (1, "http"),
        (4, "http"),
        (4, "raw"),
    ]
    assert all(r.ok == 8 and r.generated_tokens == 8 * 2 * 5 for r in rows)
    # Both sides made the same calls: the seeds 0..7 with n = 2, once per level and side.
    assert sorted(generator.calls) == sorted([(i, 2) for i in range(8)] * 4)
    by_level = {(r.concurrency, r.side): r for r in rows}
    assert by_level[1, "raw"].reward_batch_mean == by_level[1, "http"].reward_batch_mean == 2.0
    # Four requests finish together: their responses share batches on both sides.
    assert (by_level[4, "raw"].reward_batch_mean or 0) > 2
    assert (by_level[4, "http"].reward_batch_mean or 0) > 2
    assert bar.updates == 32
    [one, four] = ratios(rows)
    assert one["concurrency"] == 1 and four["concurrency"] == 4
    assert one["tokens_per_s_ratio"] == pytest.approx(
        by_level[1, "http"].tokens_per_s / by_level[1, "raw"].tokens_per_s
    )
    table = markdown_table(rows, ratios(rows))
    assert "| bon | 4 | raw | 8 / 8 | 0 |" in table and "| HTTP / raw |" in table


def test_write_report_writes_json_and_both_plots(tmp_path: Path) -> None:
    rows = [
        summarize([Sample(0, 1.0, OK, 8)], 1.0, algorithm="bon", concurrency=c, side=side)
        for c in (1, 4)
        for side in ("raw", "http")
    ]
    write_report(tmp_path, {"mode": "vs-engine", "bench": {"requests": 1}}, rows)
    document = json.loads((tmp_path / "bench.json").read_text())
    assert document["mode"] == "vs-engine"
    assert [r["concurrency"] for r in document["levels"]] == [1, 4]
    assert [r["side"] for r in document["raw"]] == ["raw", "raw"]
    assert [r["tokens_per_s_ratio"] for r in document["ratios"]] == [1.0, 1.0]
    for name in ("throughput.png", "latency.png"):
        assert (tmp_path / name).read_bytes().startswith(b"\x89PNG")


def test_bench_flags_parse_and_bad_combinations_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    args = build_parser().parse_args(
        ["bench", "--concurrency", "1,4,16", "--n", "4", "--max-tokens", "32", "--api-key", "k"]
    )
    config = bench_cli.config_from_args(args)
    assert config.concurrency == (1, 4, 16) and config.levels()[-1] == ("bon", 16)
    assert (config.work.n, config.work.max_tokens, config.requests) == (4, 32, 48)
    assert settings_from_args(args).api_key == ["k"]
    for argv in (
        ["bench", "--vs-engine", "--url", "http://x"],
        ["bench", "--vs-engine", "--algorithms", "bon,mbr"],
        ["bench", "--algorithms", "nope"],
        ["bench", "--concurrency", "0"],
    ):
        args = build_parser().parse_args(argv)
        assert bench_cli.main(settings_from_args(args), args) == 2
        assert "alignserve bench: error:" in capsys.readouterr().err


async def test_run_bench_vs_engine_serves_the_runtime_over_real_http(
    runtime_of: Callable[..., Runtime],
) -> None:
    runtime = runtime_of(generator=CountingGenerator(delay_s=0.01), reward=ItemReward())
    closed: list[bool] = []
    runtime.closers.append(lambda: closed.append(True))

    async def loader(_: Settings) -> Runtime:
        return runtime

    config = BenchConfig(("bon",), (2,), requests=4, work=Workload(n=2, max_tokens=3))
    rows, record = await bench_cli.run_bench(
        Settings(), config, PROMPTS, url=None, vs_engine=True, loader=loader
    )
    assert [(r.side, r.ok, r.errors) for r in rows] == [("raw", 4, {}), ("http", 4, {})]
    assert record["mode"] == "vs-engine" and "MicroBatcher" in record["raw_reward"]
    assert closed == [True]  # closed once, by the bench, not by the app as well
