"""Reward-tail estimators (``search.tail``) on distributions whose best-of-N expectation is
known in closed form, and ``adaptive_bon``'s stopping rule on scripted fakes.

The synthetic samples are the distributions' quantiles at plotting positions (i + 0.5)/m,
a noiseless stand-in for m draws, so the checks measure the estimators, not sampling luck.
"""

from __future__ import annotations

import math
import statistics

import pytest

from search.adaptive_bon import AdaptiveBoN
from search.context import call_seed
from search.errors import InvalidRequest
from search.fakes import ScriptedGenerator, TableReward, fake_context
from search.registry import parse_strategy
from search.tail import fit
from search.types import SamplingConfig
from tools.tail_check import empirical_best_of, error_table

M = 64
N = 16
STANDARD_NORMAL = [statistics.NormalDist().inv_cdf((i + 0.5) / M) for i in range(M)]
UNIFORM = [(i + 0.5) / M for i in range(M)]
EXPONENTIAL = [-math.log(1 - (i + 0.5) / M) for i in range(M)]
# E[max of 16]: standard normal 1.76599 (tables of normal order statistics), uniform
# 16/17, exponential the harmonic number H_16.
NORMAL_BEST_16 = 1.76599
UNIFORM_BEST_16 = N / (N + 1)
EXPONENTIAL_BEST_16 = sum(1 / k for k in range(1, N + 1))


def test_normal_estimator_recovers_normal_order_statistics() -> None:
    assert fit(STANDARD_NORMAL, "normal").expected_best_of(N) == pytest.approx(
        NORMAL_BEST_16, abs=0.03
    )
    # One sample is the mean: E[max of 1] = E[X].
    assert fit(STANDARD_NORMAL, "normal").expected_best_of(1) == pytest.approx(0, abs=1e-3)


def test_gpd_estimator_finds_a_bounded_tail_the_normal_one_overshoots() -> None:
    gpd = fit(UNIFORM, "gpd")
    normal = fit(UNIFORM, "normal")
    assert gpd.expected_best_of(N) == pytest.approx(UNIFORM_BEST_16, abs=0.01)
    assert gpd.params["xi"] < 0 and gpd.params["upper_bound"] == pytest.approx(1, abs=0.02)
    # The normal model predicts a best-of-16 above the distribution's maximum of 1.
    assert normal.expected_best_of(N) > 1.0


def test_gpd_estimator_extrapolates_an_exponential_tail() -> None:
    gpd = fit(EXPONENTIAL, "gpd")
    assert gpd.params["xi"] == pytest.approx(0, abs=0.1)
    assert gpd.expected_best_of(N) == pytest.approx(EXPONENTIAL_BEST_16, rel=0.03)
    # The normal model's thin tail underestimates it badly.
    assert fit(EXPONENTIAL, "normal").expected_best_of(N) < 0.85 * EXPONENTIAL_BEST_16


@pytest.mark.parametrize("estimator", ["normal", "gpd"])
def test_expected_gain(estimator: str) -> None:
    tail = fit(UNIFORM, estimator)  # type: ignore[arg-type]
    # Far above everything: nothing to gain. Far below: the gain is E[max of r] - best.
    assert tail.expected_gain(10.0, 4) == pytest.approx(0, abs=1e-9)
    assert tail.expected_gain(-10.0, 4) == pytest.approx(tail.expected_best_of(4) + 10.0)
    # More samples, more gain; a higher best, less.
    assert tail.expected_gain(0.8, 8) > tail.expected_gain(0.8, 4) > tail.expected_gain(0.9, 4)


@pytest.mark.parametrize("estimator", ["normal", "gpd"])
def test_equal_rewards_promise_no_gain(estimator: str) -> None:
    assert fit([0.5] * 6, estimator).expected_gain(0.5, 4) == 0.0  # type: ignore[arg-type]


def test_too_few_samples_is_an_error() -> None:
    with pytest.raises(ValueError, match="at least 4"):
        fit([0.1, 0.2, 0.3], "gpd")


