"""Search layer: ranking, distinct selection, Best-of-N, budgets, strategy parsing."""

from __future__ import annotations

import pytest

from search.bon import BestOfN
from search.context import SearchContext
from search.errors import InvalidRequest
from search.fakes import ScriptedGenerator, TableReward, completion_of, fake_context
from search.registry import STRATEGIES, parse_strategy
from search.select import rank_candidates, top_distinct
from search.strategy import SearchStrategy
from search.types import Budget, Candidate, Completion, SamplingConfig

CONV = [{"role": "user", "content": "hi"}]


def cand(text: str, reward: float) -> Candidate:
    return Candidate(completion_of(text), reward)


def context(generator: ScriptedGenerator, reward: TableReward) -> SearchContext:
    return fake_context(generator, reward, SamplingConfig(max_tokens=50, temperature=0.7), CONV)


# -- rank_candidates ---------------------------------------------------------------------


def test_rank_orders_by_reward_descending() -> None:
    cands = [cand("a", 0.1), cand("b", 0.9), cand("c", -1.0), cand("d", 0.5)]
    assert [c.text for c in rank_candidates(cands)] == ["b", "d", "a", "c"]


def test_rank_ties_keep_generation_order() -> None:
    cands = [cand("w", 0.5), cand("x", 1.0), cand("y", 0.5), cand("z", 1.0), cand("v", 0.5)]
    assert [c.text for c in rank_candidates(cands)] == ["x", "z", "w", "y", "v"]


def test_rank_returns_the_same_objects_and_keeps_input() -> None:
    cands = [cand("a", 0.0), cand("b", 1.0)]
    ranked = rank_candidates(cands)
    assert ranked[0] is cands[1] and ranked[1] is cands[0]
    assert [c.text for c in cands] == ["a", "b"]


def test_rank_empty() -> None:
    assert rank_candidates([]) == []


# -- top_distinct ------------------------------------------------------------------------


def test_top_distinct_skips_duplicates() -> None:
    ranked = [cand("a", 3), cand("a", 2), cand("b", 1), cand("c", 0)]
    assert [(c.text, c.reward) for c in top_distinct(ranked, 3)] == [
        ("a", 3),
        ("b", 1),
        ("c", 0),
    ]


def test_top_distinct_fills_with_repeats_when_too_few_distinct() -> None:
    ranked = [cand("a", 3), cand("a", 2), cand("b", 1), cand("a", 0)]
    got = top_distinct(ranked, 4)
    assert [(c.text, c.reward) for c in got] == [("a", 3), ("b", 1), ("a", 2), ("a", 0)]
    assert [(c.text, c.reward) for c in top_distinct(ranked, 3)] == [
        ("a", 3),
        ("b", 1),
        ("a", 2),
    ]


def test_top_distinct_k_larger_than_pool_and_k_one() -> None:
    ranked = [cand("a", 1), cand("b", 0)]
    # Fewer ranked than asked for (speculative rejection ranks what finished): the best
    # ones repeat, so the client gets its n choices.
    assert [c.text for c in top_distinct(ranked, 5)] == ["a", "b", "a", "b", "a"]
    assert top_distinct([], 3) == []
    assert [c.text for c in top_distinct(ranked, 1)] == ["a"]


# -- Best-of-N ---------------------------------------------------------------------------


async def test_bon_picks_the_argmax() -> None:
    gen = ScriptedGenerator([["aa", "bbbb", "c"]])
    reward = TableReward({"aa": 0.2, "bbbb": 0.7, "c": 0.2})
    ctx = context(gen, reward)
    result = await BestOfN(n=3).run(ctx)
    assert result.best.text == "bbbb"
    assert result.best.reward == 0.7
    # Ranked best first, the tie between "aa" and "c" in generation order.
    assert [(c.text, c.reward) for c in result.ranked] == [("bbbb", 0.7), ("aa", 0.2), ("c", 0.2)]
    # Candidates stay in generation order.
    assert [c.text for c in result.candidates] == ["aa", "bbbb", "c"]
    assert result.budget is ctx.budget


async def test_bon_tie_goes_to_the_earlier_sample() -> None:
    gen = ScriptedGenerator([["x", "y", "z"]])
    result = await BestOfN(n=3).run(context(gen, TableReward({"y": 1.0, "z": 1.0})))
    assert result.best.text == "y"
    assert result.best is result.candidates[1]


