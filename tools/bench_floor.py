"""``alignserve bench --vs-vllm URL``: what alignserve costs on top of the vLLM server it
fronts. One run sends the same requests two ways at every concurrency level:

- ``alignserve``: an alignserve server in this process in remote mode in front of URL (the
  serve flags with ``remote_engine_url=URL``; ``--model`` names the model URL serves and
  the tokenizer; the reward is the flags' default, the generative judge on the same
  upstream), each request a Best-of-N chat completion (``search: {"algorithm": "bon"}``);
- ``raw``: the same chat request straight to URL's ``/v1/chat/completions`` with ``n=N``
  and no search: the generation alone, the floor.

Same prompts, seeds, n, max_tokens and temperature on both sides; each gets one untimed
warm-up request, and the side that goes first alternates from level to level. Before and
after each side the upstream's ``/metrics`` is read, and per request the report gives
prompt tokens (``vllm:prompt_tokens_total``), prefix-cache hit tokens
(``vllm:prefix_cache_hits_total``), computed prompt tokens (prompt minus hits: the
prefill work done) and generated tokens (``vllm:generation_tokens_total``). The alignserve
side's counts include its judge calls: they are what the search costs the upstream.

The upstream's prefix cache is emptied before each side when it offers ``POST
/reset_prefix_cache`` (vLLM started with ``VLLM_SERVER_DEV_MODE=1``); otherwise the second
side of a level can find the first side's prompts cached, which its hit counts show and
bench.json records (``prefix_cache_reset``).

Per level, the ratios alignserve / raw: p50 latency, requests/s and computed prompt tokens
per request. bench.json, bench.md (the printed tables), throughput.png and latency.png go
to ``--out``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import httpx

from engines.remote import RemoteGenerator
from server.runtime import Runtime, load_runtime
from server.settings import Settings
from tools.bench_report import errors_text, num, plot, plot_title, ratio
from tools.bench_sweep import (
    BenchConfig,
    BenchError,
    ClientFor,
    Progress,
    http_clients,
    in_process_server,
    ticker,
)
from tools.evaluation import Prompt
from tools.loadgen import (
    INVALID,
    OK,
    Call,
    Clock,
    LevelStats,
    Sample,
    Workload,
    http_call,
    run_level,
    summarize,
)

SIDES = ("raw", "alignserve")
SERIES = {
    "prompt": "vllm:prompt_tokens_total",
    "prefix_hits": "vllm:prefix_cache_hits_total",
    "generated": "vllm:generation_tokens_total",
}
PLOT_LABELS = {"alignserve": "{} via alignserve", "raw": "vLLM alone (n samples)"}
_SAMPLE_LINE = re.compile(r"^([\w:]+)(?:\{[^}]*\})?\s+(\S+)")


def token_totals(metrics_text: str) -> dict[str, float] | None:
    """The upstream's token counters, each summed over its label sets (engines); None when
    the prompt counter is missing (not a vLLM server, or metrics off)."""
    names = {series: key for key, series in SERIES.items()}
    totals = dict.fromkeys(SERIES, 0.0)
    seen = False
    for line in metrics_text.splitlines():
        match = _SAMPLE_LINE.match(line)
        if match is None or match.group(1) not in names:
            continue
        totals[names[match.group(1)]] += float(match.group(2))
        seen = seen or match.group(1) == SERIES["prompt"]
    return totals if seen else None


def per_request(
    before: Mapping[str, float] | None, after: Mapping[str, float] | None, requests: int
) -> dict[str, float] | None:
    """Token counts per request between two scrapes, with the computed prompt tokens."""
    if before is None or after is None or requests < 1:
        return None
    out = {key: (after[key] - before[key]) / requests for key in SERIES}
    out["computed_prompt"] = out["prompt"] - out["prefix_hits"]
    return out


async def scrape_tokens(client: httpx.AsyncClient, settle_s: float = 0.2) -> dict[str, float]:
    """The upstream's counters once two reads agree: its stats can trail the last
    response by an engine step."""
    last: dict[str, float] | None = None
    for _ in range(10):
        try:
            response = await client.get("/metrics")
        except httpx.HTTPError as exc:
            raise BenchError(f"reading {client.base_url}/metrics failed: {exc!r}") from exc
        totals = token_totals(response.text) if response.status_code == 200 else None
        if totals is None:
            raise BenchError(f"{client.base_url}/metrics has no {SERIES['prompt']}")
        if totals == last:
            break
        last = totals
        await asyncio.sleep(settle_s)
    assert last is not None
    return last


async def reset_prefix_cache(client: httpx.AsyncClient) -> bool:
    """Empty the upstream's prefix cache; False where it does not offer that (dev mode)."""
    try:
        response = await client.post("/reset_prefix_cache")
    except httpx.HTTPError:
        return False
    return response.status_code == 200


