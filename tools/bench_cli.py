"""The ``alignserve bench`` command: a load sweep against an alignserve server.

For every algorithm and concurrency level, ``--requests`` chat requests over ``--prompts``
(default: the project's own verifiable prompts; see ``tools/loadgen.py``), with a
progress bar; prints requests/s, generated tokens/s, p50/p95/p99 latency, errors by
status and the reward micro-batcher's mean batch size (from the server's /metrics) per
level, and writes bench.json, throughput.png and latency.png to ``--out``.

``--url`` benches a running server (default: http://HOST:PORT of the serve flags; its
prefix cache is not emptied between levels, so later levels may find the prompts cached).
``--vs-engine`` instead loads the engine and reward model in this process (the serve
flags), serves them over HTTP on a free local port, and at every level also runs the same
Best-of-N work directly on the engine, and its generation alone (``floor``: the same
generate call, no scoring): same prompts, seeds and concurrency, each side starting from
an empty prefix cache, rotating which side goes first. It prints the ratios HTTP / raw of
generated tokens/s, and HTTP / floor of tokens/s and p50 latency. The raw side scores
through its own micro-batcher over the same reward model, as the server does (the output
says which it used).

``--vs-vllm URL`` puts alignserve in front of a running vLLM OpenAI server (remote mode,
``--model`` naming the model URL serves; the reward is the serve flags' default, the
judge on the same upstream) and at every level (default 1,4) sends the same Best-of-N
requests through alignserve and, as plain ``n``-sample chat completions, straight to URL:
the floor. It prints both sides' p50/p95 latency and requests/s, the upstream's prompt,
prefix-cache-hit, computed prompt and generated tokens per request (from its /metrics),
and the ratios alignserve / raw (see ``tools/bench_floor.py``); bench.md holds the tables.

``--ttft`` instead measures time to the first content token of streamed searches with
and without committed-prefix streaming (see ``tools/bench_ttft.py``), against ``--url``
or, without it, an in-process server on the serve flags' engine.

    alignserve bench --url http://127.0.0.1:8000 --concurrency 1,4,16 --n 4
    alignserve bench --vs-engine --concurrency 1,4,16 --n 4 --max-tokens 32 --requests 48
    alignserve bench --vs-vllm http://127.0.0.1:18100 --model Qwen/Qwen2.5-0.5B-Instruct \
        --concurrency 1,4 --n 4 --max-tokens 32 --requests 48
    alignserve bench --ttft --algorithms spec_rejection --n 2 --max-tokens 64 --requests 10
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from search.errors import InvalidRequest
from server.logs import setup_logging
from server.runtime import load_runtime
from server.settings import Settings
from tools import bench_floor, bench_ttft
from tools.bench_report import markdown_table, ratios, write_report
from tools.bench_sweep import (
    BenchConfig,
    BenchError,
    RawSide,
    http_clients,
    in_process_server,
    sweep,
    warm_up,
)
from tools.eval_cli import _ints, _names
from tools.evaluation import Prompt, load_prompts
from tools.loadgen import LevelStats, Workload

DEFAULT_OUT = Path(tempfile.gettempdir()) / "alignserve-bench"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("load")
    group.add_argument("--url", default=None, help="server to bench (default http://HOST:PORT)")
    group.add_argument(
        "--vs-engine",
        action="store_true",
        help="serve the engine from this process and compare with driving it directly (bon)",
    )
    group.add_argument(
        "--vs-vllm",
        default=None,
        metavar="URL",
        help="alignserve (remote mode, bon) in front of this vLLM server against it alone",
    )
    group.add_argument(
        "--concurrency", type=_ints, default=None, help="default 1,4,16 (--vs-vllm: 1,4)"
    )
    group.add_argument("--algorithms", type=_names, default=("bon",), help="default bon")
    group.add_argument("--n", type=int, default=4, help="candidates per request (default 4)")
    group.add_argument("--max-tokens", type=int, default=32)
    group.add_argument("--temperature", type=float, default=1.0)
    group.add_argument("--seed", type=int, default=0, help="request i has seed SEED + i")
    group.add_argument("--requests", type=int, default=48, help="requests per level")
    group.add_argument("--prompts", type=Path, default=None, help="JSONL (see eval --prompts)")
    group.add_argument("--timeout", type=float, default=600.0, help="seconds per request")
    group.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"default {DEFAULT_OUT}")
    group.add_argument(
        "--ttft",
        action="store_true",
        help="time to first token, committed-prefix streaming vs buffered (one request at a time)",
    )


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    work = Workload(
        n=args.n, max_tokens=args.max_tokens, temperature=args.temperature, seed=args.seed
    )
    levels = args.concurrency or ((1, 4) if args.vs_vllm else (1, 4, 16))
    return BenchConfig(tuple(args.algorithms), tuple(levels), args.requests, work)


async def run_bench(
    settings: Settings,
    config: BenchConfig,
    prompts: list[Prompt],
    *,
    url: str | None,
    vs_engine: bool,
    floor: bool = False,
    timeout_s: float = 600.0,
    loader: Callable[[Settings], Any] = load_runtime,
) -> tuple[list[LevelStats], dict[str, Any]]:
    """The sweep with a progress bar; returns the rows and what the report records. With
    ``vs_engine`` and ``floor`` the engine's generation alone is a third side."""
    from tqdm import tqdm

    api_key = settings.api_key[0] if settings.api_key else None
    record: dict[str, Any] = {"mode": "vs-engine" if vs_engine else "url"}
    sides = (3 if floor else 2) if vs_engine else 1
    total = len(config.levels()) * config.requests * sides
    bar = tqdm(total=total, unit="req", desc="bench", file=sys.stderr)
    try:
        if not vs_engine:
            record["url"] = url = url or f"http://{settings.host}:{settings.port}"
            client_for = http_clients(url, api_key, timeout_s)
            await warm_up(client_for, prompts, config)
            return await sweep(config, prompts, client_for, bar=bar), record
        runtime = await loader(settings)
        raw = RawSide.of(runtime, settings)
        try:
            async with in_process_server(settings, runtime) as url:
                client_for = http_clients(url, api_key, timeout_s)
                await warm_up(client_for, prompts, config, raw)
                rows = await sweep(config, prompts, client_for, raw=raw, floor=floor, bar=bar)
        finally:
            await raw.aclose()
            await runtime.close()
        record.update(model=runtime.model_name, raw_reward=raw.batching)
        record["server"] = settings.model_dump(mode="json", exclude={"remote_api_key", "api_key"})
        return rows, record
    finally:
        bar.close()


