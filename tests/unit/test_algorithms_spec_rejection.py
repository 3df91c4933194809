"""``spec_rejection`` (see prefix_fakes.py for how the fakes read)."""

from __future__ import annotations

import pytest

from search.errors import InvalidRequest
from search.fakes import PromptTableGenerator, TableReward
from search.registry import parse_strategy
from search.spec_rejection import SpeculativeRejection, survivors_count
from tests.unit.prefix_fakes import ROOTS, P, context


def test_survivors_round_up_and_keep_at_least_one() -> None:
    assert [survivors_count(m, 0.5) for m in (1, 2, 3, 4, 8)] == [1, 1, 2, 2, 4]
    assert survivors_count(5, 0.0) == 5
    assert survivors_count(5, 0.9) == 1


# -- spec_rejection ------------------------------------------------------------------
async def test_spec_rejection_cuts_live_and_finished_together() -> None:
    # n 2 -> 4 started, decision every 2 tokens. Partial: aa .1, bb .9, c .6, dd .5:
    # keep ceil(0.5 * 4) = 2 -> bb (live) and c (finished). bb continues to "bb11".
    gen = PromptTableGenerator({**ROOTS, P + "bb": ["11"]})
    reward = TableReward({"aa": 0.1, "bb": 0.9, "c": 0.6, "dd": 0.5, "bb11": 0.4})
    result = await SpeculativeRejection(n=2, decision_tokens=2).run(
        context(gen, reward, max_tokens=4)
    )
    assert [c.text for c in result.candidates] == ["bb11", "c"]
    assert result.best.text == "c"
    assert [(p, m, n) for p, m, _, n in gen.calls] == [(P, 2, 4), (P + "bb", 2, 1)]
    assert reward.calls == [(["aa", "bb", "c", "dd"], True), (["bb11", "c"], False)]
    assert result.details["rounds"] == [
        {"tokens": 2, "pool": 4, "kept": 2, "partial_rewards": [0.1, 0.9, 0.6, 0.5]}
    ]
    b = result.budget
    assert (b.generated_tokens, b.engine_calls, b.reward_calls) == (7 + 2, 2, 2)


# max 6, decision 2: 4 roots -> keep 2 (bb, dd) -> both +2 -> keep 1 (dd33) -> +2.
REPEATS = {
    P: ["aaXXXX", "bbYYYY", "ccWWWW", "ddZZZZ"],
    P + "bb": ["11XX"],
    P + "dd": ["33XX"],
    P + "dd33": ["44XX"],
}
REPEATS_REWARDS = {"bb": 0.9, "dd": 0.8, "bb11": 0.2, "dd33": 0.7, "dd3344": 0.5}


async def test_spec_rejection_repeats_until_every_survivor_finishes() -> None:
    reward = TableReward(REPEATS_REWARDS)
    result = await SpeculativeRejection(n=2, decision_tokens=2).run(
        context(PromptTableGenerator(REPEATS), reward, max_tokens=6)
    )
    assert [c.text for c in result.candidates] == ["dd3344"]
    assert [r["kept"] for r in result.details["rounds"]] == [2, 1]
    assert result.budget.generated_tokens == 8 + 4 + 2  # far below 4 x 6
    assert result.budget.engine_calls == 4


async def test_spec_rejection_commits_the_text_of_its_last_survivor() -> None:
    # As above: no common prefix while bb and dd both survive; once dd33 alone survives,
    # its text is final, and then its continuation.
    ctx = context(PromptTableGenerator(REPEATS), TableReward(REPEATS_REWARDS), max_tokens=6)
    commits: list[str] = []
    ctx.on_commit = commits.append
    result = await SpeculativeRejection(n=2, decision_tokens=2).run(ctx)
    assert commits == ["dd33", "dd3344"] and result.best.text == "dd3344"


async def test_spec_rejection_defaults_follow_n_and_max_tokens() -> None:
    strategy = SpeculativeRejection(n=3)
    assert (strategy.initial(), strategy.step(256), strategy.step(3)) == (6, 64, 1)


@pytest.mark.parametrize(
    ("options", "param"),
    [
        ({"n": 4, "n_initial": 3}, "search.n_initial"),
        ({"alpha": 1.0}, "search.alpha"),
        ({"alpha": -0.1}, "search.alpha"),
        ({"decision_tokens": 0}, "search.decision_tokens"),
    ],
)
def test_spec_rejection_validation_names_the_field(options: dict[str, object], param: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_strategy({"algorithm": "spec_rejection", **options})
    assert info.value.param == param
