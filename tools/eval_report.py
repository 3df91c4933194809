"""Aggregates and outputs of ``alignserve eval``: a markdown table, ``eval.json``,
``eval.md`` and ``eval.png`` (mean reward against mean generated tokens, one line per
algorithm, a point per budget n).

Per (algorithm, n): means over the prompts of the re-scored reward (with its standard
error), generated tokens, wall seconds, engine and reward calls. ``tokens_vs_bon`` and
``wall_vs_bon`` are ratios of those means to bon's at the same n (None without bon).
With ``--truth math``, ``accuracy``: the fraction of prompts whose answer is correct.
"""

from __future__ import annotations

import json
import math
import statistics
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tools.evaluation import Row, row_dicts

BASELINE = "bon"


@dataclass(frozen=True)
class Aggregate:
    algorithm: str
    n: int
    runs: int
    reward: float
    reward_se: float
    search_reward: float
    generated_tokens: float
    wall_s: float
    engine_calls: float
    reward_calls: float
    tokens_vs_bon: float | None = None
    wall_vs_bon: float | None = None
    # Ground truth (--truth): its mean, and the pass rate when it is the constraints.
    truth: float | None = None
    truth_se: float | None = None
    pass_rate: float | None = None
    pass_rate_se: float | None = None
    # --truth math: the fraction of answers equal to the gold answer.
    accuracy: float | None = None
    accuracy_se: float | None = None


def standard_error(values: Sequence[float]) -> float:
    return statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0


def ratio(value: float, base: float) -> float | None:
    return value / base if base else None


def aggregate(rows: Sequence[Row]) -> list[Aggregate]:
    """One aggregate per (algorithm, n), in order of first appearance in ``rows``."""
    groups: dict[tuple[str, int], list[Row]] = {}
    for row in rows:
        groups.setdefault((row.algorithm, row.n), []).append(row)
    means = {}
    for key, group in groups.items():
        rewards = [r.reward for r in group]
        means[key] = Aggregate(
            algorithm=key[0],
            n=key[1],
            runs=len(group),
            reward=statistics.fmean(rewards),
            reward_se=standard_error(rewards),
            search_reward=statistics.fmean(r.search_reward for r in group),
            generated_tokens=statistics.fmean(r.generated_tokens for r in group),
            wall_s=statistics.fmean(r.wall_s for r in group),
            engine_calls=statistics.fmean(r.engine_calls for r in group),
            reward_calls=statistics.fmean(r.reward_calls for r in group),
            **truth_means(group),
        )
    out = []
    for (_, n), agg in means.items():
        base = means.get((BASELINE, n))
        if base is not None:
            agg = Aggregate(
                **{
                    **asdict(agg),
                    "tokens_vs_bon": ratio(agg.generated_tokens, base.generated_tokens),
                    "wall_vs_bon": ratio(agg.wall_s, base.wall_s),
                }
            )
        out.append(agg)
    return out


def truth_means(group: Sequence[Row]) -> dict[str, float]:
    """Mean truth, pass rate and accuracy with their standard errors, where the rows have
    them."""
    out = {}
    truths = [r.truth for r in group if r.truth is not None]
    if truths:
        out["truth"], out["truth_se"] = statistics.fmean(truths), standard_error(truths)
    passes = [float(r.truth_pass) for r in group if r.truth_pass is not None]
    if passes:
        out["pass_rate"], out["pass_rate_se"] = statistics.fmean(passes), standard_error(passes)
    corrects = [float(r.correct) for r in group if r.correct is not None]
    if corrects:
        out["accuracy"], out["accuracy_se"] = statistics.fmean(corrects), standard_error(corrects)
    return out


def _times(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}x"