async def test_bon_calls_engine_once_with_n_and_the_prompt() -> None:
    gen = ScriptedGenerator([["a", "b", "c", "d"]])
    reward = TableReward({})
    ctx = context(gen, reward)
    await BestOfN(n=4).run(ctx)
    prompt = [ord(ch) for ch in "<user>hi<assistant>"]
    assert gen.calls == [(prompt, SamplingConfig(max_tokens=50, temperature=0.7), 4)]
    assert reward.calls == [(["a", "b", "c", "d"], False)]


async def test_bon_budget_counts() -> None:
    gen = ScriptedGenerator([["aa", "bbbb", "c", "dddddd"]])
    ctx = context(gen, TableReward({}, default=0.3))
    result = await BestOfN(n=4).run(ctx)
    budget = result.budget
    assert budget.generated_tokens == 2 + 4 + 1 + 6
    assert budget.engine_calls == 1
    assert budget.reward_calls == 1
    assert budget.scored_responses == 4
    assert set(budget.phase_seconds) == {"generate", "score"}
    assert all(v >= 0.0 for v in budget.phase_seconds.values())


async def test_bon_budget_phase_time_measures_generation() -> None:
    gen = ScriptedGenerator([["a"]], delay_s=0.05)
    result = await BestOfN(n=1).run(context(gen, TableReward({})))
    assert result.budget.phase_seconds["generate"] >= 0.04
    assert result.budget.phase_seconds["score"] < 0.04


def test_budget_accumulates() -> None:
    budget = Budget()
    budget.count_generation([completion_of("abc"), completion_of("de")])
    budget.count_generation([completion_of("f")])
    budget.count_scoring(3)
    assert (budget.generated_tokens, budget.engine_calls) == (6, 2)
    assert (budget.reward_calls, budget.scored_responses) == (1, 3)
    with budget.phase("x"):
        pass
    with budget.phase("x"):
        pass
    assert list(budget.phase_seconds) == ["x"]


def test_budget_phase_records_on_exception() -> None:
    budget = Budget()
    with pytest.raises(KeyError), budget.phase("boom"):
        raise KeyError("k")
    assert "boom" in budget.phase_seconds


def test_completion_num_tokens_and_candidate_text() -> None:
    comp = Completion(token_ids=(1, 2, 3), text="xyz", finish_reason="length")
    assert comp.num_tokens == 3
    assert Candidate(comp, 0.5).text == "xyz"


async def test_base_strategy_run_is_abstract() -> None:
    with pytest.raises(NotImplementedError):
        await SearchStrategy().run(context(ScriptedGenerator([]), TableReward({})))


# -- parse_strategy ----------------------------------------------------------------------


def test_registry_knows_bon() -> None:
    assert STRATEGIES["bon"] is BestOfN
    assert all(cls.name == name for name, cls in STRATEGIES.items())


def test_parse_defaults_to_bon_with_n4() -> None:
    strategy = parse_strategy({})
    assert isinstance(strategy, BestOfN)
    assert strategy.n == 4


def test_parse_bon_with_n() -> None:
    strategy = parse_strategy({"algorithm": "bon", "n": 7})
    assert isinstance(strategy, BestOfN)
    assert strategy.n == 7


def test_parse_does_not_mutate_options() -> None:
    options = {"algorithm": "bon", "n": 2}
    parse_strategy(options)
    assert options == {"algorithm": "bon", "n": 2}


@pytest.mark.parametrize("algorithm", ["beam", "", "BON", 3, None])
def test_parse_unknown_algorithm(algorithm: object) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_strategy({"algorithm": algorithm})
    assert info.value.param == "search.algorithm"
    assert info.value.status_code == 400
    known = ", ".join(sorted(STRATEGIES))
    assert info.value.message == f"unknown search algorithm {algorithm!r}; known: {known}"


def test_parse_n_zero() -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_strategy({"algorithm": "bon", "n": 0})
    assert info.value.param == "search.n"
    assert info.value.message.startswith("invalid search.n for bon: ")


def test_parse_n_not_a_number() -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_strategy({"n": "abc"})
    assert info.value.param == "search.n"
    assert "valid integer" in info.value.message


def test_parse_unknown_option_is_named() -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_strategy({"algorithm": "bon", "width": 3})
    assert info.value.param == "search.width"
    assert "search.width" in info.value.message


def test_parse_param_prefix() -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_strategy({"n": -1}, param_prefix="opts")
    assert info.value.param == "opts.n"
    with pytest.raises(InvalidRequest) as info:
        parse_strategy({"algorithm": "x"}, param_prefix="opts")
    assert info.value.param == "opts.algorithm"


def test_strategy_is_frozen() -> None:
    strategy = parse_strategy({"n": 2})
    with pytest.raises(ValueError):
        strategy.n = 3
