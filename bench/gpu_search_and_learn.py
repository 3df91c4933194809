"""search-and-learn's headline comparison, beam search against Best-of-N on MATH-500,
reproduced through alignserve's HTTP API with the official openai client (GPU; see
bench/GPU_RECIPE.md for the three servers it talks to).

Per problem and budget N, one chat request per method, answered by alignserve in remote
mode in front of a vLLM server with Llama-3.2-1B-Instruct, steps scored by a PRM on a vLLM
pooling server (``--prm prm-remote:URL``). The answer is checked against MATH-500's gold
answer with rewards.math_truth (math-verify). Prints accuracy (± s.e.), mean generated
tokens and wall seconds per (method, N), and writes every answer to ``--out``.

Methods (the ``search`` object each request sends; ``--option METHOD.KEY=VALUE`` adds or
overrides a field):

- ``best_of_n``: N complete solutions, the one the PRM scores highest (search-and-learn's
  Best-of-N with ``agg_strategy: last``). alignserve's ``bon`` ranks by an outcome reward
  (``--reward``), never by a PRM, so this is ``beam_search`` with ``max_steps`` 1 and
  ``beam_width`` N: one round that samples N solutions to their end and scores their last
  (and only) step with the PRM, then keeps the best. The PRM thus sees each solution as one
  step, where search-and-learn splits it at "\\n\\n" and reads the last step's score.
- ``beam_search``: ``beam_width`` 4, up to 40 rounds, steps ended by "\\n\\n" and capped
  only by max_tokens (search-and-learn's recipe; its ``filter_duplicates`` default,
  false, is alignserve's opposite, so it is set false here).
- ``bon_reward``: alignserve's own ``bon`` with the server's outcome reward (not in the
  default comparison: it needs an outcome reward model behind ``--reward``).

    python bench/gpu_search_and_learn.py --base-url http://127.0.0.1:8000 \\
        --n 4,16 --methods best_of_n,beam_search --limit 500 --out results/sal

Import-safe: openai and datasets are imported only when it runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

POLICY = "meta-llama/Llama-3.2-1B-Instruct"
DATASET = "HuggingFaceH4/MATH-500"
# search-and-learn's system prompt (src/sal/config.py, Apache-2.0): a like-for-like run needs
# its step format ("## Step k", steps apart by a blank line) and its closing \boxed{} line.
SYSTEM_PROMPT = (
    "Solve the following math problem efficiently and clearly:\n\n"
    "- For simple problems (2 steps or fewer):\n"
    "Provide a concise solution with minimal explanation.\n\n"
    "- For complex problems (3 steps or more):\n"
    "Use this step-by-step format:\n\n"
    "## Step 1: [Concise description]\n[Brief explanation and calculations]\n\n"
    "## Step 2: [Concise description]\n[Brief explanation and calculations]\n\n"
    "...\n\n"
    "Regardless of the approach, always conclude with:\n\n"
    "Therefore, the final answer is: $\\boxed{answer}$. I hope it is correct.\n\n"
    "Where [answer] is just the final number or expression that solves the problem."
)
# The published accuracies to print beside ours, by (method, N), as fractions. Empty on
# purpose: the blog post ("Scaling test-time compute with open models", HuggingFaceH4,
# Dec 2024) shows Llama-3.2-1B-Instruct's MATH-500 accuracy only as plots, and neither
# search-and-learn's README nor its recipes README states the numbers. Fill this from
# numbers you can cite, never from reading a plot by eye.
PUBLISHED: dict[tuple[str, int], float] = {}
PUBLISHED_SOURCE = (
    "https://huggingface.co/spaces/HuggingFaceH4/blogpost-scaling-test-time-compute "
    "(figures only: no table of numbers)"
)


def best_of_n(n: int, max_tokens: int) -> dict[str, Any]:
    return {"algorithm": "beam_search", "n": n, "beam_width": n, "max_steps": 1}


def beam_search(n: int, max_tokens: int) -> dict[str, Any]:
    return {
        "algorithm": "beam_search",
        "n": n,
        "beam_width": min(4, n),
        "max_steps": 40,
        "step_delimiter": "\n\n",
        "max_step_tokens": max_tokens,
        "filter_duplicates": False,
        "aggregation": "last",
    }


def bon_reward(n: int, max_tokens: int) -> dict[str, Any]:
    return {"algorithm": "bon", "n": n}


METHODS: dict[str, Callable[[int, int], dict[str, Any]]] = {
    "best_of_n": best_of_n,
    "beam_search": beam_search,
    "bon_reward": bon_reward,
}


@dataclass(frozen=True)
class Problem:
    id: str
    problem: str
    answer: str


@dataclass(frozen=True)
class Result:
    method: str
    n: int
    problem_id: str
    correct: bool
    generated_tokens: int
    wall_s: float
    answer: str
    error: str | None = None


def _names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _ints(text: str) -> list[int]:
    try:
        return [int(part) for part in _names(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"want comma-separated integers, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="beam search vs Best-of-N on MATH-500 through alignserve (GPU recipe)"
    )
    parser.add_argument("--base-url", default="http://127.0.0.1:8000", help="alignserve")
    parser.add_argument("--api-key", default="none", help="alignserve's --api-key, if any")
    parser.add_argument("--model", default=POLICY, help="the model name alignserve serves")
    parser.add_argument("--dataset", default=DATASET, help="a Hugging Face dataset id")
    parser.add_argument("--split", default="test")
    parser.add_argument(
        "--jsonl",
        type=Path,
        default=None,
        help='instead of --dataset: rows with "problem", '
        '"answer" and optionally "unique_id" (MATH-500 saved as JSONL)',
    )
    parser.add_argument("--limit", type=int, default=None, help="first this many problems")
    parser.add_argument("--n", type=_ints, default=[4, 16], help="budgets N (default 4,16)")
    parser.add_argument(
        "--methods",
        type=_names,
        default=["best_of_n", "beam_search"],
        help=f"comma-separated, of {', '.join(METHODS)} (default best_of_n,beam_search)",
    )
    parser.add_argument(
        "--option",
        dest="options",
        action="append",
        default=[],
        metavar="METHOD.KEY=VALUE",
        help="a field of that method's search object, VALUE parsed as JSON when it is JSON",
    )
    parser.add_argument("--max-tokens", type=int, default=2048)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--seed", type=int, default=0, help="problem i's request seed is SEED+i")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight")
    parser.add_argument("--timeout-s", type=float, default=3600.0, help="per request")
    parser.add_argument("--system-prompt", default=SYSTEM_PROMPT)
    parser.add_argument("--out", type=Path, default=Path("results/gpu_search_and_learn"))
    return parser


def parse_options(texts: Sequence[str], methods: Sequence[str]) -> dict[str, dict[str, Any]]:
    from tools.evaluation import parse_option

    options: dict[str, dict[str, Any]] = {}
    for text in texts:
        method, key, value = parse_option(text)
        if method not in methods:
            raise ValueError(f"--option names a method not run: {method!r}")
        options.setdefault(method, {})[key] = value
    return options


def search_object(
    method: str, n: int, max_tokens: int, options: Mapping[str, Mapping[str, Any]]
) -> dict[str, Any]:
    return {**METHODS[method](n, max_tokens), **options.get(method, {})}


def load_problems(args: argparse.Namespace) -> list[Problem]:
    if args.jsonl is not None:
        lines = args.jsonl.read_text(encoding="utf-8").splitlines()
        rows = [json.loads(line) for line in lines if line.strip()]
    else:
        from datasets import load_dataset

        rows = list(load_dataset(args.dataset, split=args.split))
    problems = [
        Problem(str(row.get("unique_id", i)), str(row["problem"]), str(row["answer"]))
        for i, row in enumerate(rows)
    ]
    return problems if args.limit is None else problems[: args.limit]


async def solve(
    client: Any,
    args: argparse.Namespace,
    problem: Problem,
    index: int,
    method: str,
    n: int,
    search: dict[str, Any],
) -> Result:
    from rewards.math_truth import is_correct

    start = time.perf_counter()
    try:
        reply = await client.chat.completions.create(
            model=args.model,
            messages=[
                {"role": "system", "content": args.system_prompt},
                {"role": "user", "content": problem.problem},
            ],
            max_tokens=args.max_tokens,
            temperature=args.temperature,
            seed=args.seed + index,
            extra_body={"search": search},
        )
    except Exception as exc:  # one failed request is a wrong answer, reported, not a crash
        wall = time.perf_counter() - start
        return Result(method, n, problem.id, False, 0, wall, "", f"{type(exc).__name__}: {exc}")
    wall = time.perf_counter() - start
    text = reply.choices[0].message.content or ""
    report = (reply.model_extra or {}).get("search") or {}
    correct = await asyncio.to_thread(is_correct, text, problem.answer)
    return Result(
        method, n, problem.id, correct, int(report.get("generated_tokens", 0)), wall, text
    )


async def run(args: argparse.Namespace, problems: Sequence[Problem]) -> list[Result]:
    import openai

    options = parse_options(args.options, args.methods)
    client = openai.AsyncOpenAI(
        base_url=args.base_url.rstrip("/") + "/v1",
        api_key=args.api_key,
        timeout=args.timeout_s,
        max_retries=0,
    )
    gate = asyncio.Semaphore(args.concurrency)

    async def gated(index: int, problem: Problem, method: str, n: int) -> Result:
        async with gate:
            search = search_object(method, n, args.max_tokens, options)
            return await solve(client, args, problem, index, method, n, search)

    jobs = [
        gated(i, problem, method, n)
        for i, problem in enumerate(problems)
        for n in args.n
        for method in args.methods
    ]
    results = []
    for done, job in enumerate(asyncio.as_completed(jobs), 1):
        results.append(await job)
        if done % 20 == 0 or done == len(jobs):
            print(f"{done}/{len(jobs)} requests", file=sys.stderr)
    await client.close()
    return results


def table(results: Sequence[Result]) -> str:
    """Accuracy (± s.e.), mean generated tokens and wall seconds per (method, N), with the
    published accuracy where one is known."""
    groups: dict[tuple[str, int], list[Result]] = {}
    for r in results:
        groups.setdefault((r.method, r.n), []).append(r)
    lines = [
        "| method | N | problems | accuracy (± se) | published | tokens | wall s | errors |",
        "|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for (method, n), group in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        hits = [float(r.correct) for r in group]
        accuracy = statistics.fmean(hits)
        se = statistics.stdev(hits) / math.sqrt(len(hits)) if len(hits) > 1 else 0.0
        published = PUBLISHED.get((method, n))
        lines.append(
            f"| {method} | {n} | {len(group)} | {accuracy:.3f} ± {se:.3f} "
            f"| {'–' if published is None else f'{published:.3f}'} "
            f"| {statistics.fmean(r.generated_tokens for r in group):.0f} "
            f"| {statistics.fmean(r.wall_s for r in group):.1f} "
            f"| {sum(r.error is not None for r in group)} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    unknown = sorted(set(args.methods) - set(METHODS))
    if unknown:
        print(f"unknown method {unknown[0]!r}: have {', '.join(METHODS)}", file=sys.stderr)
        return 2
    problems = load_problems(args)
    results = asyncio.run(run(args, problems))
    text = table(results)
    args.out.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}}
    record["published"] = PUBLISHED_SOURCE
    record["results"] = [asdict(r) for r in results]
    (args.out / "results.json").write_text(json.dumps(record, indent=2) + "\n")
    (args.out / "results.md").write_text(text)
    print(text, end="")
    if not PUBLISHED:
        print(f"published: none tabulated; see {PUBLISHED_SOURCE}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
