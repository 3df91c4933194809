"""Named rewards, per-request choice and combination, rubric validation, and the report
(rewards/spec.py, rewards/choice.py), over fakes and the ASGI app."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import pytest

from rewards.choice import RequestReward, RewardOptions, RewardSet
from rewards.spec import RewardSpec, parse_specs
from search.errors import InvalidRequest, RewardUnavailable
from search.fakes import TableReward
from search.types import Message
from server.settings import Settings
from tests.unit.conftest import USER, make_runtime, scripted
from tests.unit.test_server_errors import assert_error

URL = "/v1/chat/completions"
TEXTS = ["Hello, world", "hello world", "HELLO, there", "hi there friend"]
JUDGE = {"Hello, world": 0.7, "hello world": 0.2, "HELLO, there": 0.8, "hi there friend": 0.9}
OTHER = {"Hello, world": 3.0, "hello world": -1.0, "HELLO, there": 0.0, "hi there friend": 1.0}
# lowercase is IFEval's english_lowercase: langdetect must say English ("hi" alone is not).
CHECKS = [{"type": "no_commas"}, {"type": "lowercase"}]


class RubricJudge(TableReward):
    """A judge kind: records the rubric it was given."""

    rubrics: list[str | None]

    async def score(
        self,
        conversation: Sequence[Message],
        responses: Sequence[str],
        *,
        partial: bool = False,
        rubric: str | None = None,
        token_ids: Sequence[Sequence[int]] | None = None,
    ) -> list[float]:
        self.rubrics = [*getattr(self, "rubrics", []), rubric]
        return await super().score(conversation, responses, partial=partial)


def reward_set(judge: Any = None, default: str = "judge") -> RewardSet:
    specs, _ = parse_specs(["judge", "other=remote:http://h:1"], None)
    judge = judge if judge is not None else TableReward(JUDGE, bounds=(0.0, 1.0))
    return RewardSet({"judge": judge, "other": TableReward(OTHER)}, specs, default)


# -- specs --------------------------------------------------------------------------------


def test_spec_names_and_kinds() -> None:
    assert RewardSpec.parse("judge") == RewardSpec("judge", name="judge")
    assert RewardSpec.parse("big=judge").name == "big"
    remote = RewardSpec.parse("remote:http://h:1/pooling?a=b")
    assert (remote.kind, remote.name, remote.target) == (
        "remote",
        "remote",
        "http://h:1/pooling?a=b",
    )
    judge = RewardSpec.parse("j=openai-judge:http://h:8001/v1#qwen-7b,key_env=JUDGE_KEY,mode=json")
    assert (judge.name, judge.target) == ("j", "http://h:8001/v1")
    assert judge.options == {"model": "qwen-7b", "key_env": "JUDGE_KEY", "mode": "json"}
    assert RewardSpec.parse("python:pkg.mod:fn#text").options == {"format": "text"}
    assert RewardSpec.parse("python:pkg.mod:fn").options == {"format": "conversational"}
    assert str(RewardSpec.parse("big=judge")) == "big=judge"


@pytest.mark.parametrize(
    "spec",
    [
        "classifier",
        "judge:x",
        "nope",
        "openai-judge:ftp://h",
        "openai-judge:http://h#m,api_key=SECRET",
        "openai-judge:http://h#m,mode=guess",
        "python:modonly",
        "python:m:f#yaml",
    ],
)
def test_bad_specs(spec: str) -> None:
    with pytest.raises(ValueError, match="bad reward spec"):
        RewardSpec.parse(spec)


def test_parse_specs_default_duplicates_and_constraints() -> None:
    specs, default = parse_specs(["a=judge", "b=remote:http://h"], "b")
    assert [s.name for s in specs] == ["a", "b", "constraints"] and default == "b"
    assert parse_specs([], None)[1] == "judge"
    with pytest.raises(ValueError, match="named 'a'"):
        parse_specs(["a=judge", "a=remote:http://h"], None)
    with pytest.raises(ValueError, match="names no reward"):
        parse_specs(["judge"], "other")
    with pytest.raises(ValueError, match="verifier"):
        parse_specs(["constraints=judge"], None)


def test_settings_take_several_rewards(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings(reward="judge").reward == ["judge"]
    monkeypatch.setenv("ALIGNSERVE_REWARD", '["judge", "rm=remote:http://h:1"]')
    assert Settings().reward == ["judge", "rm=remote:http://h:1"]
    with pytest.raises(ValueError, match="names no reward"):
        Settings(reward=["judge"], default_reward="rm")


# -- per-request choice -----------------------------------------------------------------


def test_no_choice_is_the_default_model_itself() -> None:
    rewards = reward_set()
    assert rewards.for_request(RewardOptions()) is rewards.models["judge"]


async def test_combination_is_the_weighted_sum_with_components() -> None:
    reward = reward_set().for_request(RewardOptions(reward={"judge": 1.0, "other": 2}))
    assert isinstance(reward, RequestReward)
    got = await reward.score(USER, TEXTS)
    assert got == pytest.approx([JUDGE[t] + 2 * OTHER[t] for t in TEXTS])
    assert reward.components_of("hi there friend") == {"judge": 0.9, "other": 1.0}
    assert reward.bounds is None  # "other" has no known range
    await reward.score(USER, ["partial text"], partial=True)
    assert reward.components_of("partial text") is None  # only complete responses


async def test_bounded_components_give_bounds() -> None:
    reward = reward_set().for_request(
        RewardOptions(reward={"judge": 2, "constraints": 1}, constraints=CHECKS)
    )
    assert reward.bounds == (0.0, 3.0)  # type: ignore[attr-defined]
    [mixed] = await reward.score(USER, ["hello world"])
    assert mixed == pytest.approx(2 * 0.2 + 1.0)


@pytest.mark.parametrize(
    ("options", "param"),
    [
        (RewardOptions(reward="nope"), "search.reward"),
        (RewardOptions(reward={"judge": 1, "nope": 1}), "search.reward"),
        (RewardOptions(reward={}), "search.reward"),
        (RewardOptions(reward={"judge": -1}), "search.reward"),
        (RewardOptions(reward={"judge": 0, "other": 0}), "search.reward"),
        (RewardOptions(reward={"judge": math.nan}), "search.reward"),
        (RewardOptions(reward="other", rubric="be kind"), "search.rubric"),
        (RewardOptions(reward="constraints"), "search.constraints"),
        (RewardOptions(reward="constraints", constraints=[{"type": "nope"}]), "search.constraints"),
    ],
)
def test_bad_choices_are_400s_naming_the_field(options: RewardOptions, param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        reward_set().for_request(options)
    assert caught.value.param is not None and caught.value.param.startswith(param)


async def test_rubric_reaches_only_the_judge_kinds() -> None:
    judge = RubricJudge(JUDGE)
    reward = reward_set(judge).for_request(
        RewardOptions(reward={"judge": 1, "other": 1}, rubric="Reward brevity.")
    )
    await reward.score(USER, ["hi there friend"])
    assert judge.rubrics == ["Reward brevity."]


def test_options_come_out_of_the_search_object() -> None:
    options: dict[str, Any] = {"algorithm": "bon", "reward": "judge", "rubric": "r", "n": 2}
    chosen = RewardOptions.pop_from(options)
    assert options == {"algorithm": "bon", "n": 2}
    assert (chosen.reward, chosen.rubric) == ("judge", "r")
    with pytest.raises(InvalidRequest, match=r"search\.rubric"):
        RewardOptions.pop_from({"rubric": "x" * 2001})


# -- through the server -----------------------------------------------------------------


def runtime(**kw: Any) -> Any:
    return make_runtime(scripted(TEXTS), TableReward(JUDGE), rewards=reward_set(), **kw)


async def test_constraints_reward_picks_a_candidate_meeting_every_check(serve_app: Any) -> None:
    search = {"n": 4, "reward": "constraints", "constraints": CHECKS, "return_candidates": True}
    async with serve_app(runtime()) as client:
        body = (await client.post(URL, json={"messages": USER, "search": search})).json()
    report = body["search"]
    assert body["choices"][0]["message"]["content"] == "hello world"  # first of two passing
    assert report["constraints"]["all_met"] == [False, True, False, True]
    assert report["constraints"]["met"][0] == [False, False]
    assert report["constraints"]["met"][2] == [False, False]
    assert report["reward"]["components"][2] == {"constraints": 0.0}
    assert [c["reward"] for c in report["candidates"]] == [0.0, 1.0, 0.0, 1.0]


async def test_combined_reward_reports_both_components(serve_app: Any) -> None:
    search = {"n": 4, "reward": {"judge": 1, "constraints": 1}, "constraints": CHECKS}
    async with serve_app(runtime()) as client:
        body = (await client.post(URL, json={"messages": USER, "search": search})).json()
    assert body["choices"][0]["message"]["content"] == "hi there friend"  # 0.9 + 1.0
    report = body["search"]
    assert report["reward"]["weights"] == {"judge": 1.0, "constraints": 1.0}
    assert report["reward"]["components"][3] == {"judge": 0.9, "constraints": 1.0}
    assert report["chosen_reward"] == pytest.approx(1.9)


async def test_unknown_reward_is_a_400_naming_the_field(serve_app: Any) -> None:
    async with serve_app(runtime()) as client:
        reply = await client.post(URL, json={"messages": USER, "search": {"reward": "gpt"}})
    assert reply.status_code == 400
    assert reply.json()["error"]["param"] == "search.reward"
    assert "judge" in reply.json()["error"]["message"]


async def test_constraints_without_the_reward_are_reported_not_optimised(serve_app: Any) -> None:
    search = {"n": 4, "constraints": CHECKS}
    async with serve_app(runtime()) as client:
        body = (await client.post(URL, json={"messages": USER, "search": search})).json()
    assert body["choices"][0]["message"]["content"] == "hi there friend"  # the judge's best
    assert body["search"]["constraints"]["all_met"] == [False, True, False, True]


class NoScore:
    bounds = None
    takes_token_ids = False

    async def score(self, *_: Any, **__: Any) -> list[float]:
        raise RewardUnavailable("the judge's reply held no score", reason="no_score")


async def test_a_reward_failure_is_a_503_counted_by_reason(serve_app: Any) -> None:
    from tests.unit.test_server_app import metric

    async with serve_app(make_runtime(reward=NoScore())) as client:
        reply = await client.post(URL, json={"messages": USER})
        text = (await client.get("/metrics")).text
    assert reply.status_code == 503 and "no score" in reply.json()["error"]["message"]
    labels = {"reason": "no_score", "reward": "judge"}  # the exposition sorts them
    assert metric(text, "alignserve_reward_failures_total", **labels) == 1.0


# -- N3: the combined reward is checked finite -------------------------------------------

HUGE = {t: 1e308 for t in TEXTS}


def huge_set() -> RewardSet:
    specs, _ = parse_specs(["judge", "other=remote:http://h:1"], None)
    return RewardSet({"judge": TableReward(HUGE), "other": TableReward(HUGE)}, specs, "judge")


@pytest.mark.parametrize("weights", [{"other": 2}, {"judge": 1, "other": 1}])
async def test_n3_an_overflowing_combined_reward_is_a_503_naming_the_reward(
    serve_app: Any, weights: dict[str, int]
) -> None:
    search = {"n": 4, "reward": weights, "return_candidates": True}
    body = {"messages": USER, "search": search}
    rt = make_runtime(scripted(TEXTS), TableReward(HUGE), rewards=huge_set())
    async with serve_app(rt) as client:
        reply = await client.post(URL, json=body)
        streamed = await client.post(URL, json={**body, "stream": True})
        text = (await client.get("/metrics")).text
    assert reply.status_code == 503, reply.text
    assert "other x" in reply.json()["error"]["message"]
    assert "not finite" in reply.json()["error"]["message"]
    assert "Infinity" not in streamed.text and "not finite" in streamed.text
    assert 'status="503"' in text
    assert not re.search(r'alignserve_requests_total\{[^}]*status="500"', text)


async def test_n6_a_rubric_counts_against_the_reward_items_it_costs(serve_app: Any) -> None:
    # The judge re-reads a rubric with every response: with 2,000 characters and 16-token
    # responses each scored response counts as 9 items, so Best-of-4 needs 36 (> 16).
    settings = Settings(max_search_reward_items=16)
    search = {"n": 4, "reward": "judge", "rubric": "Be concise. " * 166}
    body = {"messages": USER, "max_tokens": 16, "search": search}
    async with serve_app(runtime(), settings) as client:
        refused = await client.post(URL, json=body)
        short = await client.post(URL, json={**body, "search": {**search, "rubric": "Be brief."}})
    assert_error(refused, 400, "invalid_request_error", "search")
    assert "with this rubric each scored response counts as 9" in refused.json()["error"]["message"]
    assert short.status_code == 200, short.text
