"""Write tools/data/math_problems.jsonl: arithmetic word problems with a checkable answer.

Ground truth for ``alignserve eval --truth math`` (answers checked with rewards/math_truth):
one- and two-step problems on small numbers (buy some more; give some away; so many bags of
so many; share equally; buy then give away; bags plus loose ones; buy two kinds then count
their legs; bake trays then eat some), within reach of a 135M chat model sometimes, not
always. Each line:

    {"id": "math_0", "prompt": "... Put the final answer in \\boxed{}.", "answer": "12",
     "steps": 1, "kind": "add", "operands": [7, 5]}

``kind`` and ``operands`` let a test recompute every answer. Deterministic: the same seed
writes the same bytes.

    .venv/bin/python scripts/make_math_set.py [--seed 0] [--per-kind 32] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "tools" / "data" / "math_problems.jsonl"
INSTRUCTION = "Put the final answer in \\boxed{}."

NAMES = ["Tom", "Anna", "Ben", "Mia", "Sam", "Lily", "Omar", "Zoe", "Raj", "Ella", "Leo", "Ivy"]
FRIENDS = ["his sister", "a friend", "her brother", "a neighbour", "the teacher", "a classmate"]
ITEMS = ["apples", "pencils", "marbles", "stickers", "cookies", "cards", "books", "shells"]
CONTAINERS = ["bags", "boxes", "packs", "jars", "baskets"]
ANIMALS = [("chickens", 2), ("cows", 4), ("ducks", 2), ("dogs", 4), ("spiders", 8)]


@dataclass(frozen=True)
class Kind:
    """A problem template: how to draw its operands, its text and its answer."""

    name: str
    steps: int
    draw: Callable[[random.Random], list[int]]
    text: Callable[[dict[str, str], list[int]], str]


def answer_of(kind: str, operands: Sequence[int]) -> int:
    """The answer from the operands: what the test recomputes the stored answers with."""
    a, b, *rest = operands
    c = rest[0] if rest else 0
    formulas = {
        "add": a + b,
        "subtract": a - b,
        "multiply": a * b,
        "divide": a // b,
        "add_subtract": a + b - c,
        "multiply_add": a * b + c,
        "add_multiply": (a + b) * c,
        "multiply_subtract": a * b - c,
    }
    return formulas[kind]


def _divide(rng: random.Random) -> list[int]:
    each, people = rng.randint(2, 9), rng.randint(2, 6)
    return [each * people, people]  # divides evenly


def _add_subtract(rng: random.Random) -> list[int]:
    a, b = rng.randint(3, 20), rng.randint(2, 15)
    return [a, b, rng.randint(1, a + b - 1)]


def _multiply_subtract(rng: random.Random) -> list[int]:
    a, b = rng.randint(2, 9), rng.randint(2, 9)
    return [a, b, rng.randint(1, a * b - 1)]


KINDS = [
    Kind(
        "add",
        1,
        lambda r: [r.randint(2, 30), r.randint(2, 30)],
        lambda w, o: (
            f"{w['name']} has {o[0]} {w['item']} and buys {o[1]} more. "
            f"How many {w['item']} does {w['name']} have now?"
        ),
    ),
    Kind(
        "subtract",
        1,
        lambda r: (lambda a: [a, r.randint(1, a - 1)])(r.randint(5, 40)),
        lambda w, o: (
            f"{w['name']} has {o[0]} {w['item']} and gives {o[1]} of them to "
            f"{w['friend']}. How many {w['item']} does {w['name']} have left?"
        ),
    ),
    Kind(
        "multiply",
        1,
        lambda r: [r.randint(2, 9), r.randint(2, 9)],
        lambda w, o: (
            f"{w['name']} buys {o[0]} {w['container']} with {o[1]} {w['item']} in "
            f"each. How many {w['item']} does {w['name']} buy?"
        ),
    ),
    Kind(
        "divide",
        1,
        _divide,
        lambda w, o: (
            f"{w['name']} shares {o[0]} {w['item']} equally among {o[1]} friends. "
            f"How many {w['item']} does each friend get?"
        ),
    ),
    Kind(
        "add_subtract",
        2,
        _add_subtract,
        lambda w, o: (
            f"{w['name']} has {o[0]} {w['item']}, buys {o[1]} more, and then gives "
            f"{o[2]} to {w['friend']}. How many {w['item']} does {w['name']} have now?"
        ),
    ),
    Kind(
        "multiply_add",
        2,
        lambda r: [r.randint(2, 9), r.randint(2, 9), r.randint(1, 12)],
        lambda w, o: (
            f"{w['name']} has {o[0]} {w['container']} of {w['item']} with {o[1]} in "
            f"each, and {o[2]} loose {w['item']}. How many {w['item']} does {w['name']} have "
            "in all?"
        ),
    ),
    Kind(
        "add_multiply",
        2,
        lambda r: [r.randint(1, 9), r.randint(1, 9), 0],  # legs: set by the animal drawn
        lambda w, o: (
            f"A farm has {o[0]} {w['animal']} in one field and {o[1]} in another. "
            f"Each of the {w['animal']} has {o[2]} legs. How many legs do they have in total?"
        ),
    ),
    Kind(
        "multiply_subtract",
        2,
        _multiply_subtract,
        lambda w, o: (
            f"{w['name']} bakes {o[0]} trays of cookies with {o[1]} cookies on each "
            f"tray and eats {o[2]} of them. How many cookies are left?"
        ),
    ),
]


def words(rng: random.Random) -> dict[str, str]:
    return {
        "name": rng.choice(NAMES),
        "friend": rng.choice(FRIENDS),
        "item": rng.choice(ITEMS),
        "container": rng.choice(CONTAINERS),
        "animal": rng.choice([a for a, _ in ANIMALS]),
    }


def make_problems(seed: int = 0, per_kind: int = 32) -> list[dict[str, Any]]:
    """``per_kind`` distinct problems of every kind, shuffled together (so any slice of the
    file mixes one- and two-step problems), numbered in file order."""
    rng = random.Random(seed)
    drawn: list[tuple[Kind, str, list[int]]] = []
    seen: set[str] = set()
    for kind in KINDS:
        count = 0
        while count < per_kind:
            w = words(rng)
            operands = kind.draw(rng)
            if kind.name == "add_multiply":  # the legs follow the animal
                operands[2] = dict(ANIMALS)[w["animal"]]
            text = f"{kind.text(w, operands)} {INSTRUCTION}"
            if text not in seen:
                seen.add(text)
                drawn.append((kind, text, operands))
                count += 1
    rng.shuffle(drawn)
    return [
        {
            "id": f"math_{i}",
            "prompt": text,
            "answer": str(answer_of(kind.name, operands)),
            "steps": kind.steps,
            "kind": kind.name,
            "operands": operands,
        }
        for i, (kind, text, operands) in enumerate(drawn)
    ]


def render(problems: Sequence[dict[str, Any]]) -> str:
    return "".join(json.dumps(p, ensure_ascii=True) + "\n" for p in problems)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-kind", type=int, default=32, help="problems of each of 8 kinds")
    parser.add_argument("--out", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    problems = make_problems(args.seed, args.per_kind)
    args.out.write_text(render(problems), encoding="utf-8")
    print(f"wrote {len(problems)} problems to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
