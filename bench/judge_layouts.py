"""The judge's prompt layouts and wordings side by side, in one run on the in-process engine.

For each verifiable prompt (tools/data/verifiable_prompts.jsonl: every prompt carries
rule-checked constraints, the ground truth), Best-of-8 candidates are sampled once, then
scored by the judge in the ``continuation`` layout (the rating question continues the
generation's own context), once with each question wording (rewards.judge.QUESTIONS), and
in the ``separate`` layout (a prompt of its own). It prints:

- agreement: Spearman rank correlation of each variant's rewards with the separate
  layout's over a prompt's candidates, averaged over prompts;
- truth: for each variant, the Spearman correlation of its rewards with the fraction of
  constraints met (over prompts where that fraction varies), and the fraction met by the
  candidate it ranks first (the Best-of-8 answer), against the mean over all candidates;
- partial truth: the same correlation for the first half of each candidate's tokens scored
  as an unfinished response (what TreeBoN and speculative rejection rank by), against the
  complete candidate's truth;
- cost: each layout's scoring time over the generation's, and the prompt tokens the engine
  computed (vLLM's prompt tokens less its prefix-cache hits) per request, against the
  generation's own.

    .venv/bin/python bench/judge_layouts.py --offset 0 --limit 24      # choose the default
    .venv/bin/python bench/judge_layouts.py --offset 100 --limit 24    # report (held out)

The default layout and wording were chosen on the first set; the second is reported (see
the README).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path
from typing import Any

from engines.default_model import ensure_default_model
from engines.tokenizer import HFChatTokenizer
from engines.vllm_local import EngineConfig, VLLMGenerator
from rewards.constraints.parse import parse_constraints
from rewards.constraints.reward import ConstraintsReward
from rewards.judge import QUESTIONS, JudgeReward
from search.context import generate_each
from search.types import SamplingConfig
from tools.evaluation import load_prompts

PROMPTS = Path("tools/data/verifiable_prompts.jsonl")
# Each continuation wording, then the separate layout (which has no question of its own).
VARIANTS: dict[str, dict[str, str]] = {
    **{f"continuation/{q}": {"layout": "continuation", "question": q} for q in QUESTIONS},
    "separate": {"layout": "separate"},
}


def ranks(values: list[float]) -> list[float]:
    """Ranks from 1, ties sharing their average rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    out = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return out


def spearman(a: list[float], b: list[float]) -> float | None:
    """Rank correlation; None when either side is constant (undefined)."""
    ra, rb = ranks(a), ranks(b)
    ma, mb = statistics.fmean(ra), statistics.fmean(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb, strict=True))
    va = sum((x - ma) ** 2 for x in ra)
    vb = sum((y - mb) ** 2 for y in rb)
    return None if va == 0 or vb == 0 else cov / (va * vb) ** 0.5


async def recache(engine: VLLMGenerator, contexts: list[list[int]]) -> None:
    """The prefix cache as the generation left it, whatever an earlier variant's judge
    prompts added: emptied, then the same full blocks filled again by one-token requests
    on the generation's contexts (prompt and response). Without it a variant could read
    KV blocks another variant's question completed, and its cost would be understated."""
    await engine.engine.reset_prefix_cache()
    await generate_each(engine, contexts, SamplingConfig(max_tokens=1, temperature=0.0))


def mean_defined(values: list[float | None]) -> float | None:
    """The mean of the defined values; None when there are none."""
    defined = [v for v in values if v is not None]
    return statistics.fmean(defined) if defined else None


def engine_prompt_tokens() -> tuple[float, float]:
    """vLLM's prompt tokens and prefix-cache hits so far, from its Prometheus counters."""
    from prometheus_client import REGISTRY

    totals = {"vllm:prompt_tokens": 0.0, "vllm:prompt_tokens_cached": 0.0}
    for metric in REGISTRY.collect():
        if metric.name in totals:
            totals[metric.name] += sum(s.value for s in metric.samples if s.name.endswith("_total"))
    return totals["vllm:prompt_tokens"], totals["vllm:prompt_tokens_cached"]


