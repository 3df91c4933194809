"""Minimum-Bayes-risk selection: ``rbon_wd`` (Jinnai et al. 2024, MBR-BoN) and ``mbr``.

The fake utility is WordOverlapUtility: U = |words_i & words_j| / |words_i | words_j|.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from types import SimpleNamespace
from typing import Any

import pytest

from search.bon import BestOfN
from search.context import SearchContext
from search.errors import EngineUnavailable, InvalidRequest
from search.fakes import (
    FixedGenerator,
    ScriptedGenerator,
    TableReward,
    WordOverlapUtility,
    fake_context,
)
from search.mbr import MinimumBayesRisk
from search.protocols import Utility
from search.rbon_wd import RegularizedBoNWD, mean_utility
from search.registry import STRATEGIES, parse_strategy
from search.strategy import SearchStrategy
from search.types import Candidate, SamplingConfig, SearchResult

CONV = [{"role": "user", "content": "hi"}]

# rbon_wd: A and B share "the cat" (2 of 4 distinct words: U = 0.5); C shares nothing.
#   U = [[1, .5, 0], [.5, 1, 0], [0, 0, 1]]
#   (1/N) sum_j U, self included: A 1.5/3 = 0.5, B 0.5, C 1/3.
# Rewards A 0.5, B 0.6, C 0.9. Objective R + beta * mbr:
#   beta 0: A 0.5, B 0.6, C 0.9                -> C (BoN's choice)
#   beta 1: A 1.0, B 1.1, C 0.9 + 1/3 = 1.2333 -> C
#   beta 2: A 1.5, B 1.6, C 0.9 + 2/3 = 1.5667 -> B (the consensus pair wins)
# B overtakes C where 0.6 + beta/2 = 0.9 + beta/3, i.e. beta = 1.8.
A, B, C = "the cat sat", "the cat ran", "dogs bark loudly"
ABC_REWARDS = {A: 0.5, B: 0.6, C: 0.9}

# mbr: D shares nothing; among the cats
#   U(C1, C2) = |{cats, meow}| / |{cats, meow, loudly}| = 2/3
#   U(C1, C3) = |{cats}| / |{cats, meow, loudly, purr}| = 1/4
#   U(C2, C3) = |{cats}| / |{cats, meow, purr}| = 1/3
# score_i = (1/3) sum_{j != i} U:
#   D 0, C1 (2/3 + 1/4)/3 = 11/36, C2 (2/3 + 1/3)/3 = 1/3, C3 (1/4 + 1/3)/3 = 7/36
D, C1, C2, C3 = "dogs bark", "cats meow loudly", "cats meow", "cats purr"
CATS = [D, C1, C2, C3]


def context(
    generator: Any, reward: TableReward, utilities: Mapping[str, Utility] | None = None
) -> SearchContext:
    return fake_context(generator, reward, SamplingConfig(max_tokens=50), CONV, utilities)


async def run_texts(
    strategy: SearchStrategy,
    texts: Sequence[str],
    rewards: Mapping[str, float] | None = None,
    utilities: Mapping[str, Utility] | None = None,
) -> SearchResult:
    gen = ScriptedGenerator([list(texts)])
    return await strategy.run(context(gen, TableReward(rewards or {}), utilities))


def texts(cands: Sequence[Candidate]) -> list[str]:
    return [c.text for c in cands]


class FixedUtility:
    """A fixed matrix, to check which way round rows and columns are read."""

    def __init__(self, matrix: list[list[float]]) -> None:
        self.value = matrix

    async def matrix(self, texts: Sequence[str]) -> list[list[float]]:
        assert len(texts) == len(self.value)
        return self.value


# -- the pure function -------------------------------------------------------------------


def test_mean_utility_with_and_without_self() -> None:
    matrix = [[1.0, 0.5, 0.0], [0.25, 1.0, 0.75], [0.0, 0.0, 0.0]]
    assert mean_utility(matrix, exclude_self=False) == [0.5, 2.0 / 3.0, 0.0]
    assert mean_utility(matrix, exclude_self=True) == [0.25, 0.5, 0.0]
    assert mean_utility([[1.0]], exclude_self=False) == [1.0]
    assert mean_utility([[1.0]], exclude_self=True) == [0.0]


# -- rbon_wd -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("beta", "ranked"),
    [
        (0.0, [C, B, A]),
        (1.0, [C, B, A]),
        (1.7, [C, B, A]),  # C 0.9 + 1.7/3 = 1.4667, B 0.6 + 0.85 = 1.45, A 1.35
        (1.9, [B, C, A]),  # B 0.6 + 0.95 = 1.55, C 0.9 + 1.9/3 = 1.5333, A 1.45
        (2.0, [B, C, A]),  # B 1.6, C 1.5667, A 1.5
        (10.0, [B, A, C]),  # B 5.6, A 5.5, C 0.9 + 3.3333 = 4.2333
    ],
)
async def test_rbon_wd_regularisation_flips_to_the_consensus(
    beta: float, ranked: list[str]
) -> None:
    result = await run_texts(RegularizedBoNWD(n=3, beta=beta), [A, B, C], ABC_REWARDS)
    assert texts(result.ranked) == ranked
    # The report shows raw rewards, not the objective.
    assert result.best.reward == ABC_REWARDS[ranked[0]]
    assert texts(result.candidates) == [A, B, C]


async def test_rbon_wd_default_beta_and_details() -> None:
    strategy = RegularizedBoNWD(n=3)
    assert (strategy.beta, strategy.utility) == (1.0, "embedding")
    result = await run_texts(strategy, [A, B, C], ABC_REWARDS)
    assert result.best.text == C
    details = result.details
    assert details["utility"] == "embedding"
    assert details["mbr_scores"] == pytest.approx([0.5, 0.5, 1 / 3], abs=1e-12)
    assert details["objective"] == pytest.approx([1.0, 1.1, 0.9 + 1 / 3], abs=1e-12)
    assert all(type(x) is float for x in details["mbr_scores"] + details["objective"])
    assert json.loads(json.dumps(details)) == details


@pytest.mark.parametrize(
    "rewards",
    [ABC_REWARDS, {A: 0.9, B: 0.1, C: 0.2}, {A: 0.1, B: 0.7, C: 0.7}, {}],
)
async def test_rbon_wd_beta_zero_is_bon(rewards: dict[str, float]) -> None:
    wd = await run_texts(RegularizedBoNWD(n=3, beta=0.0), [A, B, C], rewards)
    bon = await run_texts(BestOfN(n=3), [A, B, C], rewards)
    assert texts(wd.ranked) == texts(bon.ranked)


@pytest.mark.parametrize(
    ("order", "ranked"),
    [
        # T1 = "a b" and T2 = "a b c d" share 2 of 4 words (0.5); T3, T4 share nothing.
        # (1/4) sum_j U: T1 (1 + .5)/4 = .375, T2 .375, T3 .25, T4 .25 (all exact in binary).
        # beta 1, rewards T3 .5, T1 .375: T3 .5 + .25 = .75 = T1 .375 + .375, a tie.
        (["e f g h", "a b", "a b c d", "x"], ["e f g h", "a b", "a b c d", "x"]),
        (["a b", "e f g h", "a b c d", "x"], ["a b", "e f g h", "a b c d", "x"]),
    ],
)
async def test_rbon_wd_tie_goes_to_the_earlier_sample(order: list[str], ranked: list[str]) -> None:
    rewards = {"e f g h": 0.5, "a b": 0.375}
    result = await run_texts(RegularizedBoNWD(n=4, beta=1.0), order, rewards)
    assert texts(result.ranked) == ranked
    objective = dict(zip(order, result.details["objective"], strict=True))
    assert objective == {"e f g h": 0.75, "a b": 0.75, "a b c d": 0.375, "x": 0.25}


async def test_rbon_wd_budget_and_calls() -> None:
    gen = ScriptedGenerator([[A, B, C]])
    reward = TableReward(ABC_REWARDS)
    embedding, chrf = WordOverlapUtility(), WordOverlapUtility()
    ctx = context(gen, reward, {"embedding": embedding, "chrf": chrf})
    result = await RegularizedBoNWD(n=3, utility="chrf").run(ctx)
    budget = result.budget
    assert (budget.engine_calls, budget.reward_calls, budget.scored_responses) == (1, 1, 3)
    assert budget.generated_tokens == len(A) + len(B) + len(C) == 38
    assert len(gen.calls) == 1 and gen.calls[0][2] == 3
    assert gen.calls[0][1].logprobs is False and RegularizedBoNWD.needs_logprobs is False
    assert reward.calls == [([A, B, C], False)]
    # The named utility, once, over all candidates; the other is untouched.
    assert chrf.calls == [[A, B, C]] and embedding.calls == []
    assert set(budget.phase_seconds) == {"generate", "score", "utility"}
    assert result.details["utility"] == "chrf"


async def test_rbon_wd_reads_rows_as_hypotheses() -> None:
    # Row means (self included): 1.9/2 = .95 and 1.0/2 = .5; column means .5 and .95.
    utility = FixedUtility([[1.0, 0.9], [0.0, 1.0]])
    result = await run_texts(
        RegularizedBoNWD(n=2), ["x", "y"], {"x": 0.0, "y": 0.4}, {"embedding": utility}
    )
    # x: 0 + .95, y: .4 + .5 = .9.
    assert texts(result.ranked) == ["x", "y"]
    assert result.details["mbr_scores"] == pytest.approx([0.95, 0.5])


async def test_rbon_wd_missing_utility_fails_before_the_engine_runs() -> None:
    gen = ScriptedGenerator([[A, B]])
    with pytest.raises(EngineUnavailable) as info:
        await RegularizedBoNWD(n=2).run(context(gen, TableReward({}), {}))
    assert "'embedding'" in info.value.message
    assert gen.calls == []


# -- mbr ---------------------------------------------------------------------------------


async def test_mbr_exact_selection_and_details() -> None:
    reward = TableReward({D: 1.0})
    gen = ScriptedGenerator([list(CATS)])
    result = await MinimumBayesRisk(n=4).run(context(gen, reward))
    assert texts(result.ranked) == [C2, C1, C3, D]
    assert result.details["utility"] == "embedding"
    assert result.details["mbr_scores"] == pytest.approx([0.0, 11 / 36, 1 / 3, 7 / 36], abs=1e-12)
    assert json.loads(json.dumps(result.details)) == result.details
    # No reward model: never called, every reward 0.0 whatever the table says.
    assert reward.calls == []
    assert [c.reward for c in result.candidates] == [0.0] * 4


async def test_mbr_tie_goes_to_the_earlier_sample() -> None:
    # "paris is the capital" and "the capital is paris" are the same word set (U = 1);
    # "paris" shares 1 of 4 words with each (U = 1/4); "i like turtles" shares nothing.
    # Scores: (1 + 1/4 + 0)/3 each for the first two (tie), (1/4 + 1/4)/3 for "paris", 0.
    order = ["i like turtles", "the capital is paris", "paris is the capital", "paris"]
    result = await run_texts(MinimumBayesRisk(n=4), order)
    assert texts(result.ranked) == [order[1], order[2], order[3], order[0]]
    assert result.details["mbr_scores"] == pytest.approx([0.0, 1.25 / 3, 1.25 / 3, 0.5 / 3])


async def test_mbr_reads_rows_as_hypotheses_and_leaves_out_self() -> None:
    # Off-diagonal row means .9, .1, .1 (column means .1, .5, .5). A huge diagonal on
    # the last row would win if the self-term counted.
    utility = FixedUtility([[1.0, 0.9, 0.9], [0.1, 1.0, 0.1], [0.1, 0.1, 100.0]])
    result = await run_texts(MinimumBayesRisk(n=3), ["x", "y", "z"], None, {"embedding": utility})
    assert texts(result.ranked) == ["x", "y", "z"]
    assert result.details["mbr_scores"] == pytest.approx([0.9, 0.1, 0.1])


async def test_mbr_utility_option_picks_the_utility() -> None:
    embedding, chrf = WordOverlapUtility(), WordOverlapUtility()
    utilities = {"embedding": embedding, "chrf": chrf}
    result = await run_texts(MinimumBayesRisk(n=4, utility="chrf"), CATS, None, utilities)
    assert result.best.text == C2
    assert result.details["utility"] == "chrf"
    assert chrf.calls == [CATS] and embedding.calls == []


async def test_mbr_budget() -> None:
    gen = ScriptedGenerator([list(CATS)])
    result = await MinimumBayesRisk(n=4).run(context(gen, TableReward({})))
    budget = result.budget
    assert (budget.engine_calls, budget.reward_calls, budget.scored_responses) == (1, 0, 0)
    assert budget.generated_tokens == sum(len(t) for t in CATS) == 43
    assert gen.calls[0][2] == 4 and gen.calls[0][1].max_tokens == 50
    assert set(budget.phase_seconds) == {"generate", "utility"}


async def test_mbr_single_sample_skips_the_utility() -> None:
    utility = WordOverlapUtility()
    result = await run_texts(MinimumBayesRisk(n=1), ["only"], None, {"embedding": utility})
    assert texts(result.ranked) == ["only"]
    assert result.details == {"utility": "embedding", "weights": "uniform", "mbr_scores": [0.0]}
    assert utility.calls == []
    assert "utility" not in result.budget.phase_seconds


async def test_mbr_empty_responses_do_not_crash() -> None:
    # Two empty texts are identical (1.0) and share nothing with "a" (0.0).
    result = await run_texts(MinimumBayesRisk(n=3), ["a", "", ""])
    assert texts(result.ranked) == ["", "", "a"]
    assert result.details["mbr_scores"] == [0.0, 0.5, 0.5]


# Model-based MBR (Jinnai et al. 2023): P over the distinct samples, self included.
#   texts  M = "cats meow" (drawn twice), P = "cats purr", D = "dogs bark"
#   p(y|x) M 0.1, P 0.6, D 0.3 (sum 1: P(y) is p itself; the repeat of M counts once)
#   U(M, P) = |{cats}| / |{cats, meow, purr}| = 1/3, U(., D) = 0, U(y, y) = 1
#   score_M = 0.1 + 0.6/3 = 0.3, score_P = 0.1/3 + 0.6 = 19/30, score_D = 0.3
# The uniform estimate, self left out, picks the sample drawn twice: M (1/3 + 1)/3 = 4/9
# against P (1/3 + 1/3)/3 = 2/9. The model-based one picks the likelier P.
M, P = "cats meow", "cats purr"
DRAWN = [(M, 2, math.log(0.1)), (P, 2, math.log(0.6)), (D, 2, math.log(0.3)), (M, 2, math.log(0.1))]


async def test_mbr_logprob_weights_are_the_model_based_expectation() -> None:
    utilities = {"embedding": WordOverlapUtility()}
    strategy = MinimumBayesRisk(n=4, weights="logprob")
    result = await strategy.run(context(FixedGenerator(DRAWN), TableReward({}), utilities))
    assert result.details["probabilities"] == pytest.approx([0.1, 0.6, 0.3, 0.0])
    assert result.details["mbr_scores"] == pytest.approx([0.3, 19 / 30, 0.3, 0.3])
    assert result.details["weights"] == "logprob"
    assert result.best.text == P
    uniform = await MinimumBayesRisk(n=4).run(
        context(FixedGenerator(DRAWN), TableReward({}), utilities)
    )
    assert uniform.details["mbr_scores"] == pytest.approx([4 / 9, 2 / 9, 0.0, 4 / 9])
    assert uniform.best.text == M


async def test_mbr_logprob_weights_survive_long_responses() -> None:
    # Summed logprobs of -5000 and -5001 underflow exp(); shifted, they weigh e : 1.
    rows = [("a b", 2, -5000.0), ("a c", 2, -5001.0)]
    strategy = MinimumBayesRisk(n=2, weights="logprob")
    utilities = {"embedding": WordOverlapUtility()}
    result = await strategy.run(context(FixedGenerator(rows), TableReward({}), utilities))
    e = math.e
    assert result.details["probabilities"] == pytest.approx([e / (e + 1), 1 / (e + 1)])


async def test_mbr_logprob_weights_need_the_engines_logprobs() -> None:
    assert MinimumBayesRisk(weights="logprob").wants_logprobs()
    assert not MinimumBayesRisk().wants_logprobs()
    # An engine that returned none is a server fault (503), as for rbon_kl.
    rows = [("a", 1, 0.0), ("b", 1, 0.0)]
    gen = FixedGenerator(rows)

    async def without(prompt_ids: Sequence[int], params: SamplingConfig, n: int = 1) -> Any:
        return [
            dataclasses.replace(c, cumulative_logprob=None)
            for c in await gen.generate(prompt_ids, params, n)
        ]

    bare = SimpleNamespace(generate=without)
    with pytest.raises(EngineUnavailable):
        await MinimumBayesRisk(n=2, weights="logprob").run(context(bare, TableReward({})))


async def test_http_mbr_logprob_asks_the_engine_for_logprobs(
    serve_app: Any, runtime_of: Any
) -> None:
    gen = ScriptedGenerator([[M, P, D, M], [M, P, D, M]])
    runtime = runtime_of(gen, TableReward({}), utilities={"embedding": WordOverlapUtility()})
    async with serve_app(runtime) as client:
        for weights in ("logprob", "uniform"):
            search = {"algorithm": "mbr", "n": 4, "weights": weights}
            r = await client.post(
                "/v1/chat/completions",
                json={"messages": [{"role": "user", "content": "hi"}], "search": search},
            )
            assert r.status_code == 200, r.text
            assert r.json()["search"]["details"]["weights"] == weights
    assert [params.logprobs for _, params, _ in gen.calls] == [True, False]


async def test_mbr_missing_utility_fails_before_the_engine_runs() -> None:
    gen = ScriptedGenerator([["a", "b"]])
    with pytest.raises(EngineUnavailable) as info:
        await MinimumBayesRisk(n=2, utility="chrf").run(context(gen, TableReward({}), {}))
    assert info.value.status_code == 503
    assert gen.calls == []


# -- registry and validation -------------------------------------------------------------


def test_defaults_and_registry() -> None:
    assert STRATEGIES["rbon_wd"] is RegularizedBoNWD
    assert STRATEGIES["mbr"] is MinimumBayesRisk
    wd = parse_strategy({"algorithm": "rbon_wd"})
    assert isinstance(wd, RegularizedBoNWD)
    assert (wd.n, wd.beta, wd.utility) == (4, 1.0, "embedding")
    mbr = parse_strategy({"algorithm": "mbr", "n": 8, "utility": "chrf"})
    assert isinstance(mbr, MinimumBayesRisk)
    assert (mbr.n, mbr.utility) == (8, "chrf")
    wd = parse_strategy({"algorithm": "rbon_wd", "beta": 0, "utility": "chrf"})
    assert isinstance(wd, RegularizedBoNWD)
    assert (wd.beta, wd.utility) == (0.0, "chrf")
    assert MinimumBayesRisk.needs_logprobs is False


@pytest.mark.parametrize("beta", [-0.1, -1, "0.5", None, math.inf, math.nan, True])
def test_rbon_wd_bad_beta(beta: object) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_strategy({"algorithm": "rbon_wd", "beta": beta})
    assert info.value.param == "search.beta"
    assert info.value.message.startswith("invalid search.beta for rbon_wd: ")


@pytest.mark.parametrize("algorithm", ["rbon_wd", "mbr"])
@pytest.mark.parametrize("utility", ["bleu", "Embedding", "", 3, None])
def test_unknown_utility(algorithm: str, utility: object) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_strategy({"algorithm": algorithm, "utility": utility})
    assert info.value.param == "search.utility"
    assert info.value.status_code == 400


@pytest.mark.parametrize(
    ("options", "param"),
    [
        ({"beta": 1.0}, "search.beta"),  # mbr has no reward term to weigh
        ({"n": 0}, "search.n"),
        ({"variant": "kl"}, "search.variant"),
    ],
)
def test_mbr_bad_options(options: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_strategy({"algorithm": "mbr", **options})
    assert info.value.param == param
