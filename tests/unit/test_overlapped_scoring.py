"""Best-of-N's scoring overlapped with generation: a sample goes to the reward model as
soon as it finishes, while the others still decode (search.overlap)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import pytest

from search.bon import BestOfN
from search.context import SearchContext
from search.errors import RewardUnavailable
from search.fakes import CharTokenizer, completion_of
from search.types import Completion, SamplingConfig

PROMPT = [ord(c) for c in "<user>hi<assistant>"]


class StreamOnly:
    """A generator the searches must read through ``generate_stream``."""

    async def generate(
        self, prompt_ids: Sequence[int], params: SamplingConfig, n: int = 1
    ) -> list[Completion]:
        raise AssertionError("the streaming path is used when the generator has it")


@dataclass
class StaggeredGenerator(StreamOnly):
    """Sample i finishes ``finish_s[i]`` seconds after the call; samples that finish at
    the same time come together, as one engine step's outputs do."""

    finish_s: list[float]
    finished_at: dict[int, float] = field(default_factory=dict)
    closed: bool = False

    async def generate_stream(
        self, prompt_ids: Sequence[int], params: SamplingConfig, n: int = 1
    ) -> AsyncIterator[list[tuple[int, Completion]]]:
        assert n == len(self.finish_s)
        start = time.perf_counter()
        try:
            for at in sorted(set(self.finish_s)):
                await asyncio.sleep(max(0.0, start + at - time.perf_counter()))
                group = [i for i, t in enumerate(self.finish_s) if t == at]
                for i in group:
                    self.finished_at[i] = time.perf_counter()
                yield [(i, completion_of(f"answer {i}")) for i in group]
        finally:
            self.closed = True


@dataclass
class ClockedReward:
    """Reward = the answer's number; records when each call starts and what it holds."""

    delay_s: float = 0.05
    fail: bool = False
    calls: list[tuple[float, list[str]]] = field(default_factory=list)
    token_ids: list[list[int]] = field(default_factory=list)
    takes_token_ids = True

    async def score(self, conversation, responses, *, partial=False, token_ids=None):  # type: ignore[no-untyped-def]
        self.calls.append((time.perf_counter(), list(responses)))
        self.token_ids += [list(t) for t in token_ids or []]
        await asyncio.sleep(self.delay_s)
        if self.fail:
            raise RewardUnavailable("down")
        return [float(r.split()[-1]) for r in responses]


def context(generator: object, reward: object) -> SearchContext:
    return SearchContext(
        generator=generator,  # type: ignore[arg-type]
        reward=reward,  # type: ignore[arg-type]
        tokenizer=CharTokenizer(),
        conversation=[{"role": "user", "content": "hi"}],
        prompt_ids=PROMPT,
        sampling=SamplingConfig(max_tokens=16, seed=3),
    )


async def test_the_first_reward_call_starts_before_the_last_sample_finishes() -> None:
    gen = StaggeredGenerator([0.05, 0.3, 0.3, 0.6])
    reward = ClockedReward()
    ctx = context(gen, reward)
    result = await BestOfN(n=4).run(ctx)
    first_call = reward.calls[0][0]
    assert first_call < max(gen.finished_at.values())
    assert reward.calls[0][1] == ["answer 0"]
    # The two samples that finished together went out together.
    assert [texts for _, texts in reward.calls] == [
        ["answer 0"],
        ["answer 1", "answer 2"],
        ["answer 3"],
    ]
    # Candidates stay in sample order; the best is the highest reward.
    assert [c.text for c in result.candidates] == [f"answer {i}" for i in range(4)]
    assert result.best.text == "answer 3"
    timings = result.budget.phase_seconds
    # generate ends with the last sample; score is only the wait for the last score.
    assert timings["generate"] == pytest.approx(0.6, abs=0.1)
    assert timings["score"] == pytest.approx(0.05, abs=0.04)
    assert timings["score_overlapped"] > 0.4
    assert result.budget.engine_calls == 1 and result.budget.scored_responses == 4


async def test_each_scored_sample_carries_the_prompt_and_its_own_ids() -> None:
    reward = ClockedReward(delay_s=0)
    await BestOfN(n=2).run(context(StaggeredGenerator([0.0, 0.01]), reward))
    assert reward.token_ids == [
        PROMPT + list(completion_of(f"answer {i}").token_ids) for i in range(2)
    ]


async def test_a_generator_without_a_stream_is_scored_in_one_call() -> None:
    @dataclass
    class Plain:
        async def generate(self, prompt_ids, params, n=1):  # type: ignore[no-untyped-def]
            return [completion_of(f"answer {i}") for i in range(n)]

    reward = ClockedReward(delay_s=0)
    result = await BestOfN(n=3).run(context(Plain(), reward))
    assert [texts for _, texts in reward.calls] == [["answer 0", "answer 1", "answer 2"]]
    assert result.best.text == "answer 2"
    assert "score_overlapped" not in result.budget.phase_seconds


