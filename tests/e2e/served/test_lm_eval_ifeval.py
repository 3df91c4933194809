"""lm-eval's own IFEval task against the served server, by the documented command
(``bench/ifeval/run.sh``: ``lm_eval run --model local-chat-completions`` with the local task
``bench/ifeval/ifeval_local.yaml``, whose dataset is ../shared/data's IFEval file), a search
in ``--gen_kwargs``, on the first few rows. It must report lm-eval's four metrics, send the
search to the server (its request counter for ``bon`` grows by one per row), and score each
logged answer exactly as IFEval's checks do, recomputed here. Without IFEval's prompts
beside the repository the test is skipped, saying so."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ROOT, SHARED_DATA
from tests.e2e.served.test_ifeval import ifeval_strict
from tests.e2e.served.test_lm_eval import offline_env

pytestmark = pytest.mark.e2e

LIMIT = 3
METRICS = (
    "prompt_level_strict_acc",
    "inst_level_strict_acc",
    "prompt_level_loose_acc",
    "inst_level_loose_acc",
)


def bon_requests(server: str) -> float:
    text = httpx.get(f"{server}/metrics", timeout=10).text
    found = re.findall(
        r'^alignserve_requests_total\{algorithm="bon",[^}]*status="200"\} (\S+)$', text, re.M
    )
    return sum(float(v) for v in found)


def test_lm_evals_ifeval_task_runs_a_search_and_scores_with_ifevals_checks(
    server: str, tmp_path: Path
) -> None:
    if not (SHARED_DATA / "ifeval_input_data.jsonl").is_file():
        pytest.skip(f"IFEval's prompts not found in {SHARED_DATA} (../shared/data beside the repo)")
    search = {"algorithm": "bon", "n": 2}
    gen_kwargs = {"max_gen_toks": 24, "temperature": 0.8, "search": search}
    before = bon_requests(server)
    done = subprocess.run(
        [
            str(ROOT / "bench" / "ifeval" / "run.sh"),
            server,
            str(tmp_path / "out"),
            "--limit",
            str(LIMIT),
            "--gen_kwargs",
            json.dumps(gen_kwargs),
        ],
        env={**offline_env(tmp_path), "CONCURRENCY": "3"},
        cwd=ROOT,  # the task's data path is relative to the repository root
        capture_output=True,
        text=True,
        timeout=300,
    )
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-4000:]
    [results_file] = (tmp_path / "out").rglob("results_*.json")
    results: dict[str, Any] = json.loads(results_file.read_text())
    scores = results["results"]["ifeval_local"]
    for name in METRICS:
        value = scores[f"{name},none"]
        assert isinstance(value, float) and 0.0 <= value <= 1.0, scores
    assert results["n-samples"]["ifeval_local"]["effective"] == LIMIT
    assert results["configs"]["ifeval_local"]["generation_kwargs"]["search"] == search
    assert bon_requests(server) - before == LIMIT

    # lm-eval's per-row verdicts are IFEval's own on the answers the server gave.
    [samples_file] = (tmp_path / "out").rglob("samples_ifeval_local_*.jsonl")
    samples = [json.loads(line) for line in samples_file.read_text().splitlines()]
    assert len(samples) == LIMIT
    for sample in samples:
        row = sample["doc"]
        row["kwargs"] = [{k: v for k, v in kw.items() if v is not None} for kw in row["kwargs"]]
        answer = sample["resps"][0][0]
        assert answer.strip(), sample
        strict = ifeval_strict(row, answer)
        assert sample["inst_level_strict_acc"] == strict
        assert sample["prompt_level_strict_acc"] == all(strict)
    mean = sum(all(ifeval_strict(s["doc"], s["resps"][0][0])) for s in samples) / LIMIT
    assert scores["prompt_level_strict_acc,none"] == pytest.approx(mean)