def vllm_payload(prompt: Prompt, work: Workload, index: int, model: str) -> dict[str, Any]:
    return {
        "model": model,
        "messages": prompt.conversation,
        "max_tokens": work.max_tokens,
        "temperature": work.temperature,
        "seed": work.seed + index,
        "n": work.n,
    }


def vllm_outcome(status: int, body: Any, n: int) -> tuple[str, int]:
    """(outcome, generated tokens) of one answer of the upstream: n choices and usage."""
    if status != 200:
        return str(status), 0
    if not (
        isinstance(body, dict)
        and body.get("object") == "chat.completion"
        and isinstance(body.get("choices"), list)
        and len(body["choices"]) == n
    ):
        return INVALID, 0
    tokens = (body.get("usage") or {}).get("completion_tokens")
    return OK, tokens if isinstance(tokens, int) else 0


def vllm_call(
    client: httpx.AsyncClient,
    prompts: Sequence[Prompt],
    work: Workload,
    model: str,
    *,
    clock: Clock = time.perf_counter,
) -> Call:
    """Request ``i`` as a plain chat completion of n samples, no search."""

    async def call(index: int) -> Sample:
        payload = vllm_payload(prompts[index % len(prompts)], work, index, model)
        start = clock()
        try:
            response = await client.post("/v1/chat/completions", json=payload)
            body = None
            with contextlib.suppress(ValueError):
                body = response.json()
        except httpx.HTTPError as exc:
            return Sample(index, clock() - start, type(exc).__name__)
        outcome, tokens = vllm_outcome(response.status_code, body, work.n)
        return Sample(index, clock() - start, outcome, tokens)

    return call


@dataclass
class Sides:
    """The two ways to send a request, and the upstream both end up on."""

    calls: Mapping[str, Callable[[httpx.AsyncClient, Workload], Call]]
    clients: Mapping[str, ClientFor]
    upstream: httpx.AsyncClient
    reset: bool = False  # whether the upstream's prefix cache can be emptied

    async def warm_up(self, prompts: Sequence[Prompt], work: Workload) -> None:
        small = replace(work, max_tokens=8)
        for side in SIDES:
            async with self.clients[side](1) as client:
                sample = await self.calls[side](client, small)(0)
            if sample.outcome != OK:
                raise BenchError(f"the {side} warm-up request failed: {sample.outcome}")


async def floor_sweep(
    config: BenchConfig, sides: Sides, *, bar: Progress | None = None
) -> tuple[list[LevelStats], list[dict[str, Any]]]:
    """Every concurrency level on both sides; the level rows and the token counts."""
    work = replace(config.work, algorithm="bon")
    rows, tokens = [], []
    for k, concurrency in enumerate(config.concurrency):
        for side in SIDES if k % 2 == 0 else SIDES[::-1]:
            if sides.reset:
                await reset_prefix_cache(sides.upstream)
            if bar is not None:
                bar.set_description_str(f"bon x{concurrency} {side}")
            before = await scrape_tokens(sides.upstream)
            async with sides.clients[side](concurrency) as client:
                samples, wall = await run_level(
                    sides.calls[side](client, work),
                    config.requests,
                    concurrency,
                    on_done=None if bar is None else ticker(bar),
                )
            after = await scrape_tokens(sides.upstream)
            rows.append(
                summarize(samples, wall, algorithm="bon", concurrency=concurrency, side=side)
            )
            counts = per_request(before, after, len(samples))
            tokens.append({"concurrency": concurrency, "side": side, **(counts or {})})
    return rows, tokens


