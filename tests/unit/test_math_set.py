"""scripts/make_math_set.py and its output, tools/data/math_problems.jsonl: regenerating
gives the same bytes, and every answer is right (recomputed here from the stored operands)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.conftest import ROOT
from tools.evaluation import load_prompts

DATA = ROOT / "tools" / "data" / "math_problems.jsonl"
# Recomputed independently of the script's own answer_of.
FORMULAS = {
    "add": lambda a, b: a + b,
    "subtract": lambda a, b: a - b,
    "multiply": lambda a, b: a * b,
    "divide": lambda a, b: a / b,
    "add_subtract": lambda a, b, c: a + b - c,
    "multiply_add": lambda a, b, c: a * b + c,
    "add_multiply": lambda a, b, c: (a + b) * c,
    "multiply_subtract": lambda a, b, c: a * b - c,
}


def script() -> ModuleType:
    path = ROOT / "scripts" / "make_math_set.py"
    spec = importlib.util.spec_from_file_location("make_math_set", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass resolves annotations through it
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def rows() -> list[dict[str, Any]]:
    return [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines()]


def test_regenerating_gives_the_committed_bytes(tmp_path: Path) -> None:
    out = tmp_path / "math.jsonl"
    assert script().main(["--out", str(out)]) == 0
    assert out.read_bytes() == DATA.read_bytes()
    module = script()
    assert module.render(module.make_problems(seed=1)) != DATA.read_text(encoding="utf-8")


def test_size_mix_and_format(rows: list[dict[str, Any]]) -> None:
    assert len(rows) >= 200
    assert {r["steps"] for r in rows} == {1, 2}
    assert sum(r["steps"] == 2 for r in rows) >= 80
    assert [r["id"] for r in rows] == [f"math_{i}" for i in range(len(rows))]
    assert len({r["prompt"] for r in rows}) == len(rows)
    for r in rows:
        assert r["prompt"].endswith("Put the final answer in \\boxed{}.")
        assert set(r) == {"id", "prompt", "answer", "steps", "kind", "operands"}
    # Any slice mixes one- and two-step problems.
    assert {r["steps"] for r in rows[:20]} == {1, 2}


def test_answers_are_the_arithmetic_of_the_operands(rows: list[dict[str, Any]]) -> None:
    for r in rows:
        value = FORMULAS[r["kind"]](*r["operands"])
        assert value == int(value) and value > 0, r
        assert r["answer"] == str(int(value)), r
        assert r["steps"] == len(r["operands"]) - 1, r
        # Every operand appears in the text (the legs of add_multiply too).
        for operand in r["operands"]:
            assert str(operand) in r["prompt"], r


def test_the_eval_loads_it_with_answers() -> None:
    prompts = load_prompts(DATA, limit=3)
    assert [p.id for p in prompts] == ["math_0", "math_1", "math_2"]
    assert all(p.answer is not None and p.answer.isdigit() for p in prompts)
    assert prompts[0].conversation[0]["content"].endswith("\\boxed{}.")
