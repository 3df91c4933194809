"""``alignserve export RECORDS --out DIR``: turn search records (``--record``) into the
training sets of the Best-of-N fine-tuning papers, one JSONL file each:

- ``distill.jsonl``: Best-of-N distillation targets (BOND, variational BoN): the
  conversation followed by the answer the server chose, as chat ``messages``.
- ``preferences.jsonl``: preference pairs for DPO-style training: ``chosen`` is the
  highest-reward candidate (``--pairs best``) or the algorithm's own choice
  (``--pairs choice``: the MBR-BoN or TreeBoN answer), ``rejected`` the lowest-reward
  one. Skipped when the two rewards tie or there is no reward.
- ``all_n.jsonl``: every candidate with its reward, token ids and logprobs, and the
  chosen index: the rows of BoN-aware fine-tuning.

Records of searches that never called the reward model (mbr, plain majority) go only to
``distill.jsonl``. A line cut off by a crash is skipped, and the summary says how many.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from server.recording import ReadReport, read_records

PairRule = Literal["best", "choice"]


def distill_row(record: dict[str, Any]) -> dict[str, Any]:
    chosen = record["candidates"][record["chosen_index"]]
    return {
        "id": record["id"],
        "messages": [*record["conversation"], {"role": "assistant", "content": chosen["text"]}],
        "reward": chosen["reward"] if record["rewarded"] else None,
        "algorithm": record["algorithm"],
    }


def preference_row(record: dict[str, Any], rule: PairRule) -> dict[str, Any] | None:
    candidates = record["candidates"]
    if not record["rewarded"] or len(candidates) < 2:
        return None
    rewards = [c["reward"] for c in candidates]
    worst = min(range(len(rewards)), key=lambda i: (rewards[i], i))
    if rule == "choice":
        chosen = record["chosen_index"]
    else:
        chosen = max(range(len(rewards)), key=lambda i: (rewards[i], -i))
    if rewards[chosen] <= rewards[worst]:
        return None
    return {
        "id": record["id"],
        "prompt": record["conversation"],
        "chosen": candidates[chosen]["text"],
        "rejected": candidates[worst]["text"],
        "chosen_reward": rewards[chosen],
        "rejected_reward": rewards[worst],
    }


def all_n_row(record: dict[str, Any]) -> dict[str, Any] | None:
    if not record["rewarded"]:
        return None
    return {
        "id": record["id"],
        "prompt": record["conversation"],
        "responses": record["candidates"],
        "chosen_index": record["chosen_index"],
        "algorithm": record["algorithm"],
    }


def export(records: Iterable[dict[str, Any]], out: Path, rule: PairRule) -> dict[str, int]:
    """Write the three files; returns the row count of each."""
    out.mkdir(parents=True, exist_ok=True)
    counts = {"distill": 0, "preferences": 0, "all_n": 0}
    with (
        (out / "distill.jsonl").open("w") as distill,
        (out / "preferences.jsonl").open("w") as preferences,
        (out / "all_n.jsonl").open("w") as all_n,
    ):
        for record in records:
            rows = {
                "distill": (distill, distill_row(record)),
                "preferences": (preferences, preference_row(record, rule)),
                "all_n": (all_n, all_n_row(record)),
            }
            for name, (file, row) in rows.items():
                if row is not None:
                    file.write(json.dumps(row, ensure_ascii=False) + "\n")
                    counts[name] += 1
    return counts


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("records", help="the --record directory of a server")
    parser.add_argument("--out", required=True, help="directory for the three JSONL files")
    parser.add_argument(
        "--pairs",
        choices=["best", "choice"],
        default="best",
        help="preference pairs: highest reward (best) or the algorithm's choice vs the lowest",
    )


def main(args: argparse.Namespace) -> int:
    report = ReadReport()
    counts = export(read_records(args.records, report), Path(args.out), args.pairs)
    print(
        f"read {report.records} records from {report.shards} shards"
        + (f", skipped {report.damaged} cut-off lines" if report.damaged else "")
    )
    for name, count in counts.items():
        print(f"  {Path(args.out) / (name + '.jsonl')}: {count} rows")
    return 0