def test_gpd_ties_at_the_threshold_are_not_exceedances() -> None:
    # Regression: the zero excesses of rewards tied at the threshold pushed the PWM shape
    # to its +0.5 clip and predicted a gain of 0.030 (the normal model: 0.007).
    tied = [0.5, 0.5, 0.5, 0.625]
    gpd = fit(tied, "gpd")
    assert gpd.expected_gain(0.625, 4) < 0.01
    assert gpd.params["xi"] != 0.5
    # With two distinct exceedances above a tied body the tail is fitted on them alone.
    fitted = fit([0.5, 0.5, 0.5, 0.5, 0.6, 0.8], "gpd")
    assert fitted.params["tail_mass"] == pytest.approx(2 / 6)
    assert fitted.params["threshold"] == 0.5 and fitted.params["scale"] > 0


@pytest.mark.parametrize("estimator", ["normal", "gpd", "max"])
def test_predictions_stay_inside_the_rewards_range(estimator: str) -> None:
    high = [0.9, 0.95, 0.97, 0.99]
    # Unclipped, the normal model promises a best-of-64 above the judge's maximum of 1.
    assert fit(high, "normal").expected_best_of(64) > 1.0
    clipped = fit(high, estimator, (0.0, 1.0))  # type: ignore[arg-type]
    assert 0.9 < clipped.expected_best_of(64) <= 1.0
    assert clipped.expected_gain(0.99, 4) <= 0.01


def test_max_of_m_predicts_no_gain() -> None:
    tail = fit([0.1, 0.7, 0.3], "max")
    assert tail.expected_best_of(16) == pytest.approx(0.7)
    assert tail.expected_gain(0.7, 4) == pytest.approx(0.0, abs=1e-9)


# -- the strategy ------------------------------------------------------------------------


def rising_rounds(rounds: int, size: int) -> ScriptedGenerator:
    """Round k answers texts r{k}_{j}; see RISING for their rewards."""
    return ScriptedGenerator([[f"r{k}_{j}" for j in range(size)] for k in range(rounds)])


# Each round is much better and more spread than the last: the tail keeps promising more.
RISING = {f"r{k}_{j}": float(4**k) * (1 + j) for k in range(8) for j in range(4)}


async def test_stops_after_the_first_round_when_every_candidate_scores_the_same() -> None:
    gen = ScriptedGenerator([["a", "b", "c", "d"]] * 4)
    reward = TableReward({}, default=0.7)
    ctx = fake_context(gen, reward, SamplingConfig(max_tokens=8, seed=3))
    result = await AdaptiveBoN(n=16, round_size=4).run(ctx)
    assert len(gen.calls) == 1 and len(result.candidates) == 4
    assert result.details["stopped"] == "gain_below_min"
    (only,) = result.details["rounds"]
    assert only["samples"] == 4
    assert only["expected_gain_next_round"] == pytest.approx(0, abs=1e-9)
    assert result.best.text == "a"  # ties go to the earliest
    assert ctx.budget.engine_calls == 1 and ctx.budget.reward_calls == 1


@pytest.mark.parametrize("estimator", ["normal", "gpd"])
async def test_runs_to_n_max_while_rewards_keep_rising(estimator: str) -> None:
    gen = rising_rounds(4, 4)
    ctx = fake_context(gen, TableReward(RISING), SamplingConfig(max_tokens=8, seed=3))
    result = await AdaptiveBoN(n=16, round_size=4, estimator=estimator).run(ctx)  # type: ignore[arg-type]
    assert [n for _, _, n in gen.calls] == [4, 4, 4, 4]
    assert result.details["stopped"] == "budget_spent"
    assert [r["samples"] for r in result.details["rounds"]] == [4, 8, 12, 16]
    assert all(r["expected_gain_next_round"] >= 0.01 for r in result.details["rounds"][:3])
    assert result.best.text == "r3_3" and result.best.reward == RISING["r3_3"]
    # Every round is its own engine call with its own seed.
    assert len({params.seed for _, params, _ in gen.calls}) == 4


