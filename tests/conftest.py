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


def mt_bench_prompts(limit: int = 80) -> list[str]:
    """First turns of the MT-Bench questions (the copy shipped in tools/data)."""
    from tools.evaluation import load_prompts

    return [p.conversation[-1]["content"] for p in load_prompts(limit=limit)]


# Engines that several test files share, started once per pytest process: their users
# must run in the same xdist worker, one after another (`make test` runs two workers).
SHARED_ENGINES = {"served": "e2e-server", "engine": "engines", "vllm_server": "engines"}


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Put every test file in an xdist group: the files that use a shared engine in that
    engine's group, every other file by itself (its module-scoped servers start once).
    Under ``--dist loadgroup`` a group runs whole on one worker, in collection order;
    without xdist the marks do nothing.

    Then order the groups longest first, so two workers end together: the shared-engine
    groups, then the other files that start engines (integration, e2e), then the rest in
    collection order. A shared engine's users stay contiguous, so it starts once either way.
    """
    group_of: dict[str, str] = {}
    for item in items:
        path = item.nodeid.split("::", 1)[0]
        for name in getattr(item, "fixturenames", ()):
            if name in SHARED_ENGINES:
                group_of.setdefault(path, SHARED_ENGINES[name])
    groups = []
    for item in items:
        path = item.nodeid.split("::", 1)[0]
        group = group_of.get(path, path)
        item.add_marker(pytest.mark.xdist_group(group))
        groups.append(group)

    def weight(index: int) -> int:
        group = groups[index]
        if group in SHARED_ENGINES.values():
            return 0
        return 1 if group.startswith(("tests/e2e/", "tests/integration/")) else 2

    order = sorted(range(len(items)), key=weight)  # stable: collection order within
    items[:] = [items[i] for i in order]


@pytest.fixture(scope="session")
def model_path() -> str:
    from engines.default_model import ensure_default_model

    return str(ensure_default_model())


@pytest.fixture(scope="session")
def cpu_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    return env
