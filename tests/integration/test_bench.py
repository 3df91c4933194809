"""``alignserve bench --vs-engine`` as the README runs it: the console script on the real
engine and judge, served over HTTP from the same process and driven directly, two
concurrency levels of Best-of-2; then bench.json, the printed ratios and the plots."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.integration


def test_bench_vs_engine_measures_both_sides_and_writes_report(
    tmp_path: Path, cpu_env: dict[str, str], model_path: str
) -> None:
    out = tmp_path / "bench"
    command = [str(Path(sys.executable).parent / "alignserve"), "bench", "--vs-engine"]
    command += ["--model", model_path, "--concurrency", "1,4", "--requests", "8", "--n", "2"]
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
            assert row["requests"] == row["ok"] == 8 and row["errors"] == {}
            assert 0 < row["generated_tokens"] <= 8 * 2 * 16 and row["tokens_per_s"] > 0
            assert 0 < row["latency_p50"] <= row["latency_p95"] <= row["latency_p99"]
            assert row["reward_batch_mean"] >= 2.0
        # One client at a time: each reward batch is exactly one request's two responses.
        assert rows[0]["reward_batch_mean"] == 2.0 and rows[0]["reward_batches"] == 8
    # The same seeds on both sides: one client at a time, they generate the same tokens.
    assert document["levels"][0]["generated_tokens"] == document["raw"][0]["generated_tokens"]
    ratios = document["ratios"]
    assert [r["concurrency"] for r in ratios] == [1, 4]
    assert all(r["tokens_per_s_ratio"] > 0 for r in ratios)
    assert "| HTTP / raw |" in done.stdout and "| bon | 4 | http | 8 / 8 | 0 |" in done.stdout
    assert "raw engine side scored through its own MicroBatcher" in done.stdout
    for name in ("throughput.png", "latency.png"):
        assert (out / name).read_bytes().startswith(b"\x89PNG")
