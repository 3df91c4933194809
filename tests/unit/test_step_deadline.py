"""N2 (review 2026-12-07): a step search of tiny steps (max_step_tokens 1) that cannot
finish within its deadline answers there with its best response so far, with text,
where it used to hold its slot to the deadline and then answer 504 with nothing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import pytest

from search.fakes import TablePRM
from search.types import Completion, SamplingConfig
from server.settings import Settings
from tests.unit.conftest import USER, make_runtime

URL = "/v1/chat/completions"


class OneTokenAtATime:
    """An engine whose every call takes ``delay_s`` and gives one token "x" per sample,
    never an end: every step search runs all its rounds."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.calls = 0

    async def generate(
        self, prompt_ids: Sequence[int], params: SamplingConfig, n: int = 1
    ) -> list[Completion]:
        self.calls += 1
        await asyncio.sleep(self.delay_s)
        return [Completion(token_ids=(120,), text="x", finish_reason="length")] * n


@pytest.mark.parametrize(
    "search",
    [
        {"algorithm": "beam_search", "n": 4, "beam_width": 2},
        {"algorithm": "dvts", "n": 4, "beam_width": 2},
        {"algorithm": "particle_filtering", "n": 4},
    ],
)
async def test_n2_a_tiny_step_search_answers_at_its_deadline_with_text(
    serve_app: Any, search: dict[str, Any]
) -> None:
    engine = OneTokenAtATime(delay_s=0.05)
    runtime = make_runtime(engine, prms={"p": TablePRM({}, default=0.5)}, default_prm="p")
    options = {**search, "max_steps": 256, "max_step_tokens": 1, "timeout_s": 1}
    body = {"messages": USER, "max_tokens": 1000, "search": options}
    async with serve_app(runtime, Settings()) as client:
        start = time.perf_counter()
        reply = await client.post(URL, json=body)
        elapsed = time.perf_counter() - start
    assert reply.status_code == 200, reply.text
    answer = reply.json()
    assert answer["choices"][0]["message"]["content"].startswith("x")
    assert answer["search"]["details"]["deadline_hit"] is True
    assert elapsed < 3
    assert engine.calls < 256