def computed_since(before: tuple[float, float]) -> float:
    total, cached = engine_prompt_tokens()
    return (total - before[0]) - (cached - before[1])


async def run(args: argparse.Namespace) -> dict[str, Any]:
    model = str(ensure_default_model())
    tokenizer = HFChatTokenizer.load(model)
    engine = VLLMGenerator.start(EngineConfig(model=model, max_model_len=4096))
    judges = {
        name: JudgeReward(engine, tokenizer, max_model_len=4096, **kwargs)
        for name, kwargs in VARIANTS.items()
    }
    prompts = load_prompts(PROMPTS, offset=args.offset, limit=args.limit)
    rows = []
    try:
        # The engine's first judge steps are slow (4.4 s against about 0.5 s here): warm
        # every variant up so the first prompt's costs are like the others'.
        hello, reply = [{"role": "user", "content": "Hello!"}], "Hi! How can I help?"
        context = [*tokenizer.render_chat(hello), *tokenizer.encode(reply)]
        for judge in judges.values():
            await judge.score(hello, [reply], token_ids=[context])
        for p in prompts:
            ids = tokenizer.render_chat(p.conversation)
            params = SamplingConfig(
                max_tokens=args.max_tokens, temperature=args.temperature, seed=args.seed + p.index
            )
            before = engine_prompt_tokens()
            start = time.perf_counter()
            cands = await engine.generate(ids, params, args.n)
            row: dict[str, Any] = {
                "id": p.id,
                "generate_s": time.perf_counter() - start,
                "generate_tokens": computed_since(before),
            }
            texts = [c.text for c in cands]
            truth = ConstraintsReward(parse_constraints(p.constraints))
            row["truth"] = await truth.score(p.conversation, texts)
            halves = [list(c.token_ids[: len(c.token_ids) // 2]) for c in cands]
            half_texts = [tokenizer.decode(h) for h in halves]
            contexts = [[*ids, *c.token_ids] for c in cands]
            for name, judge in judges.items():
                await recache(engine, contexts)
                before = engine_prompt_tokens()
                start = time.perf_counter()
                row[name] = await judge.score(p.conversation, texts, token_ids=contexts)
                row[f"{name}_s"] = time.perf_counter() - start
                row[f"{name}_tokens"] = computed_since(before)
                row[f"{name}_partial"] = await judge.score(
                    p.conversation, half_texts, partial=True, token_ids=[ids + h for h in halves]
                )
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if not isinstance(v, list)}))
    finally:
        engine.shutdown()
    return summary(rows)


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "prompts": len(rows),
        "truth_mean_candidate": statistics.fmean(statistics.fmean(r["truth"]) for r in rows),
        "generate_tokens_per_request": statistics.fmean(r["generate_tokens"] for r in rows),
    }
    for name in VARIANTS:
        corr = [spearman(r[name], r["truth"]) for r in rows]
        partial = [spearman(r[f"{name}_partial"], r["truth"]) for r in rows]
        agree = [spearman(r[name], r["separate"]) for r in rows]
        picked = [r["truth"][max(range(len(r[name])), key=r[name].__getitem__)] for r in rows]
        out[name] = {
            "agreement_with_separate": mean_defined(agree),
            "truth_spearman": mean_defined(corr),
            "truth_spearman_prompts": sum(c is not None for c in corr),
            "partial_truth_spearman": mean_defined(partial),
            "truth_of_best": statistics.fmean(picked),
            "score_over_generate": sum(r[f"{name}_s"] for r in rows)
            / sum(r["generate_s"] for r in rows),
            "computed_prompt_tokens_per_request": statistics.fmean(
                r[f"{name}_tokens"] for r in rows
            ),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--offset", type=int, default=0)
    parser.add_argument("--limit", type=int, default=24)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="write the summary as JSON")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    print(json.dumps(result, indent=2))
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