async def test_a_failed_score_fails_the_search_and_stops_the_generation() -> None:
    gen = StaggeredGenerator([0.0, 5.0])
    with pytest.raises(RewardUnavailable):
        await asyncio.wait_for(
            BestOfN(n=2).run(context(gen, ClockedReward(delay_s=0, fail=True))), 1.0
        )


async def test_cancelling_the_search_closes_the_stream() -> None:
    gen = StaggeredGenerator([0.0, 5.0])
    task = asyncio.ensure_future(BestOfN(n=2).run(context(gen, ClockedReward(delay_s=0))))
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert gen.closed


@dataclass
class TreeGenerator:
    """Four roots at once ("r 0".."r 3", reward = the number; "r 3" stopped early); each
    parent's children stream after ``delay_s[parent digit]`` seconds, the parent read
    from the prompt's last token: child i of "r p" is "r p p.i"."""

    delay_s: dict[str, float]
    finished_at: list[float] = field(default_factory=list)

    async def generate(
        self, prompt_ids: Sequence[int], params: SamplingConfig, n: int = 1
    ) -> list[Completion]:
        return [completion_of(f"r {i}", "stop" if i == 3 else "length") for i in range(n)]

    async def generate_stream(
        self, prompt_ids: Sequence[int], params: SamplingConfig, n: int = 1
    ) -> AsyncIterator[list[tuple[int, Completion]]]:
        if list(prompt_ids) == PROMPT:  # the roots
            yield list(enumerate(await self.generate(prompt_ids, params, n)))
            return
        parent = chr(prompt_ids[-1])
        await asyncio.sleep(self.delay_s[parent])
        self.finished_at.append(time.perf_counter())
        yield [(i, completion_of(f" {parent}.{i}", "length")) for i in range(n)]


async def test_treebon_scores_its_last_layer_as_each_child_finishes() -> None:
    """The finished root is scored while the last layer decodes, and the faster parent's
    child before the slower parent's children have finished."""
    from search.treebon import TreeBoN

    gen = TreeGenerator({"1": 0.05, "2": 0.3})
    reward = ClockedReward(delay_s=0.02)
    ctx = context(gen, reward)
    ctx.sampling = SamplingConfig(max_tokens=6, seed=3)
    result = await TreeBoN(n=4, branching=2, layers=2).run(ctx)
    calls = [texts for _, texts in reward.calls]
    # The live roots' partial scores; parents r 2 (two children) and r 1 (one). Then the
    # finished root at once, and each parent's children as they finish.
    assert calls == [["r 0", "r 1", "r 2"], ["r 3"], ["r 1 1.0"], ["r 2 2.0", "r 2 2.1"]]
    assert reward.calls[1][0] < min(gen.finished_at)  # scored while the children decode
    assert reward.calls[2][0] < max(gen.finished_at)  # before the last child finished
    assert [c.text for c in result.candidates] == ["r 3", "r 2 2.0", "r 2 2.1", "r 1 1.0"]
    assert result.best.text == "r 3"
    timings = result.budget.phase_seconds
    assert timings["score"] < 0.1 and timings["score_overlapped"] > 0.2


@dataclass
class EarlyStopGenerator(StreamOnly):
    """The first batch: sample 0 stops at once (" 9"), the others reach the cut
    ``cut_s`` later (" 1", " 2", ...); every continuation stops at once."""

    cut_s: float
    cut_at: float = 0.0

    async def generate_stream(
        self, prompt_ids: Sequence[int], params: SamplingConfig, n: int = 1
    ) -> AsyncIterator[list[tuple[int, Completion]]]:
        if list(prompt_ids) != PROMPT:
            yield [(0, completion_of(" 0", "stop"))]
            return
        yield [(0, completion_of(" 9", "stop"))]
        await asyncio.sleep(self.cut_s)
        self.cut_at = time.perf_counter()
        yield [(i, completion_of(f" {i}", "length")) for i in range(1, n)]


async def test_spec_rejection_judges_a_response_that_stopped_early_before_the_cut() -> None:
    from search.spec_rejection import SpeculativeRejection

    gen = EarlyStopGenerator(cut_s=0.2)
    reward = ClockedReward(delay_s=0.01)
    ctx = context(gen, reward)
    ctx.sampling = SamplingConfig(max_tokens=8, seed=3)
    result = await SpeculativeRejection(n=2, n_initial=4, decision_tokens=2).run(ctx)
    # " 9" is judged at once, on both rubrics (its rank score and its complete score).
    assert [texts for _, texts in reward.calls[:2]] == [[" 9"], [" 9"]]
    assert all(at < gen.cut_at for at, _ in reward.calls[:2])
    # The live ones at the cut go out as prefixes, after it.
    assert reward.calls[2][1] == [" 1", " 2", " 3"] and reward.calls[2][0] >= gen.cut_at
    assert result.best.text == " 9"
