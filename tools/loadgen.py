"""The load loop of ``alignserve bench``, and what it measures.

A level is ``requests`` requests issued by ``concurrency`` asyncio workers that pull the
next request index from one shared counter, so at most ``concurrency`` are in flight and
each starts the moment a worker is free. Request ``i`` asks about prompt ``i mod len``
with seed ``seed + i``: every level (and the raw engine side of ``--vs-engine``) does the
same work. :func:`http_call` sends request ``i`` as a chat completion; it is an error when
the status is not 200, the body is not a ``chat.completion`` with one choice (``invalid
body``), or the transport fails (the exception's name). Any other ``Call`` can be run too
(``tools/bench_sweep.py`` drives the engine directly).

:func:`summarize` turns a level's samples into successful requests/s, generated tokens/s
(tokens of the successful requests over the level's wall time), p50/p95/p99 latency of the
successful requests and error counts by outcome. :func:`batch_counts` reads the reward
batch-size histogram off ``/metrics``: a level's mean batch size is the delta of its sum
over the delta of its count.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from tools.evaluation import Prompt

OK = "ok"
INVALID = "invalid body"
BATCH_SERIES = "alignserve_reward_batch_size"


@dataclass(frozen=True)
class Workload:
    """What every request of a level asks for."""

    algorithm: str = "bon"
    n: int = 4
    max_tokens: int = 32
    temperature: float = 1.0
    seed: int = 0


@dataclass(frozen=True)
class Sample:
    """One finished request: ``outcome`` is ``ok`` or what went wrong (an HTTP status, a
    body that is not a chat completion, an exception name)."""

    index: int
    latency_s: float
    outcome: str
    generated_tokens: int = 0


@dataclass(frozen=True)
class LevelStats:
    algorithm: str
    concurrency: int
    side: str  # "http" or "raw"
    requests: int
    ok: int
    errors: dict[str, int]
    wall_s: float
    requests_per_s: float
    generated_tokens: int
    tokens_per_s: float
    latency_p50: float | None
    latency_p95: float | None
    latency_p99: float | None
    latency_mean: float | None
    # Reward micro-batcher over the level: batches sent and their mean size (None: unknown).
    reward_batches: int | None = None
    reward_batch_mean: float | None = None


Call = Callable[[int], Awaitable[Sample]]
Clock = Callable[[], float]


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0-100), linear between the closest ranks (numpy's default)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


async def run_level(
    call: Call,
    requests: int,
    concurrency: int,
    *,
    on_done: Callable[[Sample], None] | None = None,
    clock: Clock = time.perf_counter,
) -> tuple[list[Sample], float]:
    """All ``requests`` calls through ``concurrency`` workers; the samples in index order
    and the wall time from the first start to the last finish."""
    if requests < 1 or concurrency < 1:
        raise ValueError("requests and concurrency must be positive")
    indices = iter(range(requests))
    samples: list[Sample] = []

    async def worker() -> None:
        for index in indices:  # one shared iterator: each index goes to exactly one worker
            sample = await call(index)
            samples.append(sample)
            if on_done is not None:
                on_done(sample)

    start = clock()
    await asyncio.gather(*(worker() for _ in range(min(concurrency, requests))))
    wall = clock() - start
    return sorted(samples, key=lambda s: s.index), wall


def chat_payload(prompt: Prompt, work: Workload, index: int) -> dict[str, Any]:
    return {
        "messages": prompt.conversation,
        "max_tokens": work.max_tokens,
        "temperature": work.temperature,
        "seed": work.seed + index,
        "search": {"algorithm": work.algorithm, "n": work.n},
    }


def outcome_of(status: int, body: Any) -> tuple[str, int]:
    """(outcome, generated tokens) of one HTTP answer."""
    if status != 200:
        return str(status), 0
    valid = (
        isinstance(body, dict)
        and body.get("object") == "chat.completion"
        and isinstance(body.get("choices"), list)
        and len(body["choices"]) == 1
        and isinstance(body["choices"][0].get("message", {}).get("content"), str)
    )
    if not valid:
        return INVALID, 0
    tokens = (body.get("search") or {}).get("generated_tokens")
    return OK, tokens if isinstance(tokens, int) else 0


def http_call(
    client: httpx.AsyncClient,
    prompts: Sequence[Prompt],
    work: Workload,
    *,
    path: str = "/v1/chat/completions",
    clock: Clock = time.perf_counter,
) -> Call:
    async def call(index: int) -> Sample:
        payload = chat_payload(prompts[index % len(prompts)], work, index)
        start = clock()
        try:
            response = await client.post(path, json=payload)
            status, body = response.status_code, None
            with contextlib.suppress(ValueError):  # not JSON: counted as an invalid body
                body = response.json()
        except httpx.HTTPError as exc:
            return Sample(index, clock() - start, type(exc).__name__)
        outcome, tokens = outcome_of(status, body)
        return Sample(index, clock() - start, outcome, tokens)

    return call


_SAMPLE_LINE = re.compile(r"^(\w+)(?:\{[^}]*\})?\s+(\S+)")


def batch_counts(metrics_text: str, series: str = BATCH_SERIES) -> tuple[float, float]:
    """(sum, count) of a Prometheus histogram summed over all its label sets."""
    total = count = 0.0
    for line in metrics_text.splitlines():
        match = _SAMPLE_LINE.match(line)
        if match is None:
            continue
        name, value = match.groups()
        if name == f"{series}_sum":
            total += float(value)
        elif name == f"{series}_count":
            count += float(value)
    return total, count


def batch_delta(
    before: tuple[float, float] | None, after: tuple[float, float] | None
) -> tuple[int | None, float | None]:
    """(batches, mean batch size) between two scrapes; None where unknown or no batch."""
    if before is None or after is None:
        return None, None
    batches = after[1] - before[1]
    if batches <= 0:
        return 0, None
    return int(batches), (after[0] - before[0]) / batches


async def scrape_batches(client: httpx.AsyncClient) -> tuple[float, float] | None:
    """The reward batch-size histogram of a server; None when /metrics cannot be read."""
    try:
        response = await client.get("/metrics")
    except httpx.HTTPError:
        return None
    return batch_counts(response.text) if response.status_code == 200 else None


def summarize(
    samples: Sequence[Sample],
    wall_s: float,
    *,
    algorithm: str,
    concurrency: int,
    side: str,
    batches: tuple[int | None, float | None] = (None, None),
) -> LevelStats:
    ok = [s for s in samples if s.outcome == OK]
    latencies = [s.latency_s for s in ok]
    tokens = sum(s.generated_tokens for s in ok)
    wall = max(wall_s, 1e-9)
    return LevelStats(
        algorithm=algorithm,
        concurrency=concurrency,
        side=side,
        requests=len(samples),
        ok=len(ok),
        errors=dict(sorted(Counter(s.outcome for s in samples if s.outcome != OK).items())),
        wall_s=wall_s,
        requests_per_s=len(ok) / wall,
        generated_tokens=tokens,
        tokens_per_s=tokens / wall,
        latency_p50=percentile(latencies, 50),
        latency_p95=percentile(latencies, 95),
        latency_p99=percentile(latencies, 99),
        latency_mean=sum(latencies) / len(latencies) if latencies else None,
        reward_batches=batches[0],
        reward_batch_mean=batches[1],
    )
