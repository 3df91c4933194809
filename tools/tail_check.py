"""``alignserve eval --tail-check``: how well adaptive_bon's reward-tail estimators predict
Best-of-N from fewer samples, on real prompts, with the real engine and reward model.

Per prompt, a pool of 2N responses (one seeded engine call), all scored. The target is the
expected best-of-N reward under the pool's empirical distribution (N draws with
replacement from the 2N: sum_i x_(i) [(i/P)^N - ((i-1)/P)^N] over the sorted pool), a
lower-variance stand-in for E[best of N] than any single maximum. Each estimator sees the
pool's first m rewards (``--tail-samples``) and predicts E[best of N]; ``max of m`` (more
samples cannot help) is the naive baseline. The table gives, per estimator and m, the
mean absolute error and the mean signed error (bias) over the prompts; ``tail_check.json``
has every prediction.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from typing import Any

from search.tail import ESTIMATORS, MIN_SAMPLES, Bounds, fit
from search.types import SamplingConfig
from server.runtime import Runtime
from tools.evaluation import Prompt, render

BASELINE = "max of m"


def empirical_best_of(pool: Sequence[float], n: int) -> float:
    """E[max of n draws with replacement from ``pool``]."""
    ordered = sorted(pool)
    size = len(ordered)
    return sum(x * ((i / size) ** n - ((i - 1) / size) ** n) for i, x in enumerate(ordered, 1))


def predictions(rewards: Sequence[float], n: int, bounds: Bounds = None) -> dict[str, float]:
    """What each estimator predicts for E[best of n], clipped to the reward's range as
    adaptive_bon clips it."""
    predicted = {BASELINE: max(rewards)}
    for estimator in ESTIMATORS:
        if len(rewards) >= MIN_SAMPLES[estimator]:
            predicted[estimator] = fit(rewards, estimator, bounds).expected_best_of(n)
    return predicted


async def check_prompt(
    runtime: Runtime,
    prompt: Prompt,
    *,
    n: int,
    samples: Sequence[int],
    max_tokens: int,
    temperature: float,
    seed: int,
) -> dict[str, Any]:
    sampling = SamplingConfig(max_tokens=max_tokens, temperature=temperature, seed=seed)
    completions = await runtime.generator.generate(
        render(runtime, prompt, max_tokens), sampling, 2 * n
    )
    pool = await runtime.reward.score(prompt.conversation, [c.text for c in completions])
    return {
        "prompt_id": prompt.id,
        "pool": pool,
        "target": empirical_best_of(pool, n),
        "predicted": {str(m): predictions(pool[:m], n, runtime.reward.bounds) for m in samples},
    }


async def tail_check(
    runtime: Runtime,
    prompts: Sequence[Prompt],
    *,
    n: int,
    samples: Sequence[int],
    max_tokens: int,
    temperature: float,
    seed: int,
    progress: Callable[[], None] | None = None,
) -> list[dict[str, Any]]:
    rows = []
    for prompt in prompts:
        rows.append(
            await check_prompt(
                runtime,
                prompt,
                n=n,
                samples=samples,
                max_tokens=max_tokens,
                temperature=temperature,
                seed=seed + prompt.index,
            )
        )
        if progress is not None:
            progress()
    return rows


def error_table(rows: Sequence[dict[str, Any]], n: int) -> tuple[list[dict[str, Any]], str]:
    """Per (m, estimator): mean absolute and mean signed error against the target."""
    summary = []
    for m in rows[0]["predicted"]:
        for estimator in rows[0]["predicted"][m]:
            errors = [r["predicted"][m][estimator] - r["target"] for r in rows]
            summary.append(
                {
                    "m": int(m),
                    "estimator": estimator,
                    "mae": statistics.fmean(abs(e) for e in errors),
                    "bias": statistics.fmean(errors),
                }
            )
    mean_target = statistics.fmean(r["target"] for r in rows)
    lines = [
        f"Predicting E[best of {n}] ({len(rows)} prompts, mean target {mean_target:.3f})",
        "",
        "| m | estimator | mean abs error | bias |",
        "|--:|---|--:|--:|",
        *(f"| {s['m']} | {s['estimator']} | {s['mae']:.4f} | {s['bias']:+.4f} |" for s in summary),
    ]
    return summary, "\n".join(lines) + "\n"
