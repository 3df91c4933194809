"""Best-of-1 on GSM8K (or MATH-500) through a running alignserve: the same problems, prompt
and check as ``alignserve eval --truth math --prompts FILE --sample K --sample-seed S
--algorithms bon --budgets 1`` (tools/prompt_sets.py, rewards/math_truth.py), sent as
concurrent chat requests so one shared engine batches them (``alignserve eval`` runs one
problem at a time in its own engine).

    .venv/bin/python bench/gsm8k_http.py http://127.0.0.1:8000 out.json \\
        --prompts ../shared/data/gsm8k_test.jsonl --sample 100 --sample-seed 0
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))

from rewards.math_truth import is_correct  # noqa: E402
from tools.evaluation import Prompt, load_prompts  # noqa: E402


async def solve(
    client: httpx.AsyncClient, args: argparse.Namespace, prompt: Prompt
) -> dict[str, Any]:
    body = {
        "model": args.model,
        "messages": prompt.conversation,
        "max_tokens": args.max_tokens,
        "temperature": args.temperature,
        "seed": args.seed + prompt.index,
        "search": {"algorithm": "bon", "n": 1},
    }
    start = time.perf_counter()
    r = await client.post("/v1/chat/completions", json=body)
    r.raise_for_status()
    data = r.json()
    answer = data["choices"][0]["message"]["content"] or ""
    assert prompt.answer is not None
    correct = await asyncio.to_thread(is_correct, answer, prompt.answer)
    return {
        "id": prompt.id,
        "gold": prompt.answer,
        "correct": correct,
        "tokens": data["search"]["generated_tokens"],
        "latency_s": time.perf_counter() - start,
        "answer": answer,
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    prompts = load_prompts(args.prompts, sample=args.sample, sample_seed=args.sample_seed)
    limit = asyncio.Semaphore(args.concurrency)
    timeout = httpx.Timeout(3600.0, connect=10.0)
    async with httpx.AsyncClient(base_url=args.url, timeout=timeout) as client:

        async def one(p: Prompt) -> dict[str, Any]:
            async with limit:
                return await solve(client, args, p)

        start = time.perf_counter()
        rows = await asyncio.gather(*(one(p) for p in prompts))
        run_s = time.perf_counter() - start
    accuracy = sum(r["correct"] for r in rows) / len(rows)
    return {
        "settings": {k: str(v) for k, v in vars(args).items()},
        "problems": len(rows),
        "accuracy": accuracy,
        "accuracy_se": math.sqrt(accuracy * (1 - accuracy) / max(1, len(rows) - 1)),
        "tokens": sum(r["tokens"] for r in rows) / len(rows),
        "hit_max_tokens": sum(r["tokens"] >= args.max_tokens for r in rows),
        "run_s": run_s,
        "rows": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("out", type=Path)
    parser.add_argument("--prompts", default=str(ROOT.parent / "shared/data/gsm8k_test.jsonl"))
    parser.add_argument("--sample", type=int, default=100)
    parser.add_argument("--sample-seed", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--temperature", type=float, default=0.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--model", default="SmolLM2-135M-Instruct")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    summary = {k: v for k, v in result.items() if k not in ("rows", "settings")}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
