"""Shared fixtures. The real engine and the default model are started once per session."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
# Third-party prompt sets live beside the checkout (CI clones the repo with ../shared
# beside it), never in the repository: ../shared/data/README.md says where each came from.
SHARED_DATA = ROOT.parent / "shared" / "data"
MT_BENCH = SHARED_DATA / "mt_bench_questions.jsonl"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def engine_requests(url: str) -> float:
    """Requests a vLLM engine is running or has queued, from its own gauges on
    ``url``/metrics (a vllm server's, or alignserve's for its in-process engine)."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    values = re.findall(r"^vllm:num_requests_(?:running|waiting)\{[^}]*\} (\S+)$", text, re.M)
    assert values, "the engine's vllm:num_requests_* gauges are missing"
    return sum(float(v) for v in values)


@contextmanager
def running_server(
    cmd: list[str], env: dict[str, str], url: str, ready_path: str, timeout_s: float
) -> Iterator[subprocess.Popen[bytes]]:
    """Start a server process in its own session, wait until ``url + ready_path`` says 200,
    and stop the whole process group afterwards (SIGTERM, then SIGKILL)."""
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            assert proc.poll() is None, f"{cmd[0]} exited during start-up"
            try:
                if httpx.get(f"{url}{ready_path}", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        else:
            pytest.fail(f"{' '.join(cmd)} was not ready in {timeout_s:.0f} s")
        yield proc
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


class LoopTicks:
    """Counts 5 ms event-loop ticks while its block runs: a blocked loop barely ticks."""

    def __init__(self) -> None:
        self.count = 0

    async def __aenter__(self) -> LoopTicks:
        async def tick() -> None:
            while True:
                await asyncio.sleep(0.005)
                self.count += 1

        self._task = asyncio.ensure_future(tick())
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._task.cancel()


def mt_bench_file() -> Path:
    """FastChat's MT-Bench questions in ../shared/data; the test is skipped without them."""
    if not MT_BENCH.is_file():
        pytest.skip(f"MT-Bench questions not found at {MT_BENCH} (../shared/data beside the repo)")
    return MT_BENCH


def mt_bench_prompts(limit: int = 80) -> list[str]:
    """First turns of the MT-Bench questions (../shared/data/mt_bench_questions.jsonl)."""
    from tools.evaluation import load_prompts

    return [p.conversation[-1]["content"] for p in load_prompts(mt_bench_file(), limit=limit)]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    from tests.xdist_groups import longest_first

    longest_first(items)


def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object | None:
    """``--dist loadgroup`` by our groups (see tests/xdist_groups.py); other modes as xdist."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from tests.xdist_groups import GroupScheduling

    return GroupScheduling(config, log)


@pytest.fixture(scope="session")
def model_path() -> str:
    from engines.default_model import ensure_default_model

    return str(ensure_default_model())


@pytest.fixture(scope="session")
def cpu_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    return env