async def test_a_small_gain_stops_it_and_the_first_round_covers_the_estimator() -> None:
    # Rewards 0.50..0.53 in one round: a predicted gain of a fraction of 0.01 at most.
    texts = ["a", "b", "c", "d"]
    table = {"a": 0.50, "b": 0.51, "c": 0.52, "d": 0.53}
    gen = ScriptedGenerator([texts] * 4)
    ctx = fake_context(gen, TableReward(table), SamplingConfig(max_tokens=8))
    result = await AdaptiveBoN(n=16, round_size=2, min_gain=0.05, estimator="gpd").run(ctx)
    assert [n for _, _, n in gen.calls] == [4]  # round_size 2, but gpd needs 4 to fit
    assert result.details["stopped"] == "gain_below_min"
    assert result.best.text == "d"


async def test_max_estimator_stops_after_the_first_round_and_bounds_reach_the_fit() -> None:
    gen = rising_rounds(4, 4)
    ctx = fake_context(gen, TableReward(RISING), SamplingConfig(max_tokens=8, seed=3))
    result = await AdaptiveBoN(n=16, estimator="max").run(ctx)
    assert len(gen.calls) == 1 and result.details["stopped"] == "gain_below_min"
    # A bounded reward clips the predicted best-of-N_max (RISING's first round: 1..4).
    gen = rising_rounds(4, 4)
    reward = TableReward(RISING, bounds=(0.0, 4.5))
    ctx = fake_context(gen, reward, SamplingConfig(max_tokens=8, seed=3))
    result = await AdaptiveBoN(n=16, min_gain=10.0).run(ctx)
    assert 4.0 < result.details["rounds"][0]["expected_best_of_n"] <= 4.5


def test_greedy_guard_counts_the_first_round() -> None:
    assert AdaptiveBoN(n=16, round_size=1, estimator="gpd").samples_per_call() == 4
    assert AdaptiveBoN(n=2, round_size=8).samples_per_call() == 2
    assert AdaptiveBoN(n=16, round_size=1, estimator="max").samples_per_call() == 1


def test_options_are_validated() -> None:
    with pytest.raises(InvalidRequest) as err:
        parse_strategy({"algorithm": "adaptive_bon", "estimator": "weibull"})
    assert err.value.param == "search.estimator"
    with pytest.raises(InvalidRequest) as err:
        parse_strategy({"algorithm": "adaptive_bon", "round_size": 0})
    assert err.value.param == "search.round_size"


# -- the offline check in the eval harness ---------------------------------------------------


def test_empirical_best_of_is_the_expected_max_of_draws_with_replacement() -> None:
    # Two values: the max of 2 draws is 0 only when both draw 0 (1/4).
    assert empirical_best_of([0.0, 1.0], 2) == pytest.approx(0.75)
    assert empirical_best_of([0.3] * 5, 16) == pytest.approx(0.3)
    assert empirical_best_of(UNIFORM, 1) == pytest.approx(statistics.fmean(UNIFORM))


def test_error_table_scores_each_estimator_against_the_target() -> None:
    rows = [
        {"target": 1.0, "predicted": {"4": {"max of m": 0.8, "gpd": 1.1}}},
        {"target": 0.5, "predicted": {"4": {"max of m": 0.5, "gpd": 0.4}}},
    ]
    summary, table = error_table(rows, 16)
    by = {s["estimator"]: s for s in summary}
    assert by["max of m"]["mae"] == pytest.approx(0.1) and by["max of m"]["bias"] == pytest.approx(
        -0.1
    )
    assert by["gpd"]["mae"] == pytest.approx(0.1) and by["gpd"]["bias"] == pytest.approx(0.0)
    assert "| 4 | gpd | 0.1000 | +0.0000 |" in table


def test_call_seeds_never_redraw_another_calls_samples() -> None:
    # vLLM seeds the samples of one request seed, seed + 1, ..., seed + n - 1. Rounds of
    # 64 samples from 100 calls must use 6,400 distinct per-sample seeds.
    for seed in (0, 1234, 2**63 - 5):
        assert call_seed(seed, 0) == seed
        per_sample = [call_seed(seed, k) + i for k in range(100) for i in range(64)]
        assert len(set(per_sample)) == len(per_sample)
        assert all(0 <= call_seed(seed, k) < 2**63 for k in range(100))
