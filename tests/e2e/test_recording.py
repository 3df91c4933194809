"""Recording survives a kill -9 in the middle of a load run, on the real engine: every
request answered before the kill has its record, every record reads back whole (at most
the line being written is cut off), and `alignserve export` makes the three training sets."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from server.recording import ReadReport, read_records
from tests.conftest import ROOT, free_port, mt_bench_prompts, running_server
from tests.e2e.conftest import MODEL

pytestmark = pytest.mark.e2e

CLIENTS = 8
KILL_AFTER = 16  # answered requests


async def load_until_killed(url: str, proc: subprocess.Popen[bytes]) -> list[str]:
    """CLIENTS clients send Best-of-3 requests; after KILL_AFTER answers the server gets
    SIGKILL while the others are in flight. Returns the ids of the answered requests."""
    answered: list[str] = []
    prompts = mt_bench_prompts()
    killed = asyncio.Event()

    async def client(worker: int) -> None:
        async with httpx.AsyncClient(base_url=url, timeout=120) as http:
            i = worker
            while not killed.is_set():
                body = {
                    "model": MODEL,
                    "messages": [{"role": "user", "content": prompts[i % len(prompts)]}],
                    "max_tokens": 12,
                    "search": {"algorithm": "bon", "n": 3},
                }
                try:
                    reply = await http.post("/v1/chat/completions", json=body)
                except httpx.HTTPError:
                    assert killed.is_set(), "a request failed before the kill"
                    return
                assert reply.status_code == 200, reply.text
                answered.append(reply.json()["id"])
                if len(answered) >= KILL_AFTER and not killed.is_set():
                    os.kill(proc.pid, signal.SIGKILL)
                    killed.set()
                i += CLIENTS

    await asyncio.gather(*(client(w) for w in range(CLIENTS)))
    return answered


def test_records_survive_kill_9_during_load(cpu_env: dict[str, str], tmp_path: Path) -> None:
    records_dir = tmp_path / "records"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [".venv/bin/alignserve", "serve", "--port", str(port), "--record", str(records_dir)]
    with running_server(cmd, cpu_env, url, "/ready", timeout_s=400) as proc:
        answered = asyncio.run(load_until_killed(url, proc))
        assert proc.wait(30) == -signal.SIGKILL

    report = ReadReport()
    records = {r["id"]: r for r in read_records(records_dir, report)}
    assert report.damaged <= 1
    assert len(answered) >= KILL_AFTER
    assert set(answered) <= set(records), "an answered request has no record"
    for record in records.values():
        assert record["algorithm"] == "bon" and len(record["candidates"]) == 3
        for cand in record["candidates"]:
            assert len(cand["token_ids"]) == len(cand["logprobs"]) > 0
            assert 0.0 <= cand["reward"] <= 1.0
        assert record["conversation"][0]["role"] == "user"

    out = tmp_path / "export"
    done = subprocess.run(
        [sys.executable, "-m", "tools.cli", "export", str(records_dir), "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    rows = {
        name: [json.loads(line) for line in (out / f"{name}.jsonl").read_text().splitlines()]
        for name in ("distill", "preferences", "all_n")
    }
    assert len(rows["distill"]) == len(rows["all_n"]) == len(records)
    assert 0 < len(rows["preferences"]) <= len(records)
    for pair in rows["preferences"]:
        assert pair["chosen_reward"] > pair["rejected_reward"]
    print(f"{len(answered)} answered, {len(records)} records, {report.damaged} cut off")
