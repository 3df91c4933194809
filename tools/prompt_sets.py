"""Where ``alignserve eval`` reads its prompts, and the row forms it understands.

A prompt set is a JSONL file, or the name of a dataset on the Hugging Face hub for users
who can reach it (read with ``datasets``; only the names below, with their config and
split). Third-party sets are never shipped in the repository: their files live outside it
(here ``../shared/data``, see its README) and are passed by path.

Row forms, each turned into a conversation and what the answer is checked against:

- the project's own: ``"turns"`` (first used), ``"prompt"`` or ``"messages"``, with optional
  ``"constraints"`` (rewards/constraints) and ``"answer"`` (for ``--truth math``);
- GSM8K (``openai/grade-school-math``, test.jsonl): ``"question"`` and ``"answer"``, a worked
  solution ending in ``#### <number>``; the gold answer is that number, commas removed;
- MATH-500 (PRM800K's test split): ``"problem"`` and ``"answer"`` (LaTeX), id ``"unique_id"``;
- IFEval (``input_data.jsonl``): ``"prompt"``, ``"instruction_id_list"`` and ``"kwargs"``,
  sent unchanged as the constraints reward's checks (IFEval's own form; the hub copy's
  null kwargs are dropped, as lm-eval drops them), id ``"key"``.

The math prompts get one instruction of the project's own after the problem, asking for
the final answer in ``\\boxed{}``, which math-verify reads first (rewards/math_truth.py).
Neither GSM8K's nor MATH-500's evaluation prescribes a prompt; search-and-learn's system
prompt asks for the same box.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Asks for the box math-verify reads first; the project's own words.
MATH_INSTRUCTION = "Put the final answer in \\boxed{}."
GSM8K_ANSWER_MARK = "####"


@dataclass(frozen=True)
class HubSet:
    name: str
    config: str | None
    split: str


# The hub datasets a name may stand for (the same rows as the files in ../shared/data).
HUB_SETS = {
    hub.name: hub
    for hub in (
        HubSet("openai/gsm8k", "main", "test"),
        HubSet("HuggingFaceH4/MATH-500", None, "test"),
        HubSet("google/IFEval", None, "train"),
    )
}
# --truth math with no --prompts: GSM8K's test set from the hub.
MATH_DEFAULT = "openai/gsm8k"


def read_rows(source: str | Path) -> list[dict[str, Any]]:
    """The rows of a JSONL file, or of one of ``HUB_SETS`` by name (needs the hub or its
    cache). A ValueError says what to pass instead when neither is found."""
    path = Path(source)
    if path.is_file():
        rows = []
        for index, line in enumerate(ln for ln in path.read_text("utf-8").splitlines() if ln):
            try:
                rows.append(dict(json.loads(line)))
            except (ValueError, TypeError) as exc:
                raise ValueError(f"{source}: row {index}: {exc}") from None
        return rows
    hub = HUB_SETS.get(str(source))
    if hub is None:
        raise ValueError(
            f"{source}: no such file, nor one of the hub datasets {', '.join(HUB_SETS)}"
        )
    return _hub_rows(hub)


def _hub_rows(hub: HubSet) -> list[dict[str, Any]]:
    try:
        import datasets

        data = datasets.load_dataset(hub.name, hub.config, split=hub.split)
    except Exception as exc:  # offline, no cache, no datasets: one clear message
        raise ValueError(
            f"cannot load {hub.name} from the hub ({type(exc).__name__}: {exc}); pass the "
            "data file's path instead, e.g. --prompts ../shared/data/gsm8k_test.jsonl"
        ) from None
    return [dict(row) for row in data]


def sample(count: int, size: int, seed: int) -> list[int]:
    """``size`` row indices of ``count``, drawn without replacement by ``seed``, in file
    order (a row keeps its index, so its request seed, in and out of a sample)."""
    if not 1 <= size <= count:
        raise ValueError(f"--sample must be between 1 and the {count} rows")
    return sorted(random.Random(seed).sample(range(count), size))


@dataclass(frozen=True)
class RowFields:
    """What a row asks and what its answer is checked against."""

    conversation: list[dict[str, str]]
    id: str | None
    constraints: list[Any] | None
    answer: str | None


def fields_of(row: Mapping[str, Any]) -> RowFields:
    """A row in any of the forms above (KeyError, TypeError or ValueError when it fits none)."""
    if "instruction_id_list" in row:
        checks = [
            {"instruction_id": str(i), "kwargs": _set_kwargs(kw)}
            for i, kw in zip(row["instruction_id_list"], row["kwargs"], strict=True)
        ]
        return RowFields(_user(row["prompt"]), _id(row, "key"), checks, None)
    if "question" in row and GSM8K_ANSWER_MARK in str(row.get("answer", "")):
        gold = str(row["answer"]).rsplit(GSM8K_ANSWER_MARK, 1)[1].strip().replace(",", "")
        return RowFields(_user(f"{row['question']} {MATH_INSTRUCTION}"), None, None, gold)
    if "problem" in row and "answer" in row:
        text = f"{row['problem']}\n\n{MATH_INSTRUCTION}"
        return RowFields(_user(text), _id(row, "unique_id"), None, str(row["answer"]))
    answer = row.get("answer")
    return RowFields(
        _conversation(row),
        _id(row, "question_id", "id"),
        row.get("constraints"),
        None if answer is None else str(answer),
    )


def _set_kwargs(kwargs: Mapping[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (kwargs or {}).items() if v is not None}


def _user(text: Any) -> list[dict[str, str]]:
    return [{"role": "user", "content": str(text)}]


def _id(row: Mapping[str, Any], *keys: str) -> str | None:
    return next((str(row[k]) for k in keys if row.get(k) is not None), None)


def _conversation(row: Mapping[str, Any]) -> list[dict[str, str]]:
    if "turns" in row:
        return _user(row["turns"][0])
    if "prompt" in row:
        return _user(row["prompt"])
    if "messages" in row:
        return [{"role": str(m["role"]), "content": str(m["content"])} for m in row["messages"]]
    raise ValueError("a prompt row needs 'turns', 'prompt' or 'messages'")
