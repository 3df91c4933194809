"""--prm specs, the judge as a PRM, and a request's search.prm."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from rewards.guard import TimedPRM
from rewards.judge_prm import STEP_CRITERIA, WHOLE_CRITERIA, JudgePRM
from rewards.prm_spec import PRMSpec, parse_prm_specs
from search.errors import RewardTimeout
from server.metrics import ServerMetrics
from server.settings import Settings
from tests.unit.conftest import make_runtime, serve

URL = "/v1/chat/completions"


def test_specs_parse_with_names_and_options() -> None:
    assert PRMSpec.parse("judge") == PRMSpec("judge", name="judge")
    assert PRMSpec.parse("math=prm:/models/prm") == PRMSpec("prm", "/models/prm", "math")
    spec = PRMSpec.parse("prm:Qwen/Qwen2.5-Math-PRM-7B#trust_remote_code")
    assert (spec.target, spec.trust_remote_code) == ("Qwen/Qwen2.5-Math-PRM-7B", True)
    assert PRMSpec.parse("r=prm-remote:http://h:8000").target == "http://h:8000"


@pytest.mark.parametrize(
    "spec", ["", "prm", "prm:", "prm:x#other", "prm-remote:h:8000", "judge:x", "remote:http://h"]
)
def test_bad_specs_are_refused(spec: str) -> None:
    with pytest.raises(ValueError, match="PRM spec"):
        PRMSpec.parse(spec)


def test_default_and_duplicates() -> None:
    specs, default = parse_prm_specs(["judge", "b=prm-remote:http://h"], None)
    assert default == "judge" and [s.name for s in specs] == ["judge", "b"]
    assert parse_prm_specs(["judge", "b=prm-remote:http://h"], "b")[1] == "b"
    assert parse_prm_specs([], None) == ([], None)
    with pytest.raises(ValueError, match="named 'judge'"):
        parse_prm_specs(["judge", "judge"], None)
    with pytest.raises(ValueError, match="names no PRM"):
        parse_prm_specs(["judge"], "other")


def test_settings_take_prm_specs(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().prm == ["judge"]
    monkeypatch.setenv("ALIGNSERVE_PRM", '["judge", "r=prm-remote:http://h"]')
    assert Settings().prm == ["judge", "r=prm-remote:http://h"]
    with pytest.raises(ValueError, match="PRM spec"):
        Settings(prm=["nonsense"])


class RecordingJudge:
    takes_token_ids = True

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    async def score(
        self, conversation: Sequence[Any], responses: Sequence[str], **options: Any
    ) -> list[float]:
        self.calls.append({"responses": list(responses), **options})
        return [0.25 * (i + 1) for i in range(len(responses))]


async def test_judge_prm_rates_the_joined_steps_by_the_step_criterion() -> None:
    judge = RecordingJudge()
    prm = JudgePRM(judge)
    scores = await prm.score_last_steps(
        [{"role": "user", "content": "q"}],
        [["a\n\n", "b"], ["c"], ["d\n\n", "e"]],
        token_ids=[[1, 2, 3], [1, 4], [1, 5]],
    )
    # A response of several steps: its last step; one given as one step (a first step,
    # or aggregation "model"): the whole of it.
    assert scores == [0.25, 0.25, 0.5]
    assert judge.calls == [
        {
            "responses": ["a\n\nb", "d\n\ne"],
            "partial": False,
            "rubric": STEP_CRITERIA,
            "token_ids": [[1, 2, 3], [1, 5]],
        },
        {
            "responses": ["c"],
            "partial": False,
            "rubric": WHOLE_CRITERIA,
            "token_ids": [[1, 4]],
        },
    ]


async def test_search_prm_is_refused_on_a_search_without_steps() -> None:
    async with serve(make_runtime()) as client:
        r = await client.post(
            URL,
            json={"messages": [{"role": "user", "content": "hi"}], "search": {"prm": "judge"}},
        )
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == "search.prm"


class SlowPRM:
    bounds = (0.0, 1.0)
    takes_token_ids = False

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s

    async def score_last_steps(
        self, conversation: Sequence[Any], steps: Sequence[Sequence[str]], **_: Any
    ) -> list[float]:
        await asyncio.sleep(self.delay_s)
        return [0.5] * len(steps)


async def test_timed_prm_answers_within_its_timeout_and_counts_a_timeout() -> None:
    metrics = ServerMetrics()
    fast = TimedPRM(SlowPRM(0.0), metrics.reward_observers("prm:x"), timeout_s=1.0)
    assert fast.bounds == (0.0, 1.0) and not fast.takes_token_ids
    assert await fast.score_last_steps([], [["a"], ["b"]]) == [0.5, 0.5]
    slow = TimedPRM(SlowPRM(5.0), metrics.reward_observers("prm:x"), timeout_s=0.05)
    with pytest.raises(RewardTimeout, match="process reward model"):
        await slow.score_last_steps([], [["a"]])
    assert metrics.reward_failures.labels("prm:x", "timeout")._value.get() == 1
