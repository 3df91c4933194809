"""The cross-request reward micro-batcher, over a fake item scorer."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from typing import Any

import pytest

from rewards.batcher import MicroBatcher, ScoreItem
from search.errors import RewardUnavailable
from tests.unit.conftest import USER, make_runtime

A = [{"role": "user", "content": "a"}]
B = [{"role": "user", "content": "b"}]


class ItemTable:
    """Reward = len(response) + 100 if partial; records every batch it is sent. ``fail``:
    every call fails; a call holding a "poison" response fails too (an item the model
    cannot take, as a conversation too long for it)."""

    bounds = None
    takes_token_ids = False

    def __init__(self, delay_s: float = 0.0, fail: bool = False) -> None:
        self.batches: list[list[ScoreItem]] = []
        self.delay_s = delay_s
        self.fail = fail

    async def score_items(self, items: Sequence[ScoreItem]) -> list[float]:
        self.batches.append(list(items))
        await asyncio.sleep(self.delay_s)
        if self.fail or any(it.response == "poison" for it in items):
            raise RewardUnavailable("reward model down")
        return [len(it.response) + (100.0 if it.partial else 0.0) for it in items]

    async def score(self, conversation: Any, responses: Any, *, partial: bool = False) -> Any:
        return await self.score_items([ScoreItem(conversation, r, partial) for r in responses])


async def test_concurrent_calls_share_one_batch_and_get_their_own_results() -> None:
    inner = ItemTable()
    seen: list[tuple[int, float]] = []
    batcher = MicroBatcher(
        inner, max_batch_size=32, max_wait_ms=50, observe=lambda n, w: seen.append((n, w))
    )
    first, second = await asyncio.gather(
        batcher.score(A, ["x", "yy"]), batcher.score(B, ["zzz"], partial=True)
    )
    assert (first, second) == ([1.0, 2.0], [103.0])
    (batch,) = inner.batches
    assert [(it.conversation, it.response, it.partial) for it in batch] == [
        (A, "x", False),
        (A, "yy", False),
        (B, "zzz", True),
    ]
    assert seen[0][0] == 3 and 0 <= seen[0][1] < 1
    await batcher.aclose()


async def test_a_full_batch_goes_out_without_waiting() -> None:
    inner = ItemTable()
    batcher = MicroBatcher(inner, max_batch_size=2, max_wait_ms=10_000)
    result = await asyncio.wait_for(batcher.score(A, ["a", "bb", "ccc", "dddd"]), 5)
    assert result == [1.0, 2.0, 3.0, 4.0]
    # Two full batches; the wait never started because each filled at once.
    assert [len(b) for b in inner.batches] == [2, 2]
    await batcher.aclose()


async def test_m1_a_failed_batch_fails_only_the_caller_whose_item_fails() -> None:
    inner = ItemTable()
    batcher = MicroBatcher(inner, max_wait_ms=50)
    first, poisoned, third = await asyncio.gather(
        batcher.score(A, ["x", "yy"]),
        batcher.score(B, ["ok", "poison"]),
        batcher.score(A, ["zzz"]),
        return_exceptions=True,
    )
    assert first == [1.0, 2.0] and third == [3.0]
    assert isinstance(poisoned, RewardUnavailable)
    # The shared batch, then each caller's items on their own (concurrently: any order).
    assert [it.response for it in inner.batches[0]] == ["x", "yy", "ok", "poison", "zzz"]
    retried = sorted([it.response for it in b] for b in inner.batches[1:])
    assert retried == [["ok", "poison"], ["x", "yy"], ["zzz"]]
    await batcher.aclose()


async def test_a_failed_batch_of_one_caller_is_not_retried() -> None:
    inner = ItemTable(fail=True)
    batcher = MicroBatcher(inner, max_wait_ms=20)
    with pytest.raises(RewardUnavailable):
        await batcher.score(A, ["x", "y"])
    assert len(inner.batches) == 1
    await batcher.aclose()


async def test_a_model_that_is_down_fails_every_caller_once_retried() -> None:
    inner = ItemTable(fail=True)
    batcher = MicroBatcher(inner, max_wait_ms=50)
    results = await asyncio.gather(
        batcher.score(A, ["x"]), batcher.score(B, ["y"]), return_exceptions=True
    )
    assert all(isinstance(r, RewardUnavailable) for r in results)
    assert len(inner.batches) == 3  # the batch, then each of its two callers once
    await batcher.aclose()


class WrongLength:
    """Returns one reward too few for its first ``bad_calls`` calls, then scores right."""

    bounds = None
    takes_token_ids = False

    def __init__(self, bad_calls: int) -> None:
        self.calls = 0
        self.bad_calls = bad_calls

    async def score_items(self, items: Sequence[ScoreItem]) -> list[float]:
        self.calls += 1
        rewards = [float(len(it.response)) for it in items]
        return rewards[1:] if self.calls <= self.bad_calls else rewards


async def test_l10_a_wrong_length_result_fails_its_callers_at_once() -> None:
    # Retried per caller, and wrong again: both callers fail cleanly, promptly.
    batcher = MicroBatcher(WrongLength(bad_calls=3), max_wait_ms=50)
    results = await asyncio.wait_for(
        asyncio.gather(batcher.score(A, ["x"]), batcher.score(B, ["y"]), return_exceptions=True),
        5,
    )
    assert all(isinstance(r, RewardUnavailable) and r.reason == "bad_value" for r in results)
    # The batcher still works: the batch task died cleanly, not the worker.
    assert await asyncio.wait_for(batcher.score(A, ["abc"]), 5) == [3.0]
    await batcher.aclose()


async def test_l10_a_wrong_length_batch_is_retried_per_caller() -> None:
    batcher = MicroBatcher(WrongLength(bad_calls=1), max_wait_ms=50)
    results = await asyncio.wait_for(
        asyncio.gather(batcher.score(A, ["x"]), batcher.score(B, ["yy"])), 5
    )
    assert results == [[1.0], [2.0]]
    await batcher.aclose()


class Blocking:
    """A call that runs until cancelled, counting cancellations."""

    bounds = None
    takes_token_ids = False

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.cancelled = 0

    async def score_items(self, items: Sequence[ScoreItem]) -> list[float]:
        self.started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        return []


async def test_l2_a_dispatched_batch_is_cancelled_once_every_caller_has_gone() -> None:
    inner = Blocking()
    batcher = MicroBatcher(inner, max_wait_ms=20)
    first = asyncio.ensure_future(batcher.score(A, ["x"]))
    second = asyncio.ensure_future(batcher.score(B, ["y"]))
    await asyncio.wait_for(inner.started.wait(), 5)
    first.cancel()
    await asyncio.sleep(0.05)
    assert inner.cancelled == 0  # the second caller still waits for it
    second.cancel()
    await asyncio.sleep(0.05)
    assert inner.cancelled == 1
    assert not batcher._batches  # the batch task ended
    await batcher.aclose()


async def test_a_cancelled_caller_drops_its_items_and_others_still_get_answers() -> None:
    inner = ItemTable()
    batcher = MicroBatcher(inner, max_wait_ms=100)
    doomed = asyncio.ensure_future(batcher.score(A, ["gone"]))
    kept = asyncio.ensure_future(batcher.score(B, ["kept"]))
    await asyncio.sleep(0.01)
    doomed.cancel()
    assert await kept == [4.0]
    assert [it.response for b in inner.batches for it in b] == ["kept"]
    await batcher.aclose()


async def test_batches_overlap_instead_of_queueing_behind_each_other() -> None:
    inner = ItemTable(delay_s=0.3)
    batcher = MicroBatcher(inner, max_batch_size=1, max_wait_ms=0)
    loop = asyncio.get_running_loop()
    start = loop.time()
    await asyncio.gather(*(batcher.score(A, [str(i)]) for i in range(4)))
    # Four single-item batches of 0.3 s each, in flight together.
    assert loop.time() - start < 0.9
    await batcher.aclose()


async def test_server_batches_rewards_across_requests(serve_app: Any) -> None:
    clients = 4
    inner = ItemTable()
    runtime = make_runtime(reward=inner)
    body = {"model": "m", "messages": USER, "search": {"n": 2}}
    async with serve_app(runtime) as client:
        replies = await asyncio.gather(
            *(client.post("/v1/chat/completions", json=body) for _ in range(clients))
        )
        text = (await client.get("/metrics")).text
    assert all(r.status_code == 200 for r in replies)
    # 4 searches x 2 responses, scored in fewer batches than searches.
    assert sum(len(b) for b in inner.batches) == 2 * clients
    assert len(inner.batches) < clients
    count = re.search(r'alignserve_reward_batch_size_count\{reward="judge"\} (\S+)', text)
    assert count and float(count.group(1)) == len(inner.batches)
