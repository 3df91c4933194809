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

A record that parses but is not a search record (a missing key, ``chosen_index`` out of
range, a line that is not an object), or whose rewards are not finite numbers, is
skipped and counted by why, rather than end the export half-way (NaN rewards would also
make arbitrary preference pairs, since every comparison with NaN is false). The three
files are written to temporary files beside them and renamed into place only when all
are complete: a failed export leaves the previous training sets as they were, and a
symbolic link at an output path is replaced, never followed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from collections import Counter
from collections.abc import Iterable
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Literal

from server.recording import ReadReport, read_records

PairRule = Literal["best", "choice"]
# Why a record is skipped, as the summary says it.
SKIPPED = {"malformed": "malformed records", "non_finite": "records with non-finite rewards"}


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


def skip_reason(record: Any) -> str | None:
    """Why ``record`` cannot be exported ("malformed", "non_finite"); None when it can."""
    if not isinstance(record, dict):
        return "malformed"
    candidates = record.get("candidates")
    chosen = record.get("chosen_index")
    if (
        not all(key in record for key in ("id", "algorithm", "conversation", "rewarded"))
        or not isinstance(record["conversation"], list)
        or not isinstance(candidates, list)
        or not candidates
        or not all(isinstance(c, dict) and isinstance(c.get("text"), str) for c in candidates)
        or isinstance(chosen, bool)
        or not isinstance(chosen, int)
        or not 0 <= chosen < len(candidates)
    ):
        return "malformed"
    if record["rewarded"]:
        rewards = [c.get("reward") for c in candidates]
        if not all(isinstance(r, int | float) and not isinstance(r, bool) for r in rewards):
            return "malformed"
        if not all(math.isfinite(r) for r in rewards):
            return "non_finite"
    return None


def export(
    records: Iterable[Any],
    out: Path,
    rule: PairRule,
    skipped: Counter[str] | None = None,
) -> dict[str, int]:
    """Write the three files; returns the row count of each. Records that cannot be
    exported are counted in ``skipped`` by why (see ``skip_reason``)."""
    skipped = skipped if skipped is not None else Counter()
    out.mkdir(parents=True, exist_ok=True)
    counts = {"distill": 0, "preferences": 0, "all_n": 0}
    temps = {name: out / f".{name}.jsonl.{os.getpid()}.tmp" for name in counts}
    try:
        with ExitStack() as stack:
            files = {name: stack.enter_context(path.open("w")) for name, path in temps.items()}
            for record in records:
                why = skip_reason(record)
                if why is not None:
                    skipped[why] += 1
                    continue
                rows = {
                    "distill": distill_row(record),
                    "preferences": preference_row(record, rule),
                    "all_n": all_n_row(record),
                }
                for name, row in rows.items():
                    if row is not None:
                        files[name].write(json.dumps(row, ensure_ascii=False) + "\n")
                        counts[name] += 1
        for name, path in temps.items():
            os.replace(path, out / f"{name}.jsonl")
    finally:
        for path in temps.values():
            path.unlink(missing_ok=True)
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
    skipped: Counter[str] = Counter()
    counts = export(read_records(args.records, report), Path(args.out), args.pairs, skipped)
    print(
        f"read {report.records} records from {report.shards} shards"
        + (f", skipped {report.damaged} cut-off lines" if report.damaged else "")
        + "".join(f", skipped {n} {SKIPPED[why]}" for why, n in sorted(skipped.items()))
    )
    for name, count in counts.items():
        print(f"  {Path(args.out) / (name + '.jsonl')}: {count} rows")
    return 0
