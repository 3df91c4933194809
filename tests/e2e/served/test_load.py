"""A bounded load test on 127.0.0.1: 128 Best-of-4 requests from 16 concurrent clients on
the embedded default. Zero 5xx, every response a valid chat.completion, no engine
request left running afterwards, and resident memory stable between the halves.

Past admission (24 clients against 2 slots and 2 queue places: zero 5xx, every 429 with
Retry-After, nothing left running) runs on the hardening server, in test_hardening.py."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import httpx
import psutil
import pytest

from tests.conftest import mt_bench_prompts
from tests.e2e.conftest import MODEL

pytestmark = pytest.mark.e2e

# Two halves of 64: enough for the memory check below to see a leak of ~6 MB a request.
REQUESTS = 128
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


async def test_128_best_of_4_requests_from_16_clients(served: tuple[str, int]) -> None:
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
    # ~400 MB over the second half's 64 requests still fails it.
    growth = (rss_second - rss_first) / rss_first
    assert growth < 0.08, f"resident memory grew {growth:.1%} between the halves"
