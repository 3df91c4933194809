"""The training rows of ``alignserve distill``, read from a records directory (the
``--record`` shards) or from an ``alignserve export`` directory, and checked before any
model is loaded.

Records go through ``tools.export``'s own functions (``skip_reason``, ``distill_row``,
``preference_row``), so a records directory and its export give the same rows. The rows
come out in TRL's conversational formats:

- sft: prompt-completion, ``{"prompt": conversation, "completion": [chosen answer]}``,
  so the loss covers the answer only (TRL's ``completion_only_loss``);
- dpo: preference, ``{"prompt": conversation, "chosen": [answer], "rejected": [answer]}``.

What stops the command (a ``DistillDataError``, one line naming the file and line):
a line that is empty, is not JSON or is not a row of the expected shape; no shards and
no export files; dpo on records that never called a reward model; fewer usable rows than
``min_rows``. The one damage tolerated is what a crash leaves in a records shard: a last
line without its newline that does not parse (every record is written as one write
ending in a newline). It is skipped and counted, as ``alignserve export`` does. Export
files are written whole and renamed into place, so every line there must parse.

Usable, but skipped and counted: a record with non-finite rewards (as the export skips
it), an sft answer that is empty or only whitespace, and for dpo a record without
rewards, with tied rewards or fewer than two candidates (no pair), or whose pair has the
same text on both sides.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from server.recording import SHARD_GLOB
from tools.export import PairRule, distill_row, preference_row, skip_reason

Method = Literal["sft", "dpo"]
EXPORT_FILES: dict[Method, str] = {"sft": "distill.jsonl", "dpo": "preferences.jsonl"}
# Why a usable line gave no row, as the summary says it.
SKIPPED = {
    "cut_off": "cut-off last lines",
    "non_finite": "records with non-finite rewards",
    "empty_answer": "empty answers",
    "unrewarded": "records without rewards",
    "no_pair": "records without a pair (tied rewards or one candidate)",
    "same_text": "pairs with the same text on both sides",
}


class DistillDataError(Exception):
    """The input cannot be trained on; the message is the one line the command prints."""


@dataclass
class Rows:
    source: Literal["records", "export"]
    files: list[Path]
    rows: list[dict[str, Any]] = field(default_factory=list)
    read: int = 0  # lines that parsed (records or export rows)
    skipped: Counter[str] = field(default_factory=Counter)

    def summary(self) -> str:
        kind = "records" if self.source == "records" else "rows"
        parts = [f"read {self.read} {kind} from {len(self.files)} file(s)"]
        parts += [f"skipped {n} {SKIPPED[why]}" for why, n in sorted(self.skipped.items())]
        return ", ".join(parts) + f": {len(self.rows)} training rows"


def sft_example(messages: list[dict[str, str]]) -> dict[str, Any]:
    plain = chat(messages)
    return {"prompt": plain[:-1], "completion": plain[-1:]}


def dpo_example(prompt: list[dict[str, str]], chosen: str, rejected: str) -> dict[str, Any]:
    return {
        "prompt": chat(prompt),
        "chosen": [{"role": "assistant", "content": chosen}],
        "rejected": [{"role": "assistant", "content": rejected}],
    }


def load_rows(
    directory: str | Path, method: Method, *, pairs: PairRule = "best", min_rows: int = 8
) -> Rows:
    """The training rows of ``method`` from ``directory``: records shards when it holds
    any (they are the source), else the export's file for the method."""
    path = Path(directory)
    if not path.is_dir():
        raise DistillDataError(f"{path} is not a directory (give a --record or export directory)")
    shards = sorted(path.glob(SHARD_GLOB))
    if shards:
        data = Rows("records", shards)
        for shard in shards:
            for number, record in read_jsonl(shard, tolerate_cut_off_tail=True, data=data):
                add_record(data, f"{shard}:{number}", record, method, pairs)
        if method == "dpo" and data.read and data.skipped["unrewarded"] == data.read:
            raise DistillDataError(
                f"dpo needs rewards: none of the {data.read} records in {path} called a reward "
                "model (rewarded: false, e.g. mbr or plain majority); use --method sft"
            )
    else:
        data = from_export(path, method)
    if len(data.rows) < min_rows:
        raise DistillDataError(
            f"{len(data.rows)} usable {method} rows in {path}, fewer than --min-rows {min_rows} "
            f"({data.summary()})"
        )
    return data


