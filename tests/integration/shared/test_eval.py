"""``alignserve eval`` as the README runs it: the console script on the real engine and
judge, two MT-Bench prompts, bon and rbon_kl at n=2, then its three files checked. The
tail check and the constraints truth run in remote mode, against the package's real
``vllm serve`` (as a user with a vLLM server runs them), so they start no engine of their
own."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, mt_bench_file

pytestmark = pytest.mark.integration


def test_eval_cli_writes_json_table_and_plot(
    tmp_path: Path, cpu_env: dict[str, str], model_path: str
) -> None:
    out = tmp_path / "eval"
    command = [str(Path(sys.executable).parent / "alignserve"), "eval", "--model", model_path]
    command += ["--prompts", str(mt_bench_file()), "--limit", "2", "--budgets", "2"]
    command += ["--algorithms", "bon,rbon_kl"]
    command += ["--max-tokens", "16", "--out", str(out), "--log-level", "warning"]
    done = subprocess.run(
        command, cwd=ROOT, env=cpu_env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert {p.name for p in out.iterdir()} >= {"eval.json", "eval.md", "eval.png"}
    assert (out / "eval.png").read_bytes().startswith(b"\x89PNG")
    document = json.loads((out / "eval.json").read_text())
    rows = document["rows"]
    assert [(r["prompt_id"], r["algorithm"], r["n"]) for r in rows] == [
        ("81", "bon", 2),
        ("81", "rbon_kl", 2),
        ("82", "bon", 2),
        ("82", "rbon_kl", 2),
    ]
    for row in rows:
        assert 0 < row["generated_tokens"] <= 2 * 16 and row["candidates"] == 2
        assert 0.0 <= row["reward"] <= 1.0 and row["answer"]
        # Samples are scored as they finish: one reward call per engine step that ended
        # some, so one or two for two samples.
        assert row["engine_calls"] == 1 and 1 <= row["reward_calls"] <= 2
    # The same seed per prompt: bon and rbon_kl drew the same two samples.
    assert rows[0]["generated_tokens"] == rows[1]["generated_tokens"]
    # bon's own reward is the judge's, so re-scoring its answer alone gives it back.
    assert rows[0]["reward"] == pytest.approx(rows[0]["search_reward"], abs=1e-4)
    aggregates = {(a["algorithm"], a["n"]): a for a in document["aggregates"]}
    assert aggregates["bon", 2]["tokens_vs_bon"] == 1.0
    assert aggregates["rbon_kl", 2]["runs"] == 2
    table = (out / "eval.md").read_text()
    assert "| bon | 2 | 2 |" in table and "| rbon_kl | 2 | 2 |" in table
    assert "| algorithm | n |" in done.stdout


def test_tail_check_predicts_best_of_n_on_real_rewards(
    tmp_path: Path, cpu_env: dict[str, str], model_path: str, vllm_server: str
) -> None:
    out = tmp_path / "tail"
    command = [str(Path(sys.executable).parent / "alignserve"), "eval", "--model", model_path]
    command += ["--remote-engine-url", vllm_server]
    command += ["--prompts", str(mt_bench_file()), "--tail-check", "--tail-n", "4"]
    command += ["--tail-samples", "4", "--limit", "2"]
    command += ["--max-tokens", "12", "--out", str(out), "--log-level", "warning"]
    done = subprocess.run(
        command, cwd=ROOT, env=cpu_env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    document = json.loads((out / "tail_check.json").read_text())
    assert [r["prompt_id"] for r in document["rows"]] == ["81", "82"]
    for row in document["rows"]:
        assert len(row["pool"]) == 8 and all(0.0 <= r <= 1.0 for r in row["pool"])
        assert min(row["pool"]) <= row["target"] <= max(row["pool"])
        assert set(row["predicted"]["4"]) == {"max of m", "normal", "gpd"}
    assert {(s["m"], s["estimator"]) for s in document["summary"]} == {
        (4, "max of m"),
        (4, "normal"),
        (4, "gpd"),
    }
    assert "| m | estimator | mean abs error | bias |" in done.stdout


def test_eval_truth_constraints_as_a_command(
    tmp_path: Path, cpu_env: dict[str, str], model_path: str, vllm_server: str
) -> None:
    """The judge searches, the verifiable prompts' own constraints are the truth."""
    from rewards.constraints import ConstraintsReward, parse_constraints

    out = tmp_path / "truth"
    prompts = ROOT / "tools" / "data" / "verifiable_prompts.jsonl"
    command = [str(Path(sys.executable).parent / "alignserve"), "eval", "--model", model_path]
    command += ["--remote-engine-url", vllm_server]
    command += ["--prompts", str(prompts), "--limit", "2", "--budgets", "2"]
    command += ["--algorithms", "bon", "--truth", "constraints", "--best-of-1"]
    command += ["--max-tokens", "16", "--out", str(out), "--log-level", "warning"]
    done = subprocess.run(
        command, cwd=ROOT, env=cpu_env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    document = json.loads((out / "eval.json").read_text())
    rows = document["rows"]
    assert [(r["algorithm"], r["n"]) for r in rows] == [("bon", 1), ("bon", 2)] * 2
    specs = [json.loads(line) for line in prompts.read_text().splitlines()[:2]]
    for row in rows:
        spec = specs[0] if row["prompt_id"] == str(specs[0]["id"]) else specs[1]
        checks = ConstraintsReward(parse_constraints(spec["constraints"]))
        assert row["truth"] == pytest.approx(checks.score_text(row["answer"], False))
        assert row["truth_pass"] == checks.passed(row["answer"])
        assert 0.0 <= row["reward"] <= 1.0  # the judge's, the search's own reward
    assert document["settings"]["eval"]["truth"] == "constraints"
    assert "| truth pass (± se) | truth (± se) |" in done.stdout
