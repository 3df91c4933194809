"""``alignserve bench --vs-engine`` as the README runs it: the console script on the real
engine and judge, served over HTTP from the same process and driven directly (Best-of-N,
and its generation alone), two concurrency levels of Best-of-2; then bench.json, the
printed ratios and the plots. ``--vs-vllm`` against the session's real ``vllm serve``:
alignserve in remote mode in front of it against it alone, with its token counters."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.integration

REQUESTS = 4  # per side and concurrency level: enough for 4 clients at once


def test_bench_vs_engine_measures_both_sides_and_writes_report(
    tmp_path: Path, cpu_env: dict[str, str], model_path: str
) -> None:
    out = tmp_path / "bench"
    command = [str(Path(sys.executable).parent / "alignserve"), "bench", "--vs-engine"]
    command += ["--model", model_path, "--concurrency", "1,4", "--requests", str(REQUESTS)]
    command += ["--n", "2"]
    command += ["--max-tokens", "16", "--out", str(out), "--log-level", "warning"]
    done = subprocess.run(
        command, cwd=ROOT, env=cpu_env, capture_output=True, text=True, timeout=400
    )
    assert done.returncode == 0, done.stderr[-3000:]
    document = json.loads((out / "bench.json").read_text())
    assert document["mode"] == "vs-engine"
    assert "MicroBatcher" in document["raw_reward"]
    for side in ("levels", "raw"):
        rows = document[side]
        assert [(r["algorithm"], r["concurrency"]) for r in rows] == [("bon", 1), ("bon", 4)]
        for row in rows:
            assert row["requests"] == row["ok"] == REQUESTS and row["errors"] == {}
            assert 0 < row["generated_tokens"] <= REQUESTS * 2 * 16 and row["tokens_per_s"] > 0
            assert 0 < row["latency_p50"] <= row["latency_p95"] <= row["latency_p99"]
            assert row["reward_batch_mean"] >= 1.0
        # One client at a time: each request's two responses are scored, in one batch or,
        # when they finish in different engine steps, one each.
        one = rows[0]
        assert one["reward_batch_mean"] * one["reward_batches"] == pytest.approx(REQUESTS * 2)
        assert REQUESTS <= one["reward_batches"] <= REQUESTS * 2
    # The same seeds on both sides: one client at a time, they generate the same tokens.
    assert document["levels"][0]["generated_tokens"] == document["raw"][0]["generated_tokens"]
    # The floor: the same generate calls, no scoring, so the same tokens one at a time.
    floor = document["floor"]
    assert [(r["concurrency"], r["ok"], r["errors"]) for r in floor] == [
        (1, REQUESTS, {}),
        (4, REQUESTS, {}),
    ]
    assert floor[0]["generated_tokens"] == document["raw"][0]["generated_tokens"]
    assert all(r["reward_batches"] is None for r in floor)
    ratios = document["ratios"]
    assert [r["concurrency"] for r in ratios] == [1, 4]
    for r in ratios:
        assert r["tokens_per_s_ratio"] > 0
        assert r["floor_tokens_per_s_ratio"] > 0 and r["floor_latency_p50_ratio"] > 0
    row = f"| bon | 4 | http | {REQUESTS} / {REQUESTS} | 0 |"
    assert "| HTTP / raw |" in done.stdout and row in done.stdout
    assert "| HTTP / floor tok/s | HTTP / floor p50 |" in done.stdout
    assert "raw engine side scored through its own MicroBatcher" in done.stdout
    for name in ("throughput.png", "latency.png"):
        assert (out / name).read_bytes().startswith(b"\x89PNG")


def test_bench_vs_vllm_measures_alignserve_against_the_upstream_alone(
    tmp_path: Path, cpu_env: dict[str, str], model_path: str, vllm_server: str
) -> None:
    out = tmp_path / "floor"
    # The session's vllm serve names its model by the folder it was given.
    command = [str(Path(sys.executable).parent / "alignserve"), "bench"]
    command += ["--vs-vllm", vllm_server, "--model", model_path, "--concurrency", "1"]
    command += ["--requests", "2", "--n", "2", "--max-tokens", "8", "--out", str(out)]
    command += ["--log-level", "warning"]
    done = subprocess.run(
        command, cwd=ROOT, env=cpu_env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    print(done.stdout)
    document = json.loads((out / "bench.json").read_text())
    assert document["mode"] == "vs-vllm" and document["model"] == model_path
    assert document["server"]["remote_engine_url"] == vllm_server
    for side in ("levels", "raw"):
        [row] = document[side]
        assert (row["concurrency"], row["requests"], row["ok"], row["errors"]) == (1, 2, 2, {})
        assert 0 < row["generated_tokens"] <= 2 * 2 * 8
        assert 0 < row["latency_p50"] <= row["latency_p95"]
    for counts in document["tokens"]:
        assert counts["prompt"] > 0 and counts["generated"] > 0
        assert 0 < counts["computed_prompt"] <= counts["prompt"]
        assert counts["prefix_hits"] >= 0
    by_side = {t["side"]: t for t in document["tokens"]}
    # alignserve's judge reads every response back: more upstream work than generation.
    assert by_side["alignserve"]["generated"] >= by_side["raw"]["generated"]
    [pair] = document["ratios"]
    for key in ("latency_p50_ratio", "latency_p95_ratio", "requests_per_s_ratio"):
        assert math.isfinite(pair[key]) and pair[key] > 0
    assert math.isfinite(pair["computed_prompt_ratio"]) and pair["computed_prompt_ratio"] > 0
    assert (
        "| 1 | alignserve | 2 / 2 | 0 |" in done.stdout and "| 1 | raw | 2 / 2 | 0 |" in done.stdout
    )
    assert "| computed prompt alignserve / raw |" in done.stdout
    assert (out / "bench.md").read_text() in done.stdout
    for name in ("throughput.png", "latency.png"):
        assert (out / name).read_bytes().startswith(b"\x89PNG")