def from_export(path: Path, method: Method) -> Rows:
    target = path / EXPORT_FILES[method]
    if not target.is_file():
        others = [name for name in EXPORT_FILES.values() if (path / name).is_file()]
        if not others:
            raise DistillDataError(
                f"{path} holds no {SHARD_GLOB} record shards and no export files "
                f"({', '.join(EXPORT_FILES.values())})"
            )
        raise DistillDataError(f"{path} has no {target.name}, which --method {method} trains on")
    data = Rows("export", [target])
    for number, row in read_jsonl(target, tolerate_cut_off_tail=False, data=data):
        where = f"{target}:{number}"
        if method == "sft":
            add_distill_row(data, where, row)
        else:
            add_preference_row(data, where, row)
    if method == "dpo" and not data.rows and no_rewards(path / EXPORT_FILES["sft"]):
        raise DistillDataError(
            f"dpo needs rewards: {target} is empty and the searches in {path / 'distill.jsonl'} "
            "called no reward model (reward: null); use --method sft"
        )
    return data


def read_jsonl(path: Path, *, tolerate_cut_off_tail: bool, data: Rows) -> Iterator[tuple[int, Any]]:
    """(line number, parsed value) of each line. A line that is empty or does not parse
    is an error, except (when tolerated) a last line without its newline: a crash's cut."""
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            cut = not raw.endswith(b"\n")  # only a last line can lack its newline
            if not raw.strip():
                raise DistillDataError(f"{path}:{number}: empty line")
            try:
                value = json.loads(raw)
            except ValueError as exc:
                if tolerate_cut_off_tail and cut:
                    data.skipped["cut_off"] += 1
                    continue
                how = "cut off, " if cut else ""
                raise DistillDataError(f"{path}:{number}: not valid JSON ({how}{exc})") from None
            data.read += 1
            yield number, value


def add_record(data: Rows, where: str, record: Any, method: Method, pairs: PairRule) -> None:
    why = skip_reason(record)
    if why == "malformed":
        raise DistillDataError(f"{where}: not a search record (a key is missing or has a bad type)")
    if why is not None:
        data.skipped[why] += 1
        return
    if method == "sft":
        add_distill_row(data, where, distill_row(record))
    elif not record["rewarded"]:
        data.skipped["unrewarded"] += 1
    else:
        pair = preference_row(record, pairs)
        if pair is None:
            data.skipped["no_pair"] += 1
        else:
            add_preference_row(data, where, pair)


def add_distill_row(data: Rows, where: str, row: Any) -> None:
    messages: Any = row.get("messages") if isinstance(row, dict) else None
    if not is_conversation(messages) or len(messages) < 2:
        raise DistillDataError(
            f"{where}: a distill row needs messages: a conversation and an answer"
        )
    if messages[-1]["role"] != "assistant":
        raise DistillDataError(f"{where}: the last message must be the assistant's answer")
    if not messages[-1]["content"].strip():
        data.skipped["empty_answer"] += 1
        return
    data.rows.append(sft_example(messages))


def add_preference_row(data: Rows, where: str, row: Any) -> None:
    if not (
        isinstance(row, dict)
        and is_conversation(row.get("prompt"))
        and row["prompt"]
        and isinstance(row.get("chosen"), str)
        and isinstance(row.get("rejected"), str)
        and is_number(row.get("chosen_reward"))
        and is_number(row.get("rejected_reward"))
    ):
        raise DistillDataError(
            f"{where}: a preference row needs prompt (messages), chosen and rejected (text), "
            "chosen_reward and rejected_reward (finite numbers)"
        )
    if row["chosen_reward"] <= row["rejected_reward"]:
        data.skipped["no_pair"] += 1
    elif row["chosen"] == row["rejected"]:
        data.skipped["same_text"] += 1
    else:
        data.rows.append(dpo_example(row["prompt"], row["chosen"], row["rejected"]))


def chat(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    """Role and content only: one column type for every row, whatever else a row holds."""
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def is_conversation(messages: Any) -> bool:
    return isinstance(messages, list) and all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
        for m in messages
    )


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def no_rewards(distill: Path) -> bool:
    """Whether an export's distill.jsonl has rows and none of them has a reward."""
    if not distill.is_file():
        return False
    try:
        rows = [json.loads(line) for line in distill.read_text().splitlines()]
    except ValueError:
        return False
    return bool(rows) and all(isinstance(r, dict) and r.get("reward") is None for r in rows)
