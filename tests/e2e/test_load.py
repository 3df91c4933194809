"""A bounded load test on 127.0.0.1: 200 Best-of-4 requests from 16 concurrent clients on
the embedded default. Zero 5xx, every response a valid chat.completion, no engine
request left running afterwards, and resident memory stable between the halves.

Then past admission: 24 clients against a server that runs 4 searches and queues 4, so
the queue fills and the 429 path runs under load: still zero 5xx, every 429 with
Retry-After, and nothing left running or counted in flight afterwards."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import psutil
import pytest

from tests.conftest import free_port, mt_bench_prompts, running_server
from tests.e2e.conftest import MODEL

pytestmark = pytest.mark.e2e

REQUESTS = 200
CLIENTS = 16


def tree_rss(pid: int) -> int:
    """Resident bytes of a process and all its descendants (the engine runs in children)."""
    root = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])


def engine_requests_running(metrics: str) -> float:
    values = re.findall(r"^vllm:num_requests_running\{[^}]*\} (\S+)$", metrics, re.M)
    assert values, "the engine's vllm:num_requests_running gauge is missing"
    return sum(float(v) for v in values)


async def run_half(client: httpx.AsyncClient, start: int, count: int) -> list[httpx.Response]:
    prompts = mt_bench_prompts()
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(start, start + count):
        queue.put_nowait(i)
    replies: list[httpx.Response] = []

    async def worker() -> None:
        while not queue.empty():
            i = queue.get_nowait()
            body = {
                "model": MODEL,
                "messages": [{"role": "user", "content": prompts[i % len(prompts)]}],
                "max_tokens": 16,
                "seed": i,
                "search": {"algorithm": "bon", "n": 4},
            }
            replies.append(await client.post("/v1/chat/completions", json=body))

    await asyncio.gather(*(worker() for _ in range(CLIENTS)))
    return replies


def valid_completion(reply: httpx.Response, n: int = 4) -> bool:
    data: dict[str, Any] = reply.json()
    choice = data["choices"][0]
    return (
        data["object"] == "chat.completion"
        and isinstance(choice["message"]["content"], str)
        and choice["finish_reason"] in ("stop", "length")
        and 0 < data["usage"]["completion_tokens"] <= 16
        and data["search"]["candidates_generated"] == n
    )


async def test_200_best_of_4_requests_from_16_clients(served: tuple[str, int]) -> None:
    url, pid = served
    limits = httpx.Limits(max_connections=CLIENTS)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as client:
        first = await run_half(client, 0, REQUESTS // 2)
        rss_first = tree_rss(pid)
        second = await run_half(client, REQUESTS // 2, REQUESTS // 2)
        rss_second = tree_rss(pid)
        metrics = (await client.get("/metrics")).text
    replies = first + second
    statuses = [r.status_code for r in replies]
    assert len(replies) == REQUESTS
    assert statuses.count(200) == REQUESTS, sorted(set(statuses))
    assert all(valid_completion(r) for r in replies)
    assert engine_requests_running(metrics) == 0
    # Caches warm up in the first half; the second may not keep growing. Measured on this
    # 2-core machine since rendering moved to worker threads (their malloc arenas): 4.0%
    # and 5.2% of the ~4.8 GB tree (the engine worker holds 3.4 GB), so 8%: a leak of
    # ~400 MB over 100 requests still fails it.
    growth = (rss_second - rss_first) / rss_first
    assert growth < 0.08, f"resident memory grew {growth:.1%} between the halves"


# -- past admission ----------------------------------------------------------------------------
OVER_CLIENTS = 24
OVER_PER_CLIENT = 3
SLOTS, QUEUE = 4, 4


@pytest.fixture(scope="module")
def small_admission_server(cpu_env: dict[str, str], model_path: str) -> Iterator[str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [
        ".venv/bin/alignserve",
        "serve",
        "--port",
        str(port),
        "--max-concurrent-searches",
        str(SLOTS),
        "--max-queued-searches",
        str(QUEUE),
        "--log-level",
        "warning",
    ]
    with running_server(cmd, cpu_env, url, "/ready", timeout_s=400):
        yield url


def gauge(metrics: str, name: str) -> float:
    values = re.findall(rf"^{name}(?:\{{[^}}]*\}})? (\S+)$", metrics, re.M)
    assert values, f"{name} is missing"
    return sum(float(v) for v in values)


async def test_24_clients_past_admission_get_200_or_429_never_5xx(
    small_admission_server: str,
) -> None:
    prompts = mt_bench_prompts()
    limits = httpx.Limits(max_connections=OVER_CLIENTS)
    replies: list[httpx.Response] = []
    start = time.perf_counter()
    async with httpx.AsyncClient(
        base_url=small_admission_server, timeout=300, limits=limits
    ) as client:

        async def worker(w: int) -> None:
            for k in range(OVER_PER_CLIENT):
                i = w * OVER_PER_CLIENT + k
                body = {
                    "model": MODEL,
                    "messages": [{"role": "user", "content": prompts[i % len(prompts)]}],
                    "max_tokens": 16,
                    "seed": i,
                    "search": {"algorithm": "bon", "n": 2},
                }
                replies.append(await client.post("/v1/chat/completions", json=body))

        await asyncio.gather(*(worker(w) for w in range(OVER_CLIENTS)))
        elapsed = time.perf_counter() - start
        # The engine's gauges trail the last answer by a stats interval.
        deadline = time.time() + 15
        while True:
            metrics = (await client.get("/metrics")).text
            idle = engine_requests_running(metrics) == 0
            if idle or time.time() > deadline:
                break
            await asyncio.sleep(0.5)
    statuses = [r.status_code for r in replies]
    print(
        f"{len(replies)} requests in {elapsed:.1f} s: {statuses.count(200)} x 200, "
        f"{statuses.count(429)} x 429"
    )
    assert len(replies) == OVER_CLIENTS * OVER_PER_CLIENT
    assert set(statuses) <= {200, 429}, sorted(set(statuses))
    # 24 clients against 4 slots and 4 queue places: the queue filled.
    assert statuses.count(429) > 0 and statuses.count(200) >= SLOTS + QUEUE, statuses
    for reply in replies:
        if reply.status_code == 429:
            assert int(reply.headers["Retry-After"]) >= 1, reply.headers
            assert reply.json()["error"]["code"] == 429
        else:
            assert valid_completion(reply, n=2), reply.text[:300]
    assert engine_requests_running(metrics) == 0
    assert gauge(metrics, "alignserve_searches_in_flight") == 0
    assert gauge(metrics, "alignserve_queue_depth") == 0
