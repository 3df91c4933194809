"""Regularised Best-of-N: ``rbon_kl`` (Jinnai et al. 2024) and ``srbon`` (Ichihara et al. 2025).

The fakes give every completion log pi_ref(y|x) = -0.1 per character (one token each), so
every per-token mean is -0.1: tests of the summed rule say ``logprob="sum"``, and tests of
the mean script completions with chosen logprobs. The conformance tests against the
papers' rules and POT are in test_algorithms_rbon_conformance.py.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from search.context import SearchContext
from search.errors import EngineUnavailable, InvalidRequest
from search.fakes import (
    FixedGenerator,
    FixedUtility,
    ScriptedGenerator,
    TableReward,
    fake_context,
)
from search.rbon_kl import RegularizedBoNKL
from search.registry import STRATEGIES, parse_strategy
from search.srbon import DEFAULT_BETA, StochasticRBoN, draw_index, kl_probabilities
from search.strategy import SearchStrategy
from search.types import Candidate, Completion, SamplingConfig, SearchResult

CONV = [{"role": "user", "content": "hi"}]
URL = "/v1/chat/completions"

# rbon_kl, summed: "short" (5 tokens, log pi_ref -0.5, R 0.5) against "a much longer answer"
# (20 tokens, log pi_ref -2.0, R 0.8). Objective 0.5 - 0.5 beta vs 0.8 - 2.0 beta:
# the longer one wins below beta = 0.2, the shorter one above.
SHORT, LONG = "short", "a much longer answer"
PAIR_REWARDS = {SHORT: 0.5, LONG: 0.8}

# srbon kl, summed: log pi_ref -0.1, -0.2, -0.3 and equal rewards, so with beta 1
# p ∝ e^-0.1, e^-0.2, e^-0.3 = 0.3672, 0.3322, 0.3006 (cumulative 0.3672, 0.6994, 1).
# random.Random(seed).random(): seed 0 -> 0.844 (ccc), 1 -> 0.134 (a), 5 -> 0.623 (bb).
ABC = ["a", "bb", "ccc"]
SKL: dict[str, Any] = {"logprob": "sum", "beta": 1.0}


def context(
    generator: Any, reward: TableReward, *, seed: int | None = None, logprobs: bool = True
) -> SearchContext:
    return fake_context(
        generator, reward, SamplingConfig(max_tokens=50, seed=seed, logprobs=logprobs), CONV
    )


class NoLogprobs:
    """An engine that ignores the logprobs request."""

    def __init__(self, texts: Sequence[str]) -> None:
        self.texts = list(texts)

    async def generate(
        self, prompt_ids: Sequence[int], params: SamplingConfig, n: int = 1
    ) -> list[Completion]:
        return [Completion(tuple(ord(ch) for ch in t), t, "stop") for t in self.texts[:n]]


async def run_texts(
    strategy: SearchStrategy, texts: Sequence[str], rewards: dict[str, float], **kw: Any
) -> SearchResult:
    gen = ScriptedGenerator([list(texts)])
    return await strategy.run(context(gen, TableReward(rewards), **kw))


def texts(cands: Sequence[Candidate]) -> list[str]:
    return [c.text for c in cands]


async def run_fixed(
    strategy: SearchStrategy,
    rows: Sequence[tuple[str, int, float]],
    rewards: dict[str, float],
    *,
    seed: int | None = None,
    utility: FixedUtility | None = None,
) -> SearchResult:
    utilities = None if utility is None else {"embedding": utility, "chrf": utility}
    sampling = SamplingConfig(max_tokens=64, seed=seed, logprobs=True)
    ctx = fake_context(FixedGenerator(rows), TableReward(rewards), sampling, CONV, utilities)
    return await strategy.run(ctx)


# (text, tokens, summed log pi_ref): per-token means -0.5, -0.2, -1.0.
MIXED = [("aaaa", 4, -2.0), ("bb", 2, -0.4), ("cccccccc", 8, -8.0)]
MIXED_REWARDS = {"aaaa": 0.6, "bb": 0.5, "cccccccc": 0.9}

# The review's example (issue 11): summed log pi_ref [-110, -120, -135, -150] against judge
# rewards [0.40, 0.55, 0.70, 0.90], 64 tokens each (cut at max_tokens), so per-token means
# -1.71875, -1.875, -2.109375, -2.34375.
REVIEW = [("w", 64, -110.0), ("x", 64, -120.0), ("y", 64, -135.0), ("z", 64, -150.0)]
REVIEW_REWARDS = {"w": 0.40, "x": 0.55, "y": 0.70, "z": 0.90}


# -- rbon_kl -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("beta", "winner"),
    [(0.0, LONG), (0.1, LONG), (0.19, LONG), (0.21, SHORT), (1.0, SHORT)],
)
async def test_rbon_kl_regularisation_flips_the_choice(beta: float, winner: str) -> None:
    strategy = RegularizedBoNKL(n=2, beta=beta, logprob="sum")
    result = await run_texts(strategy, [SHORT, LONG], PAIR_REWARDS)
    assert result.best.text == winner
    # The report shows raw rewards, not the objective.
    assert result.best.reward == PAIR_REWARDS[winner]
    assert texts(result.candidates) == [SHORT, LONG]


async def test_rbon_kl_defaults_are_the_measured_ones() -> None:
    strategy = RegularizedBoNKL()
    assert (strategy.beta, strategy.logprob) == (0.05, "mean")
    # Per-token means are equal here (-0.1), so the reward decides: 0.8 - 0.005 > 0.5 - 0.005.
    result = await run_texts(RegularizedBoNKL(n=2), [SHORT, LONG], PAIR_REWARDS)
    assert result.best.text == LONG
    assert result.details["logprob"] == "mean"
    assert result.details["ref_logprobs"] == pytest.approx([-0.1, -0.1])
    assert result.details["objective"] == pytest.approx([0.495, 0.795])


async def test_rbon_kl_ranks_by_objective_keeping_raw_rewards() -> None:
    # beta 1: "a" 0.1 - 0.1 = 0.0, "bbb" 0.9 - 0.3 = 0.6, "cc" 0.5 - 0.2 = 0.3.
    rewards = {"a": 0.1, "bbb": 0.9, "cc": 0.5}
    result = await run_texts(
        RegularizedBoNKL(n=3, beta=1.0, logprob="sum"), ["a", "bbb", "cc"], rewards
    )
    assert [(c.text, c.reward) for c in result.ranked] == [("bbb", 0.9), ("cc", 0.5), ("a", 0.1)]
    # beta 3: "a" 0.1 - 0.3 = -0.2, "bbb" 0.9 - 0.9 = 0.0, "cc" 0.5 - 0.6 = -0.1.
    result = await run_texts(
        RegularizedBoNKL(n=3, beta=3.0, logprob="sum"), ["a", "bbb", "cc"], rewards
    )
    assert texts(result.ranked) == ["bbb", "cc", "a"]
    # beta 10: "a" 0.1 - 1 = -0.9, "bbb" 0.9 - 3 = -2.1, "cc" 0.5 - 2 = -1.5.
    result = await run_texts(
        RegularizedBoNKL(n=3, beta=10.0, logprob="sum"), ["a", "bbb", "cc"], rewards
    )
    assert texts(result.ranked) == ["a", "cc", "bbb"]


async def test_rbon_kl_tie_goes_to_the_earlier_sample() -> None:
    # beta 1: 1.5 - 2.0 = -0.5 and 0.5 - 1.0 = -0.5, exactly; the earlier (longer) one wins.
    first, second = "x" * 20, "y" * 10
    result = await run_texts(
        RegularizedBoNKL(n=2, beta=1.0, logprob="sum"), [first, second], {first: 1.5, second: 0.5}
    )
    assert texts(result.ranked) == [first, second]


async def test_rbon_kl_budget() -> None:
    gen = ScriptedGenerator([["aa", "bbbb", "c"]])
    reward = TableReward({})
    result = await RegularizedBoNKL(n=3).run(context(gen, reward))
    budget = result.budget
    assert (budget.engine_calls, budget.reward_calls, budget.scored_responses) == (1, 1, 3)
    assert budget.generated_tokens == 7
    assert len(gen.calls) == 1 and gen.calls[0][2] == 3
    assert reward.calls == [(["aa", "bbbb", "c"], False)]


async def test_rbon_kl_without_logprobs_is_an_engine_fault() -> None:
    ctx = context(NoLogprobs(["a", "b"]), TableReward({}))
    with pytest.raises(EngineUnavailable) as info:
        await RegularizedBoNKL(n=2).run(ctx)
    assert "logprobs" in info.value.message
    assert info.value.status_code == 503


def test_rbon_kl_needs_logprobs_and_is_registered() -> None:
    assert RegularizedBoNKL.needs_logprobs is True
    assert STRATEGIES["rbon_kl"] is RegularizedBoNKL
    strategy = parse_strategy({"algorithm": "rbon_kl", "n": 3, "beta": 2, "logprob": "sum"})
    assert isinstance(strategy, RegularizedBoNKL)
    assert (strategy.n, strategy.beta, strategy.logprob) == (3, 2.0, "sum")


@pytest.mark.parametrize("beta", [-0.1, -1, "0.5", None, math.inf, math.nan, True])
def test_rbon_kl_bad_beta(beta: object) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_strategy({"algorithm": "rbon_kl", "beta": beta})
    assert info.value.param == "search.beta"
    assert info.value.message.startswith("invalid search.beta for rbon_kl: ")


@pytest.mark.parametrize("mode", ["max", "Sum", None, 1])
def test_rbon_kl_bad_logprob_mode(mode: object) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_strategy({"algorithm": "rbon_kl", "logprob": mode})
    assert info.value.param == "search.logprob"


@pytest.mark.parametrize(
    ("beta", "mode", "ranked"),
    [
        # mean: 0.6 - 0.5 beta, 0.5 - 0.2 beta, 0.9 - 1.0 beta.
        (0.2, "mean", ["cccccccc", "aaaa", "bb"]),  # 0.5, 0.46, 0.7
        (1.0, "mean", ["bb", "aaaa", "cccccccc"]),  # 0.1, 0.3, -0.1
        # sum: 0.6 - 2 beta, 0.5 - 0.4 beta, 0.9 - 8 beta.
        (0.2, "sum", ["bb", "aaaa", "cccccccc"]),  # 0.2, 0.42, -0.7
        (0.01, "sum", ["cccccccc", "aaaa", "bb"]),  # 0.58, 0.496, 0.82
    ],
)
async def test_rbon_kl_logprob_mode_exact(beta: float, mode: str, ranked: list[str]) -> None:
    strategy = RegularizedBoNKL(n=3, beta=beta, logprob=mode)
    result = await run_fixed(strategy, MIXED, MIXED_REWARDS)
    assert texts(result.ranked) == ranked
    expected = [-0.5, -0.2, -1.0] if mode == "mean" else [-2.0, -0.4, -8.0]
    assert result.details["ref_logprobs"] == pytest.approx(expected, rel=1e-12)


async def test_review_example_defaults_no_longer_pick_the_lowest_reward() -> None:
    # The old default (beta 0.1 on the sum): -10.6, -11.45, -12.8, -14.1, so R = 0.40 won.
    old = await run_fixed(RegularizedBoNKL(n=4, beta=0.1, logprob="sum"), REVIEW, REVIEW_REWARDS)
    assert old.best.text == "w"
    # Defaults (beta 0.05, per-token mean): 0.3140625, 0.45625, 0.59453125, 0.7828125.
    new = await run_fixed(RegularizedBoNKL(n=4), REVIEW, REVIEW_REWARDS)
    assert texts(new.ranked) == ["z", "y", "x", "w"]
    assert new.details["objective"] == pytest.approx([0.3140625, 0.45625, 0.59453125, 0.7828125])
    # srbon kl, old default (beta 1 on the sum): p(w) = 0.99995, the draw is ~always R = 0.40.
    old_p = (await run_fixed(StochasticRBoN(n=4, seed=0, **SKL), REVIEW, REVIEW_REWARDS)).details
    assert old_p["probabilities"][0] > 0.9999
    # Defaults (beta 100, per-token mean): softmax(-1.71875 + 40, -1.875 + 55,
    # -2.109375 + 70, -2.34375 + 90) = 3.6e-22, 1.0e-15, 2.6e-9, 1 - 2.6e-9.
    result = await run_fixed(StochasticRBoN(n=4, seed=0), REVIEW, REVIEW_REWARDS)
    assert result.details["probabilities"] == pytest.approx(
        [3.6033790969678427e-22, 1.0075547867870162e-15, 2.6055423109896106e-09, 1 - 2.6055e-9],
        rel=1e-6,
    )
    for seed in range(20):
        drawn = await run_fixed(StochasticRBoN(n=4, seed=seed), REVIEW, REVIEW_REWARDS)
        assert drawn.best.text != "w"


# -- conformance: the papers' rules, stated independently ----------------------------------

# Summed log pi_ref, token counts and judge rewards of four candidates.
CONF_LOGPROB = np.array([-31.0, -24.5, -40.2, -28.8])
CONF_TOKENS = np.array([40, 22, 30, 30])
CONF_REWARD = np.array([0.62, 0.35, 0.91, 0.70])
CONF_ROWS = [
    (f"t{i}", int(k), float(lp))
    for i, (k, lp) in enumerate(zip(CONF_TOKENS, CONF_LOGPROB, strict=True))
]
CONF_REWARDS = {f"t{i}": float(r) for i, r in enumerate(CONF_REWARD)}


def conf_logprob(mode: str) -> np.ndarray:
    return CONF_LOGPROB if mode == "sum" else CONF_LOGPROB / CONF_TOKENS


@pytest.mark.parametrize("mode", ["sum", "mean"])
@pytest.mark.parametrize("beta", [0.0, 0.001, 0.01, 0.03, 0.1, 0.2, 0.5, 1.0, 5.0])
async def test_rbon_kl_is_the_papers_argmax(mode: str, beta: float) -> None:
    # compute_rbon.py: argmax(R_proxy + alpha * logprob) (np.argmax: ties to the first).
    expected = int(np.argmax(CONF_REWARD + beta * conf_logprob(mode)))
    strategy = RegularizedBoNKL(n=4, beta=beta, logprob=mode)
    result = await run_fixed(strategy, CONF_ROWS, CONF_REWARDS)
    assert result.best.text == f"t{expected}"


@pytest.mark.parametrize("mode", ["sum", "mean"])
@pytest.mark.parametrize("beta", [0.5, 1.0, 5.0, 20.0, 100.0])
async def test_srbon_kl_is_the_references_distribution(mode: str, beta: float) -> None:
    # stochastic_rbon.py: pi = exp(lp - max lp) * exp(beta R) / sum(exp(lp - max lp) * exp(beta R)).
    logprob = conf_logprob(mode)
    weights = np.exp(logprob - logprob.max()) * np.exp(beta * CONF_REWARD)
    expected = weights / weights.sum()
    result = await run_fixed(
        StochasticRBoN(n=4, beta=beta, logprob=mode, seed=0), CONF_ROWS, CONF_REWARDS
    )
    assert result.details["probabilities"] == pytest.approx(expected, rel=1e-9, abs=1e-300)


# -- srbon: the probabilities and the draw -----------------------------------------------


def test_kl_probabilities_exact_two_candidates() -> None:
    # Scores -0.2 + 0 and -0.4 + 1: p = 1 / (1 + e^0.8) and e^0.8 / (1 + e^0.8).
    probs = kl_probabilities([-0.2, -0.4], [0.0, 1.0], 1.0)
    e = math.exp(0.8)
    assert probs == pytest.approx([1 / (1 + e), e / (1 + e)], rel=1e-12)
    assert probs[0] == pytest.approx(0.31002551887238755, rel=1e-12)


def test_kl_probabilities_beta_scales_the_reward() -> None:
    # Scores 0 + 2 * 0.5 = 1 and 0 + 2 * 0 = 0.
    probs = kl_probabilities([0.0, 0.0], [0.5, 0.0], 2.0)
    assert probs == pytest.approx([math.e / (1 + math.e), 1 / (1 + math.e)], rel=1e-12)


def test_kl_probabilities_stable_for_very_negative_logprobs() -> None:
    # Plain exponentials of -10000 underflow to 0 and would divide 0 by 0.
    probs = kl_probabilities([-10000.0, -10001.0, -1e9], [0.0, 0.0, 0.0], 1.0)
    assert probs[0] == pytest.approx(1 / (1 + math.exp(-1)), rel=1e-12)
    assert probs[1] == pytest.approx(math.exp(-1) / (1 + math.exp(-1)), rel=1e-12)
    assert probs[2] == 0.0
    assert sum(probs) == pytest.approx(1.0, rel=1e-15)


def test_kl_probabilities_impossible_candidates() -> None:
    assert kl_probabilities([-math.inf, -1.0], [5.0, 0.0], 1.0) == [0.0, 1.0]
    assert kl_probabilities([-math.inf, -math.inf], [0.0, 1.0], 1.0) == [0.5, 0.5]


def test_kl_probabilities_huge_beta_is_the_argmax() -> None:
    assert kl_probabilities([-0.1, -5.0, -0.3], [0.1, 0.9, 0.5], 1e6) == [0.0, 1.0, 0.0]


@pytest.mark.parametrize(
    ("u", "index"), [(0.0, 0), (0.2499, 0), (0.25, 1), (0.7499, 1), (0.75, 2), (0.9999, 2)]
)
def test_draw_index_is_the_inverse_cdf(u: float, index: int) -> None:
    assert draw_index([0.25, 0.5, 0.25], u) == index


def test_draw_index_rounding_never_lands_on_an_impossible_candidate() -> None:
    # The probabilities sum to 0.9999: the remaining mass goes to the last possible index.
    assert draw_index([0.5, 0.4999, 0.0], 0.99995) == 1
    assert draw_index([0.0, 1.0, 0.0], 0.0) == 1


# -- srbon kl ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seed", "ranked"), [(0, ["ccc", "a", "bb"]), (1, ["a", "bb", "ccc"]), (5, ["bb", "a", "ccc"])]
)
async def test_srbon_kl_exact_draw_and_ranking(seed: int, ranked: list[str]) -> None:
    result = await run_texts(StochasticRBoN(n=3, seed=seed, **SKL), ABC, {})
    # The drawn candidate first, then the rest by probability.
    assert texts(result.ranked) == ranked
    assert texts(result.candidates) == ABC


async def test_srbon_kl_is_reproducible_for_a_seed() -> None:
    rewards = {"a": 0.3, "bb": 0.6, "ccc": 0.1}
    for seed in range(20):
        first = await run_texts(StochasticRBoN(n=3, seed=seed, **SKL), ABC, rewards)
        second = await run_texts(StochasticRBoN(n=3, seed=seed, **SKL), ABC, rewards)
        assert texts(first.ranked) == texts(second.ranked)
        probs = kl_probabilities([-0.1, -0.2, -0.3], [0.3, 0.6, 0.1], 1.0)
        assert first.best.text == ABC[draw_index(probs, random.Random(seed).random())]


async def test_srbon_kl_seed_falls_back_to_the_request_seed_then_fresh() -> None:
    # Option seed wins over the request's seed.
    strategy = StochasticRBoN(n=3, **SKL)
    assert (await run_texts(StochasticRBoN(n=3, seed=1, **SKL), ABC, {}, seed=0)).best.text == "a"
    # No option seed: the request's seed.
    assert (await run_texts(strategy, ABC, {}, seed=1)).best.text == "a"
    assert (await run_texts(strategy, ABC, {}, seed=5)).best.text == "bb"
    # Neither: a fresh draw each time, so over many requests every candidate is chosen
    # (p = 0.37 / 0.33 / 0.30 here; 200 draws all missing one has odds below 1e-30).
    chosen = {(await run_texts(strategy, ABC, {})).best.text for _ in range(200)}
    assert chosen == set(ABC)


async def test_srbon_kl_huge_beta_draws_the_argmax() -> None:
    rewards = {"a": 0.1, "bb": 0.9, "ccc": 0.5}
    for seed in range(50):
        result = await run_texts(StochasticRBoN(n=3, beta=1e6, seed=seed), ABC, rewards)
        assert texts(result.ranked) == ["bb", "ccc", "a"]
        assert result.best.reward == 0.9


async def test_srbon_kl_sampled_frequency_matches_the_probabilities() -> None:
    # "ab": -0.2 + 0, "abcd": -0.4 + 1 -> p("abcd") = e^0.8 / (1 + e^0.8) = 0.68997.
    expected = math.exp(0.8) / (1 + math.exp(0.8))
    rewards = {"ab": 0.0, "abcd": 1.0}
    wins = 0
    for seed in range(2000):
        result = await run_texts(StochasticRBoN(n=2, seed=seed, **SKL), ["ab", "abcd"], rewards)
        wins += result.best.text == "abcd"
    assert abs(wins / 2000 - expected) < 0.03


@pytest.mark.parametrize(
    ("mode", "scores"),
    [
        # ("ab", 2 tokens, -1.0, R 0) and ("abcd", 4 tokens, -4.0, R 0.5), beta 2.
        ("mean", [-0.5, -1.0 + 1.0]),
        ("sum", [-1.0, -4.0 + 1.0]),
    ],
)
async def test_srbon_kl_logprob_mode_exact(mode: str, scores: list[float]) -> None:
    rows = [("ab", 2, -1.0), ("abcd", 4, -4.0)]
    strategy = StochasticRBoN(n=2, beta=2.0, logprob=mode, seed=1)
    result = await run_fixed(strategy, rows, {"ab": 0.0, "abcd": 0.5})
    diff = scores[1] - scores[0]
    expected = [1 / (1 + math.exp(diff)), math.exp(diff) / (1 + math.exp(diff))]
    details = result.details
    assert details["probabilities"] == pytest.approx(expected, rel=1e-12)
    assert (details["beta"], details["logprob"], details["draw"]) == (
        2.0,
        mode,
        0.13436424411240122,
    )
    # u = 0.134: below p("ab") for both modes (0.38 and 0.88).
    assert result.best.text == "ab"


async def test_srbon_kl_without_logprobs_is_an_engine_fault() -> None:
    ctx = context(NoLogprobs(["a", "b"]), TableReward({}))
    with pytest.raises(EngineUnavailable):
        await StochasticRBoN(n=2).run(ctx)


async def test_srbon_budget() -> None:
    gen = ScriptedGenerator([ABC])
    reward = TableReward({})
    result = await StochasticRBoN(n=3).run(context(gen, reward))
    budget = result.budget
    assert (budget.engine_calls, budget.reward_calls, budget.scored_responses) == (1, 1, 3)
    assert budget.generated_tokens == 6
    assert reward.calls == [(ABC, False)]


# -- srbon length ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("beta", "ranked"),
    [
        # R - beta / |y|: "a" 0.9 - 1 = -0.1, "abcd" 0.7 - 0.25 = 0.45, "abcdefghij" 0.6 - 0.1 = 0.5
        (1.0, ["abcdefghij", "abcd", "a"]),
        # 0.9 - 0.1 = 0.8, 0.7 - 0.025 = 0.675, 0.6 - 0.01 = 0.59
        (0.1, ["a", "abcd", "abcdefghij"]),
    ],
)
async def test_srbon_length_exact_argmax(beta: float, ranked: list[str]) -> None:
    rewards = {"a": 0.9, "abcd": 0.7, "abcdefghij": 0.6}
    strategy = StochasticRBoN(n=3, variant="length", beta=beta)
    result = await run_texts(strategy, ["a", "abcd", "abcdefghij"], rewards)
    assert texts(result.ranked) == ranked
    assert result.best.reward == rewards[ranked[0]]


async def test_srbon_length_empty_response_counts_as_one_token() -> None:
    # "" 1.0 - 2 / 1 = -1.0; "ab" 0.0 - 2 / 2 = -1.0: a tie, the earlier sample wins.
    strategy = StochasticRBoN(n=2, variant="length", beta=2.0)
    result = await run_texts(strategy, ["", "ab"], {"": 1.0, "ab": 0.0})
    assert texts(result.ranked) == ["", "ab"]


async def test_srbon_length_needs_no_logprobs_and_ignores_the_seed() -> None:
    ctx = context(NoLogprobs(["ab", "abcd"]), TableReward({"ab": 0.5, "abcd": 0.5}))
    result = await StochasticRBoN(n=2, variant="length", seed=3).run(ctx)
    assert result.best.text == "abcd"


def test_srbon_defaults_and_registry() -> None:
    strategy = parse_strategy({"algorithm": "srbon"})
    assert isinstance(strategy, StochasticRBoN)
    assert (strategy.variant, strategy.beta, strategy.seed, strategy.n) == ("kl", None, None, 4)
    assert (strategy.logprob, strategy.utility) == ("mean", "embedding")
    # beta's default depends on the variant: their scales differ.
    assert DEFAULT_BETA == {"kl": 100.0, "wd": 0.05, "length": 1.0}
    for variant, beta in DEFAULT_BETA.items():
        assert StochasticRBoN(variant=variant).effective_beta == beta
    assert StochasticRBoN(variant="wd", beta=3.0).effective_beta == 3.0
    assert StochasticRBoN.needs_logprobs is True
    assert STRATEGIES["srbon"] is StochasticRBoN


@pytest.mark.parametrize(
    ("options", "param"),
    [
        ({"beta": 0}, "search.beta"),
        ({"beta": -1.0}, "search.beta"),
        ({"beta": math.inf}, "search.beta"),
        ({"variant": "swd"}, "search.variant"),
        ({"logprob": "max"}, "search.logprob"),
        ({"utility": "bleu"}, "search.utility"),
        ({"seed": "7"}, "search.seed"),
        ({"seed": 1.5}, "search.seed"),
        ({"temperature": 1}, "search.temperature"),
    ],
)
def test_srbon_bad_options(options: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_strategy({"algorithm": "srbon", **options})
    assert info.value.param == param


# -- through the server ------------------------------------------------------------------


def body(**search: Any) -> dict[str, Any]:
    return {"model": "m", "messages": CONV, "search": search}


@pytest.mark.parametrize(("beta", "answer", "index"), [(1.0, SHORT, 0), (0.0, LONG, 1)])
async def test_http_rbon_kl_answers_with_the_rule_choice(
    serve_app: Any, runtime_of: Any, script: Any, beta: float, answer: str, index: int
) -> None:
    gen = script([SHORT, LONG])
    runtime = runtime_of(gen, TableReward(PAIR_REWARDS))
    async with serve_app(runtime) as client:
        r = await client.post(URL, json=body(algorithm="rbon_kl", n=2, beta=beta, logprob="sum"))
    assert r.status_code == 200
    data = r.json()
    assert data["choices"][0]["message"]["content"] == answer
    assert data["search"]["algorithm"] == "rbon_kl"
    assert data["search"]["chosen_index"] == index
    assert data["search"]["chosen_reward"] == PAIR_REWARDS[answer]
    # The engine was asked for the logprobs the objective needs.
    assert gen.calls[0][1].logprobs is True


async def test_http_rbon_kl_negative_beta_is_a_400(serve_app: Any) -> None:
    async with serve_app() as client:
        r = await client.post(URL, json=body(algorithm="rbon_kl", beta=-1))
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "search.beta"


async def test_http_srbon_answers_with_the_draw(
    serve_app: Any, runtime_of: Any, script: Any
) -> None:
    runtime = runtime_of(script(ABC), TableReward({}))
    async with serve_app(runtime) as client:
        by_option = await client.post(URL, json=body(algorithm="srbon", n=3, seed=5))
        by_request = await client.post(URL, json={**body(algorithm="srbon", n=3), "seed": 1})
        by_default = await client.post(URL, json=body(algorithm="srbon", n=3))
        length = await client.post(URL, json=body(algorithm="srbon", n=3, variant="length"))
    assert by_option.json()["choices"][0]["message"]["content"] == "bb"
    assert by_request.json()["choices"][0]["message"]["content"] == "a"
    # No seed anywhere: a fresh draw, so any candidate may win.
    assert by_default.json()["choices"][0]["message"]["content"] in ABC
    # Equal rewards: - 1 / |y| prefers the longest.
    assert length.json()["choices"][0]["message"]["content"] == "ccc"
    assert length.json()["search"]["chosen_index"] == 2
