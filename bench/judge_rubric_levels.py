"""The judge's two rubrics on the same texts: how far apart their levels are, and what
that did to a speculative-rejection cut that mixed them (issue 27).

For each verifiable prompt (tools/data/verifiable_prompts.jsonl, whose constraints are
the ground truth), ``--n`` responses of up to ``--max-tokens`` are sampled once (the
first call of a speculative rejection), and the judge (the served default: continuation
layout, short question) scores:

- every finished response (it stopped before ``--max-tokens``) on the complete rubric
  and on the partial one ("unfinished: rate it so far and how promising it is");
- every response's first ``--cut`` tokens on the partial rubric (a live prefix at a cut).

It prints, over all prompts: the finished responses' mean score on each rubric and the
mean paired difference (complete - partial); the prefixes' mean partial score; the
Spearman correlation of each rubric with the truth over a prompt's finished responses;
and, for a cut at ``--cut`` tokens that keeps half of a pool of prefixes plus the
finished responses, the share of the finished responses kept when they are ranked on
their complete score (the old mixed cut) and on their partial score (one scale).

    .venv/bin/python bench/judge_rubric_levels.py --limit 24 --n 16 --max-tokens 64 --cut 16
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
from pathlib import Path
from typing import Any

from bench.judge_layouts import mean_defined, spearman
from engines.default_model import ensure_default_model
from engines.tokenizer import HFChatTokenizer
from engines.vllm_local import EngineConfig, VLLMGenerator
from rewards.constraints.parse import parse_constraints
from rewards.constraints.reward import ConstraintsReward
from rewards.judge import JudgeReward
from search.partial import top_indices
from search.spec_rejection import survivors_count
from search.types import SamplingConfig
from tools.evaluation import load_prompts

PROMPTS = Path("tools/data/verifiable_prompts.jsonl")


def kept_finished(prefix: list[float], finished: list[float]) -> float | None:
    """Share of the finished responses a cut at alpha 0.5 keeps from prefixes + finished,
    ranked on the given scores; None without finished responses."""
    if not finished:
        return None
    pool = prefix + finished
    kept = top_indices(pool, survivors_count(len(pool), 0.5))
    return sum(i >= len(prefix) for i in kept) / len(finished)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    model = str(ensure_default_model())
    tokenizer = HFChatTokenizer.load(model)
    engine = VLLMGenerator.start(EngineConfig(model=model, max_model_len=4096))
    judge = JudgeReward(engine, tokenizer, max_model_len=4096)
    rows = []
    try:
        for p in load_prompts(PROMPTS, offset=args.offset, limit=args.limit):
            ids = tokenizer.render_chat(p.conversation)
            params = SamplingConfig(
                max_tokens=args.max_tokens, temperature=args.temperature, seed=args.seed + p.index
            )
            cands = await engine.generate(ids, params, args.n)
            done = [c for c in cands if c.finish_reason == "stop"]
            live = [c for c in cands if len(c.token_ids) > args.cut]
            heads = [list(c.token_ids[: args.cut]) for c in live]
            texts = [c.text for c in done]
            contexts = [[*ids, *c.token_ids] for c in done]
            row: dict[str, Any] = {
                "id": p.id,
                "complete": await judge.score(p.conversation, texts, token_ids=contexts),
                "partial": await judge.score(
                    p.conversation, texts, partial=True, token_ids=contexts
                ),
                "prefix": await judge.score(
                    p.conversation,
                    [tokenizer.decode(h) for h in heads],
                    partial=True,
                    token_ids=[[*ids, *h] for h in heads],
                ),
                "truth": await ConstraintsReward(parse_constraints(p.constraints)).score(
                    p.conversation, texts
                ),
            }
            rows.append(row)
            print(json.dumps({"id": p.id, "finished": len(done), "prefixes": len(heads)}))
    finally:
        engine.shutdown()
    if args.rows is not None:
        args.rows.write_text(json.dumps(rows) + "\n")
    return summary(rows)


def rank_corr(a: list[float], b: list[float]) -> float | None:
    """spearman over a prompt's finished responses; None with fewer than two."""
    return spearman(a, b) if len(a) > 1 else None


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    complete = [s for r in rows for s in r["complete"]]
    partial = [s for r in rows for s in r["partial"]]
    diffs = [c - q for c, q in zip(complete, partial, strict=True)]
    sem = statistics.stdev(diffs) / len(diffs) ** 0.5 if len(diffs) > 1 else None
    return {
        "prompts": len(rows),
        "finished": len(complete),
        "prefixes": sum(len(r["prefix"]) for r in rows),
        "finished_complete_mean": statistics.fmean(complete) if complete else None,
        "finished_partial_mean": statistics.fmean(partial) if partial else None,
        "complete_minus_partial_mean": statistics.fmean(diffs) if diffs else None,
        "complete_minus_partial_sem": sem,
        "complete_above_partial_share": sum(d > 0 for d in diffs) / len(diffs) if diffs else None,
        "prefix_partial_mean": statistics.fmean(s for r in rows for s in r["prefix"]),
        "truth_spearman_complete": mean_defined(
            [rank_corr(r["complete"], r["truth"]) for r in rows]
        ),
        "truth_spearman_partial": mean_defined([rank_corr(r["partial"], r["truth"]) for r in rows]),
        "finished_kept_mixed": mean_defined(
            [kept_finished(r["prefix"], r["complete"]) for r in rows]
        ),
        "finished_kept_one_scale": mean_defined(
            [kept_finished(r["prefix"], r["partial"]) for r in rows]
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--offset", type=int, default=0)
    parser.add_argument("--limit", type=int, default=24)
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--cut", type=int, default=16)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="write the summary as JSON")
    parser.add_argument("--rows", type=Path, default=None, help="write the scores as JSON")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    print(json.dumps(result, indent=2))
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
