"""``alignserve bench --ttft``: time to the first content token of a streamed search, with
committed-prefix streaming (``search.stream_committed: true``, the default) against the
buffered stream (``false``: the whole answer after the search), in one run.

For each of ``--requests`` prompts (``--prompts``) the same seeded request (``--algorithms``'s
first, ``--n``, ``--max-tokens``) is streamed once each way, one request at a time,
alternating which way goes first so the prefix cache favours neither. Prints the median
time to the first content token and to the end of the stream for both, and the ratios;
writes ``ttft.json``. Both ways generate the same answer (the final text is compared).
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Sequence
from typing import Any

import httpx

from tools.bench_sweep import BenchError
from tools.evaluation import Prompt
from tools.loadgen import Workload, chat_payload


async def stream_once(client: httpx.AsyncClient, payload: dict[str, Any]) -> dict[str, Any]:
    """Seconds to the first content token and to the stream's end, and the text."""
    start = time.perf_counter()
    first: float | None = None
    text: list[str] = []
    async with client.stream("POST", "/v1/chat/completions", json=payload) as response:
        if response.status_code != 200:
            raise BenchError(f"HTTP {response.status_code}: {(await response.aread())[:200]!r}")
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line.removeprefix("data: "))
            if "error" in event:
                raise BenchError(f"stream error: {event['error']}")
            for choice in event.get("choices", []):
                content = choice.get("delta", {}).get("content")
                if content:
                    first = first if first is not None else time.perf_counter() - start
                    text.append(content)
    total = time.perf_counter() - start
    return {"ttft_s": total if first is None else first, "total_s": total, "text": "".join(text)}


async def measure(
    client: httpx.AsyncClient, prompts: Sequence[Prompt], work: Workload, requests: int
) -> list[dict[str, Any]]:
    rows = []
    for i in range(requests):
        for committed in (True, False) if i % 2 == 0 else (False, True):
            payload = {**chat_payload(prompts[i % len(prompts)], work, i), "stream": True}
            payload["search"] = {**payload["search"], "stream_committed": committed}
            rows.append({"index": i, "committed": committed, **await stream_once(client, payload)})
    return rows


def summarize(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    def median(key: str, committed: bool) -> float:
        return statistics.median(r[key] for r in rows if r["committed"] is committed)

    texts: dict[int, set[str]] = {}
    for r in rows:
        texts.setdefault(r["index"], set()).add(r["text"])
    summary = {
        "requests": len(rows) // 2,
        "streamed_ttft_p50": median("ttft_s", True),
        "buffered_ttft_p50": median("ttft_s", False),
        "streamed_total_p50": median("total_s", True),
        "buffered_total_p50": median("total_s", False),
        "same_answers": sum(len(t) == 1 for t in texts.values()),
    }
    summary["ttft_ratio"] = summary["streamed_ttft_p50"] / summary["buffered_ttft_p50"]
    summary["total_ratio"] = summary["streamed_total_p50"] / summary["buffered_total_p50"]
    return summary


def table(summary: dict[str, Any]) -> str:
    s = summary
    return (
        "| stream | TTFT p50 s | total p50 s |\n|---|--:|--:|\n"
        f"| committed prefix | {s['streamed_ttft_p50']:.2f} | {s['streamed_total_p50']:.2f} |\n"
        f"| buffered | {s['buffered_ttft_p50']:.2f} | {s['buffered_total_p50']:.2f} |\n"
        f"| ratio | {s['ttft_ratio']:.3f} | {s['total_ratio']:.3f} |\n"
        f"same answer both ways: {s['same_answers']}/{s['requests']} prompts\n"
    )
