"""Searches on a fixed, seeded subset of IFEval, through a running alignserve.

Each row of IFEval's ``input_data.jsonl`` goes to ``/v1/chat/completions`` as its prompt
alone (the model's chat template, as lm-eval's ``local-chat-completions`` sends it), with a
``search`` object per configuration. With ``--reward constraints`` the row's own
``instruction_id_list``/``kwargs`` go along as ``search.constraints``: the search ranks its
candidates by IFEval's own checks, a verifier in the loop (like unit tests for code), not a
judge. The answer is then scored here with lm-eval's ``test_instruction_following_strict``
and ``..._loose`` (rewards/constraints/reference.py loads them offline), so the accuracy is
IFEval's, computed the same way for every configuration.

lm-eval's IFEval task cannot send a row's checks with its request (``--gen_kwargs`` is one
object for every row), which is why the verifier-guided rows run through this script and
the Best-of-1 greedy row through lm-eval (bench/ifeval/run.sh).

    .venv/bin/python bench/ifeval/subset.py http://127.0.0.1:8000 out.json \\
        --sample 150 --seed 26 --max-tokens 256 --config bo1:1 --config bo4-verifier:4:constraints

``--config NAME:N[:REWARD]``: bon with that n (and search reward); n = 1 is one sample, no
search. Request seed of a row: ``--request-seed`` plus its line number, the same for every
configuration. Prints a markdown table: prompt- and instruction-level strict accuracy
(± standard error over prompts), prompt-level loose, mean generated tokens (the server's
report), mean latency per request, and the run's seconds per prompt at the concurrency
used; writes every answer to the output JSON.
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

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))

from rewards.constraints.reference import load  # noqa: E402
from tools.prompt_sets import read_rows, sample  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "ifeval_input_data.jsonl"


def verdicts(row: dict[str, Any], response: str) -> tuple[list[bool], list[bool]]:
    """IFEval's strict and loose verdicts, per instruction, by lm-eval's own functions."""
    load()
    from lm_eval.tasks.ifeval.utils import (
        InputExample,
        test_instruction_following_loose,
        test_instruction_following_strict,
    )

    kwargs = [{k: v for k, v in kw.items() if v is not None} for kw in row["kwargs"]]
    example = InputExample(row["key"], row["instruction_id_list"], row["prompt"], kwargs)
    strict = test_instruction_following_strict(example, response).follow_instruction_list
    loose = test_instruction_following_loose(example, response).follow_instruction_list
    return list(strict), list(loose)


async def ask(
    client: httpx.AsyncClient,
    args: argparse.Namespace,
    row: dict[str, Any],
    index: int,
    n: int,
    reward: str | None,
) -> dict[str, Any]:
    search: dict[str, Any] = {"algorithm": "bon", "n": n}
    if reward is not None:
        search["reward"] = reward
    if reward == "constraints":
        search["constraints"] = [
            {"instruction_id": i, "kwargs": {k: v for k, v in kw.items() if v is not None}}
            for i, kw in zip(row["instruction_id_list"], row["kwargs"], strict=True)
        ]
    body = {
        "model": args.model,
        "messages": [{"role": "user", "content": row["prompt"]}],
        "max_tokens": args.max_tokens,
        "temperature": args.temperature,
        "seed": args.request_seed + index,
        "search": search,
    }
    start = time.perf_counter()
    r = await client.post("/v1/chat/completions", json=body)
    latency = time.perf_counter() - start
    r.raise_for_status()
    data = r.json()
    answer = data["choices"][0]["message"]["content"] or ""
    strict, loose = await asyncio.to_thread(verdicts, row, answer)
    return {
        "key": row["key"],
        "answer": answer,
        "strict": strict,
        "loose": loose,
        "generated_tokens": data["search"]["generated_tokens"],
        "latency_s": latency,
    }


def mean_se(values: list[float]) -> tuple[float, float]:
    m = sum(values) / len(values)
    var = sum((v - m) ** 2 for v in values) / max(1, len(values) - 1)
    return m, math.sqrt(var / len(values))


def summary(name: str, n: int, answers: list[dict[str, Any]], run_s: float) -> dict[str, Any]:
    prompt_strict = [float(all(a["strict"])) for a in answers]
    inst_strict = [float(v) for a in answers for v in a["strict"]]
    return {
        "config": name,
        "n": n,
        "prompts": len(answers),
        "prompt_strict": mean_se(prompt_strict),
        "inst_strict": mean_se(inst_strict),
        "prompt_loose": mean_se([float(all(a["loose"])) for a in answers])[0],
        "tokens": sum(a["generated_tokens"] for a in answers) / len(answers),
        "latency_s": sum(a["latency_s"] for a in answers) / len(answers),
        "run_s_per_prompt": run_s / len(answers),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    rows = read_rows(args.data)
    chosen = sample(len(rows), args.sample, args.seed)[args.skip :][: args.first]
    limit = asyncio.Semaphore(args.concurrency)
    results: dict[str, Any] = {"indices": chosen, "configs": [], "answers": {}}
    timeout = httpx.Timeout(3600.0, connect=10.0)
    async with httpx.AsyncClient(base_url=args.url, timeout=timeout) as client:
        for spec in args.config:
            name, n_text, *rest = spec.split(":")
            reward = rest[0] if rest else None

            async def one(i: int, n: int = int(n_text), r: str | None = reward) -> dict[str, Any]:
                async with limit:
                    return await ask(client, args, rows[i], i, n, r)

            start = time.perf_counter()
            answers = await asyncio.gather(*(one(i) for i in chosen))
            results["configs"].append(
                summary(name, int(n_text), answers, time.perf_counter() - start)
            )
            results["answers"][name] = answers
            print(table(results["configs"]), file=sys.stderr)
    return results


def table(configs: list[dict[str, Any]]) -> str:
    lines = [
        "| config | n | prompts | prompt strict (± se) | inst strict (± se) | prompt loose "
        "| tokens / prompt | latency s | run s / prompt |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for c in configs:
        (ps, pse), (ins, ise) = c["prompt_strict"], c["inst_strict"]
        lines.append(
            f"| {c['config']} | {c['n']} | {c['prompts']} | {ps:.3f} ± {pse:.3f} "
            f"| {ins:.3f} ± {ise:.3f} | {c['prompt_loose']:.3f} | {c['tokens']:.1f} "
            f"| {c['latency_s']:.1f} | {c['run_s_per_prompt']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("out", type=Path)
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--sample", type=int, default=150)
    parser.add_argument("--seed", type=int, default=26, help="the subset's draw")
    parser.add_argument(
        "--first", type=int, default=None, help="only the subset's first rows (a partial run)"
    )
    parser.add_argument("--skip", type=int, default=0, help="skip the subset's first rows")
    parser.add_argument("--request-seed", type=int, default=0)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--model", default="SmolLM2-135M-Instruct")
    parser.add_argument("--config", action="append", required=True, help="NAME:N[:REWARD]")
    args = parser.parse_args()
    results = asyncio.run(run(args))
    results["settings"] = {k: v for k, v in vars(args).items() if k not in ("out",)}
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(table(results["configs"]), end="")


if __name__ == "__main__":
    main()
