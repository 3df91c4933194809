"""N2 and S4 (reviews of 2026-12-07): a step search of many steps that cannot finish
within its deadline (or its budget) answers there with its best response so far, with
text, streamed or not, where it used to hold its slot to the deadline and then answer 504
with nothing (or a 400 at a budget limit)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from typing import Any

import pytest

from search.budget import SearchLimits
from search.deadline import run_with_deadline
from search.fakes import TablePRM, TableReward, fake_context
from search.registry import parse_strategy
from search.types import Completion, SamplingConfig
from server.settings import Settings
from tests.unit.conftest import USER, make_runtime

URL = "/v1/chat/completions"


class OneTokenAtATime:
    """An engine whose every call takes ``delay_s`` and gives a one-token step "x" closed by
    the delimiter per sample, never an end: every step search runs all its rounds."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.calls = 0

    async def generate(
        self, prompt_ids: Sequence[int], params: SamplingConfig, n: int = 1
    ) -> list[Completion]:
        self.calls += 1
        await asyncio.sleep(self.delay_s)
        step = Completion(token_ids=(120,), text="x\n\n", finish_reason="stop", stop_reason="\n\n")
        return [step] * n


SEARCHES = [
    {"algorithm": "beam_search", "n": 4, "beam_width": 2},
    {"algorithm": "dvts", "n": 4, "beam_width": 2},
    {"algorithm": "particle_filtering", "n": 4},
]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("search", SEARCHES)
async def test_n2_a_tiny_step_search_answers_at_its_deadline_with_text(
    serve_app: Any, search: dict[str, Any], stream: bool
) -> None:
    engine = OneTokenAtATime(delay_s=0.05)
    runtime = make_runtime(engine, prms={"p": TablePRM({}, default=0.5)}, default_prm="p")
    options = {**search, "max_steps": 256, "timeout_s": 1}
    body = {"messages": USER, "max_tokens": 1000, "search": options, "stream": stream}
    async with serve_app(runtime, Settings()) as client:
        start = time.perf_counter()
        reply = await client.post(URL, json=body)
        elapsed = time.perf_counter() - start
    assert reply.status_code == 200, reply.text
    if stream:
        chunks = [json.loads(line[6:]) for line in reply.text.splitlines() if line[6:7] == "{"]
        assert not any("error" in c for c in chunks), reply.text[-300:]
        text = "".join(
            c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]
        )
        details = [c["search"]["details"] for c in chunks if c.get("search")]
        assert details and details[-1]["deadline_hit"] is True
    else:
        text = reply.json()["choices"][0]["message"]["content"]
        assert reply.json()["search"]["details"]["deadline_hit"] is True
    assert text.startswith("x\n\nx")
    assert elapsed < 3
    assert engine.calls < 256


@pytest.mark.parametrize("search", SEARCHES)
async def test_s4_a_step_search_at_its_budget_answers_with_its_best_so_far(
    search: dict[str, Any],
) -> None:
    strategy = parse_strategy({**search, "max_steps": 256})
    ctx = fake_context(
        OneTokenAtATime(delay_s=0.0),
        TableReward({}),
        SamplingConfig(max_tokens=1000, seed=1),
        prm=TablePRM({}, default=0.5),
    )
    ctx.limits = SearchLimits(engine_calls=12)
    result = await run_with_deadline(strategy, ctx, 10.0, "best")
    assert result.details["budget_hit"] is True
    assert result.details["budget_limit"] == "search_engine_calls"
    # The best scored so far that extends what a stream would have sent: a live path,
    # so reported as partial.
    assert result.best.text.startswith("x\n\nx\n\n") and result.best.reward == 0.5
    assert result.best.text.startswith(ctx.committed) and ctx.committed
    assert result.details["answer_was_partial"] is True
