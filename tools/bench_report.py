"""Outputs of ``alignserve bench``: a markdown table per level (and, with ``--vs-engine``,
the HTTP / raw engine ratios and the HTTP / generate-only floor ratios), ``bench.json``,
``throughput.png`` (generated tokens/s and requests/s against concurrency) and
``latency.png`` (p50/p95/p99 against concurrency). One line per algorithm over HTTP; the
raw engine side, when measured, dashed; the generate-only floor dotted."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tools.loadgen import LevelStats


def ratio(top: float | None, bottom: float | None) -> float | None:
    return top / bottom if top is not None and bottom else None


def ratios(rows: Sequence[LevelStats]) -> list[dict[str, Any]]:
    """Per (algorithm, concurrency) measured on both sides: HTTP over raw throughput and,
    where the generate-only floor was measured, HTTP over the floor (tokens/s, p50)."""
    raw = {(r.algorithm, r.concurrency): r for r in rows if r.side == "raw"}
    floor = {(r.algorithm, r.concurrency): r for r in rows if r.side == "floor"}
    out = []
    for row in rows:
        base = raw.get((row.algorithm, row.concurrency))
        if row.side != "http" or base is None:
            continue
        pair: dict[str, Any] = {
            "algorithm": row.algorithm,
            "concurrency": row.concurrency,
            "raw_tokens_per_s": base.tokens_per_s,
            "http_tokens_per_s": row.tokens_per_s,
            "tokens_per_s_ratio": ratio(row.tokens_per_s, base.tokens_per_s),
            "requests_per_s_ratio": ratio(row.requests_per_s, base.requests_per_s),
        }
        if (gen := floor.get((row.algorithm, row.concurrency))) is not None:
            pair.update(
                floor_tokens_per_s=gen.tokens_per_s,
                floor_latency_p50=gen.latency_p50,
                floor_tokens_per_s_ratio=ratio(row.tokens_per_s, gen.tokens_per_s),
                floor_latency_p50_ratio=ratio(row.latency_p50, gen.latency_p50),
            )
        out.append(pair)
    return out


def num(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def errors_text(errors: Mapping[str, int]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in errors.items()) or "0"


def markdown_table(rows: Sequence[LevelStats], pairs: Sequence[Mapping[str, Any]]) -> str:
    lines = [
        "| algorithm | clients | side | ok / requests | errors | req/s | gen tok/s "
        "| p50 s | p95 s | p99 s | reward batch (mean) |",
        "|---|--:|---|--:|---|--:|--:|--:|--:|--:|--:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.algorithm} | {r.concurrency} | {r.side} | {r.ok} / {r.requests} "
            f"| {errors_text(r.errors)} | {r.requests_per_s:.2f} | {r.tokens_per_s:.1f} "
            f"| {num(r.latency_p50)} | {num(r.latency_p95)} | {num(r.latency_p99)} "
            f"| {num(r.reward_batch_mean)} |"
        )
    if pairs:
        floor = any("floor_tokens_per_s" in p for p in pairs)
        head = "| algorithm | clients | raw gen tok/s | HTTP gen tok/s | HTTP / raw |"
        rule = "|---|--:|--:|--:|--:|"
        if floor:
            head += " floor gen tok/s | HTTP / floor tok/s | HTTP / floor p50 |"
            rule += "--:|--:|--:|"
        lines += ["", head, rule]
        for p in pairs:
            line = (
                f"| {p['algorithm']} | {p['concurrency']} | {p['raw_tokens_per_s']:.1f} "
                f"| {p['http_tokens_per_s']:.1f} | {num(p['tokens_per_s_ratio'], 3)} |"
            )
            if floor:
                line += (
                    f" {num(p.get('floor_tokens_per_s'), 1)} "
                    f"| {num(p.get('floor_tokens_per_s_ratio'), 3)} "
                    f"| {num(p.get('floor_latency_p50_ratio'), 3)} |"
                )
            lines.append(line)
    return "\n".join(lines) + "\n"


def _lines(rows: Sequence[LevelStats]) -> dict[tuple[str, str], list[LevelStats]]:
    lines: dict[tuple[str, str], list[LevelStats]] = {}
    for row in rows:
        lines.setdefault((row.algorithm, row.side), []).append(row)
    for points in lines.values():
        points.sort(key=lambda r: r.concurrency)
    return lines


# How each side is named and drawn in the plots.
SIDE_LABELS = {"raw": "{} (raw engine)", "floor": "{} (generate only)"}
SIDE_DASHES = {"raw": "--", "floor": ":"}


def plot(
    rows: Sequence[LevelStats],
    out_dir: Path,
    title: str,
    labels: Mapping[str, str] = SIDE_LABELS,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = sorted({r.concurrency for r in rows})
    lines = _lines(rows)
    # An algorithm keeps its colour (throughput) or marker (latency) on both sides; the
    # raw engine side is dashed.
    algorithms = list(dict.fromkeys(r.algorithm for r in rows))
    quantiles = {"p50": "C0", "p95": "C1", "p99": "C3"}

    def style(ax: Any, ylabel: str) -> None:
        ax.set_xscale("log", base=2)
        ax.set_xticks(levels, [str(c) for c in levels])
        ax.set_xlabel("concurrent clients")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), dpi=120)
    try:
        for (algorithm, side), points in lines.items():
            label = labels.get(side, "{}").format(algorithm)
            kw = {"color": f"C{algorithms.index(algorithm) % 10}", "marker": "o", "label": label}
            dash = SIDE_DASHES.get(side, "-")
            xs = [p.concurrency for p in points]
            axes[0].plot(xs, [p.tokens_per_s for p in points], dash, **kw)
            axes[1].plot(xs, [p.requests_per_s for p in points], dash, **kw)
        style(axes[0], "generated tokens/s")
        style(axes[1], "requests/s")
        fig.suptitle(title, fontsize=9)
        fig.tight_layout()
        fig.savefig(out_dir / "throughput.png")
    finally:
        plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    try:
        for (algorithm, side), points in lines.items():
            name = labels.get(side, "{}").format(algorithm)
            dash = SIDE_DASHES.get(side, "-")
            marker = "osD^v<>"[algorithms.index(algorithm) % 7]
            xs = [p.concurrency for p in points]
            for q, color in quantiles.items():
                ys = [getattr(p, f"latency_{q}") for p in points]
                ys = [float("nan") if y is None else y for y in ys]
                ax.plot(xs, ys, dash, color=color, marker=marker, label=f"{name} {q}")
        style(ax, "latency, seconds")
        ax.set_title(title, fontsize=9)
        fig.tight_layout()
        fig.savefig(out_dir / "latency.png")
    finally:
        plt.close(fig)


def write_report(out_dir: Path, record: Mapping[str, Any], rows: Sequence[LevelStats]) -> None:
    """bench.json (the record, the HTTP, raw and floor rows, the ratios) and both plots."""
    out_dir.mkdir(parents=True, exist_ok=True)
    document = {
        **record,
        "levels": [asdict(r) for r in rows if r.side == "http"],
        "raw": [asdict(r) for r in rows if r.side == "raw"],
        "floor": [asdict(r) for r in rows if r.side == "floor"],
        "ratios": ratios(rows),
    }
    (out_dir / "bench.json").write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    plot(rows, out_dir, plot_title(record))


def plot_title(record: Mapping[str, Any]) -> str:
    bench = record.get("bench", {})
    work = bench.get("work", {})
    return (
        f"{record.get('model') or record.get('url', '')}: n={work.get('n')}, "
        f"max_tokens {work.get('max_tokens')}, {bench.get('requests')} requests per level"
    )