async def run_ttft(
    settings: Settings,
    config: BenchConfig,
    prompts: list[Prompt],
    url: str | None,
    timeout_s: float,
) -> list[dict[str, Any]]:
    api_key = settings.api_key[0] if settings.api_key else None
    work = dataclasses.replace(config.work, algorithm=config.algorithms[0])
    if url:
        async with http_clients(url, api_key, timeout_s)(1) as client:
            return await bench_ttft.measure(client, prompts, work, config.requests)
    runtime = await load_runtime(settings)
    try:
        async with (
            in_process_server(settings, runtime) as local,
            http_clients(local, api_key, timeout_s)(1) as client,
        ):
            return await bench_ttft.measure(client, prompts, work, config.requests)
    finally:
        await runtime.close()


def ttft_main(settings: Settings, args: argparse.Namespace, config: BenchConfig) -> int:
    prompts = load_prompts(args.prompts)
    setup_logging(settings.log_level)
    try:
        rows = asyncio.run(run_ttft(settings, config, prompts, args.url, args.timeout))
    except (BenchError, httpx.HTTPError) as exc:
        print(f"alignserve bench: error: {exc}", file=sys.stderr)
        return 1
    summary = bench_ttft.summarize(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    record = {"work": dataclasses.asdict(config.work), "summary": summary, "rows": rows}
    (args.out / "ttft.json").write_text(json.dumps(record, indent=2) + "\n")
    print(bench_ttft.table(summary), end="")
    print(f"wrote {args.out / 'ttft.json'}", file=sys.stderr)
    return 0


async def run_vs_vllm(
    settings: Settings, config: BenchConfig, prompts: list[Prompt], url: str, timeout_s: float
) -> tuple[list[LevelStats], list[dict[str, Any]], dict[str, Any]]:
    from tqdm import tqdm

    total = len(config.concurrency) * config.requests * 2
    bar = tqdm(total=total, unit="req", desc="bench", file=sys.stderr)
    try:
        return await bench_floor.run_vs_vllm(
            settings, config, prompts, url, timeout_s=timeout_s, bar=bar
        )
    finally:
        bar.close()


def check_modes(settings: Settings, args: argparse.Namespace, config: BenchConfig) -> None:
    """The flag combinations no mode can honour, as ValueError."""
    if args.vs_engine and args.vs_vllm:
        raise ValueError("choose one of --vs-engine and --vs-vllm")
    mode = "--vs-engine" if args.vs_engine else "--vs-vllm" if args.vs_vllm else None
    if mode and args.url:
        raise ValueError(f"{mode} serves its own alignserve: leave out --url")
    if mode and config.algorithms != ("bon",):
        raise ValueError(f"{mode} compares Best-of-N only: use --algorithms bon")
    upstream = settings.remote_engine_url
    if args.vs_vllm and upstream and upstream.rstrip("/") != args.vs_vllm.rstrip("/"):
        raise ValueError("--vs-vllm URL is the remote engine: leave out --remote-engine-url")


def add_run_info(record: dict[str, Any], args: argparse.Namespace, config: BenchConfig) -> None:
    """The bench's settings and end time, in the JSON record of every mode."""
    source = str(args.prompts) if args.prompts else "verifiable prompts (tools/data)"
    record.update(
        bench={**dataclasses.asdict(config), "prompts": source, "timeout_s": args.timeout},
        finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )


def vs_vllm_main(
    settings: Settings, args: argparse.Namespace, config: BenchConfig, prompts: list[Prompt]
) -> int:
    try:
        rows, tokens, record = asyncio.run(
            run_vs_vllm(settings, config, prompts, args.vs_vllm, args.timeout)
        )
    except (BenchError, httpx.HTTPError) as exc:
        print(f"alignserve bench: error: {exc}", file=sys.stderr)
        return 1
    add_run_info(record, args, config)
    print(bench_floor.write_floor_report(args.out, record, rows, tokens), end="")
    if not record["prefix_cache_reset"]:
        print("the upstream's prefix cache was not emptied between sides (no dev mode)")
    print(f"wrote {args.out / 'bench.json'}, bench.md and the plots", file=sys.stderr)
    return 0


def main(settings: Settings, args: argparse.Namespace) -> int:
    if args.ttft:
        return ttft_main(settings, args, config_from_args(args))
    try:
        config = config_from_args(args)
        prompts = load_prompts(args.prompts)
        check_modes(settings, args, config)
    except (ValueError, OSError, InvalidRequest) as exc:
        print(f"alignserve bench: error: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings.log_level)
    if args.vs_vllm:
        return vs_vllm_main(settings, args, config, prompts)
    try:
        rows, record = asyncio.run(
            run_bench(
                settings,
                config,
                prompts,
                url=args.url,
                vs_engine=args.vs_engine,
                floor=args.vs_engine,
                timeout_s=args.timeout,
            )
        )
    except (BenchError, httpx.HTTPError) as exc:
        print(f"alignserve bench: error: {exc}", file=sys.stderr)
        return 1
    add_run_info(record, args, config)
    write_report(args.out, record, rows)
    print(markdown_table(rows, ratios(rows)), end="")
    if "raw_reward" in record:
        print(f"raw engine side scored through {record['raw_reward']}")
    print(f"wrote {args.out / 'bench.json'}, throughput.png and latency.png", file=sys.stderr)
    return 0