def markdown_table(aggregates: Sequence[Aggregate]) -> str:
    header = (
        "| algorithm | n | runs | reward (± se) | tokens | wall s | engine calls "
        "| reward calls | tokens / bon | wall / bon |"
    )
    rule = "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
    truth = any(a.truth is not None for a in aggregates)
    if truth:
        header = header.replace(
            "| reward (± se)", "| truth pass (± se) | truth (± se) | reward (± se)"
        )
        rule += "--:|--:|"
    accuracy = any(a.accuracy is not None for a in aggregates)
    if accuracy:  # beside the tokens it costs
        header = header.replace("| tokens |", "| accuracy (± se) | tokens |")
        rule += "--:|"
    lines = [header, rule]
    for a in sorted(aggregates, key=lambda a: a.n):
        truth_cells = (
            f"| {_mean_se(a.pass_rate, a.pass_rate_se)} | {_mean_se(a.truth, a.truth_se)} "
            if truth
            else ""
        )
        accuracy_cell = f"| {_mean_se(a.accuracy, a.accuracy_se)} " if accuracy else ""
        lines.append(
            f"| {a.algorithm} | {a.n} | {a.runs} {truth_cells}| {a.reward:.3f} ± {a.reward_se:.3f} "
            f"{accuracy_cell}| {a.generated_tokens:.1f} | {a.wall_s:.2f} | {a.engine_calls:.1f} "
            f"| {a.reward_calls:.1f} | {_times(a.tokens_vs_bon)} | {_times(a.wall_vs_bon)} |"
        )
    return "\n".join(lines) + "\n"


def _mean_se(mean: float | None, se: float | None) -> str:
    return "–" if mean is None else f"{mean:.3f} ± {se or 0.0:.3f}"


def plot(aggregates: Sequence[Aggregate], path: Path, title: str) -> None:
    """Mean reward against mean generated tokens: a line per algorithm, n at each point;
    with --truth a second panel, the truth's pass rate, mean or accuracy against the same
    tokens."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    truth = any(a.truth is not None or a.accuracy is not None for a in aggregates)
    passes = any(a.pass_rate is not None for a in aggregates)
    accuracy = any(a.accuracy is not None for a in aggregates)
    fig, axes = plt.subplots(1, 2 if truth else 1, figsize=(13 if truth else 7, 4.5), dpi=120)
    panels = list(axes) if truth else [axes]
    try:
        _panel(panels[0], aggregates, "reward", "mean reward of the answer (re-scored, ± 1 s.e.)")
        if truth:
            key, label = ("pass_rate", "truth: pass rate") if passes else ("truth", "mean truth")
            if accuracy:
                key, label = "accuracy", "accuracy (math)"
            _panel(panels[1], aggregates, key, f"{label} of the answer (± 1 s.e.)")
        fig.suptitle(textwrap.fill(title, 120), fontsize=9)
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)


def _panel(ax: Any, aggregates: Sequence[Aggregate], key: str, ylabel: str) -> None:
    lines: dict[str, list[Aggregate]] = {}
    for agg in aggregates:
        lines.setdefault(agg.algorithm, []).append(agg)
    for algorithm, points in lines.items():
        points.sort(key=lambda a: a.n)
        xs = [a.generated_tokens for a in points]
        ys = [getattr(a, key) or 0.0 for a in points]
        errors = [getattr(a, f"{key}_se") or 0.0 for a in points]
        ax.errorbar(xs, ys, yerr=errors, marker="o", capsize=3, label=algorithm)
        for a, y in zip(points, ys, strict=True):
            ax.annotate(
                f"n={a.n}",
                (a.generated_tokens, y),
                textcoords="offset points",
                xytext=(4, 4),
                fontsize=8,
            )
    ax.set_xlabel("mean generated tokens per request")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend()


def write_results(
    out_dir: Path, settings: Mapping[str, Any], rows: Sequence[Row], title: str
) -> tuple[list[Aggregate], str]:
    """Write eval.json, eval.md and eval.png under ``out_dir``; return aggregates and table."""
    out_dir.mkdir(parents=True, exist_ok=True)
    aggregates = aggregate(rows)
    table = markdown_table(aggregates)
    document = {
        "settings": dict(settings),
        "rows": row_dicts(rows),
        "aggregates": [asdict(a) for a in aggregates],
    }
    (out_dir / "eval.json").write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    (out_dir / "eval.md").write_text(f"{title}\n\n{table}", encoding="utf-8")
    plot(aggregates, out_dir / "eval.png", title)
    return aggregates, table