def compare(
    rows: Sequence[LevelStats], tokens: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """Per level measured on both sides: alignserve / raw."""
    row = {(r.concurrency, r.side): r for r in rows}
    count = {(t["concurrency"], t["side"]): t for t in tokens}
    out = []
    for concurrency in dict.fromkeys(r.concurrency for r in rows):
        a, b = row.get((concurrency, "alignserve")), row.get((concurrency, "raw"))
        if a is None or b is None:
            continue
        ta, tb = count.get((concurrency, "alignserve"), {}), count.get((concurrency, "raw"), {})
        out.append(
            {
                "concurrency": concurrency,
                "latency_p50_ratio": ratio(a.latency_p50, b.latency_p50),
                "latency_p95_ratio": ratio(a.latency_p95, b.latency_p95),
                "requests_per_s_ratio": ratio(a.requests_per_s, b.requests_per_s),
                "computed_prompt_ratio": ratio(
                    ta.get("computed_prompt"), tb.get("computed_prompt")
                ),
            }
        )
    return out


def floor_table(
    rows: Sequence[LevelStats],
    tokens: Sequence[Mapping[str, Any]],
    pairs: Sequence[Mapping[str, Any]],
) -> str:
    count = {(t["concurrency"], t["side"]): t for t in tokens}
    lines = [
        "| clients | side | ok / requests | errors | req/s | p50 s | p95 s "
        "| prompt tok/req | prefix hits/req | computed prompt/req | generated tok/req |",
        "|--:|---|--:|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in rows:
        t = count.get((r.concurrency, r.side), {})
        lines.append(
            f"| {r.concurrency} | {r.side} | {r.ok} / {r.requests} | {errors_text(r.errors)} "
            f"| {r.requests_per_s:.2f} | {num(r.latency_p50)} | {num(r.latency_p95)} "
            f"| {num(t.get('prompt'), 1)} | {num(t.get('prefix_hits'), 1)} "
            f"| {num(t.get('computed_prompt'), 1)} | {num(t.get('generated'), 1)} |"
        )
    lines += [
        "",
        "| clients | p50 alignserve / raw | p95 alignserve / raw | req/s alignserve / raw "
        "| computed prompt alignserve / raw |",
        "|--:|--:|--:|--:|--:|",
    ]
    for p in pairs:
        lines.append(
            f"| {p['concurrency']} | {num(p['latency_p50_ratio'], 3)} "
            f"| {num(p['latency_p95_ratio'], 3)} | {num(p['requests_per_s_ratio'], 3)} "
            f"| {num(p['computed_prompt_ratio'], 3)} |"
        )
    return "\n".join(lines) + "\n"


def _finite(value: Any) -> Any:
    """JSON has no NaN or infinity: such a ratio is written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_floor_report(
    out_dir: Path,
    record: Mapping[str, Any],
    rows: Sequence[LevelStats],
    tokens: Sequence[Mapping[str, Any]],
) -> str:
    """bench.json, bench.md and both plots; returns the markdown it wrote."""
    out_dir.mkdir(parents=True, exist_ok=True)
    pairs = [{k: _finite(v) for k, v in p.items()} for p in compare(rows, tokens)]
    document = {
        **record,
        "levels": [asdict(r) for r in rows if r.side == "alignserve"],
        "raw": [asdict(r) for r in rows if r.side == "raw"],
        "tokens": list(tokens),
        "ratios": pairs,
    }
    (out_dir / "bench.json").write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    table = floor_table(rows, tokens, pairs)
    (out_dir / "bench.md").write_text(table, encoding="utf-8")
    plot(rows, out_dir, plot_title(record), labels=PLOT_LABELS)
    return table


async def run_vs_vllm(
    settings: Settings,
    config: BenchConfig,
    prompts: Sequence[Prompt],
    url: str,
    *,
    timeout_s: float = 600.0,
    bar: Progress | None = None,
    loader: Callable[[Settings], Any] = load_runtime,
) -> tuple[list[LevelStats], list[dict[str, Any]], dict[str, Any]]:
    """Both sides over ``url``; the level rows, the token counts and the record."""
    url = url.rstrip("/")
    settings = settings.model_copy(update={"remote_engine_url": url})
    runtime: Runtime = await loader(settings)
    generator = runtime.generator
    # The remote engine's model name, once it knows it (None: it asks upstream on first use).
    served = generator.model if isinstance(generator, RemoteGenerator) else None
    model = str(served or settings.model)
    api_key = settings.api_key[0] if settings.api_key else None
    headers = {"Authorization": f"Bearer {settings.remote_api_key}"}
    upstream = httpx.AsyncClient(
        base_url=url, headers=headers if settings.remote_api_key else {}, timeout=30.0
    )
    try:
        async with in_process_server(settings, runtime) as local:
            sides = Sides(
                calls={
                    "alignserve": lambda client, work: http_call(client, prompts, work),
                    "raw": lambda client, work: vllm_call(client, prompts, work, model),
                },
                clients={
                    "alignserve": http_clients(local, api_key, timeout_s),
                    "raw": http_clients(url, settings.remote_api_key, timeout_s),
                },
                upstream=upstream,
            )
            await sides.warm_up(prompts, replace(config.work, algorithm="bon"))
            sides.reset = await reset_prefix_cache(upstream)
            rows, tokens = await floor_sweep(config, sides, bar=bar)
    finally:
        await upstream.aclose()
        await runtime.close()
    record = {
        "mode": "vs-vllm",
        "url": url,
        "model": model,
        "prefix_cache_reset": sides.reset,
        "server": settings.model_dump(mode="json", exclude={"remote_api_key", "api_key"}),
    }
    return rows, tokens, record
