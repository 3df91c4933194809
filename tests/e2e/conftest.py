"""What every e2e test shares: the served model's name and a question. The tests against
the one `make serve` server are in served/ (its fixtures are there); the files here start
servers of their own."""

from __future__ import annotations

from tests.conftest import mt_bench_prompts

MODEL = "SmolLM2-135M-Instruct"


def question(i: int = 0) -> list[dict[str, str]]:
    return [{"role": "user", "content": mt_bench_prompts()[i]}]
