"""SRBoN-WD (``srbon`` with ``variant="wd"``): exact hand-computed optima, the draw, and
conformance with the rule as Ichihara et al. 2025 and their code state it, written out
here independently: POT's ``emd2`` for W, the reference's SLSQP over the simplex, and the
whole problem as one linear programme (scipy ``linprog``)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import ot
import pytest
from scipy.optimize import Bounds, linprog, minimize

from search.errors import EngineUnavailable
from search.fakes import FixedGenerator, FixedUtility, TableReward, fake_context
from search.srbon import StochasticRBoN
from search.strategy import SearchStrategy
from search.types import SamplingConfig, SearchResult

CONV = [{"role": "user", "content": "hi"}]
URL = "/v1/chat/completions"


async def run_fixed(
    strategy: SearchStrategy,
    rows: Sequence[tuple[str, int, float]],
    rewards: dict[str, float],
    utility: FixedUtility,
) -> SearchResult:
    sampling = SamplingConfig(max_tokens=64, logprobs=True)
    utilities = {"embedding": utility, "chrf": utility}
    ctx = fake_context(FixedGenerator(rows), TableReward(rewards), sampling, CONV, utilities)
    return await strategy.run(ctx)


def body(**search: Any) -> dict[str, Any]:
    return {"model": "m", "messages": CONV, "search": search}


# -- srbon wd ----------------------------------------------------------------------------

# pi_ref = (0.5, 0.3, 0.2) (one token each, so both modes agree), R = (0.2, 0.5, 0.9) and a
# symmetric utility, so the cost C = 1 - U = [[0, .2, .8], [.2, 0, .7], [.8, .7, 0]].
# Each reference sample i sends its mass to argmax_j R_j - beta C_ij:
# beta 1: row 0 (.2, .3, .1) -> 1, row 1 (0, .5, .2) -> 1, row 2 (-.6, -.2, .9) -> 2.
# beta 0.1: every row -> 2 (BoN). beta 5: every row stays (p = pi_ref).
WD_ROWS = [("a", 1, math.log(0.5)), ("b", 1, math.log(0.3)), ("c", 1, math.log(0.2))]
WD_REWARDS = {"a": 0.2, "b": 0.5, "c": 0.9}
WD_UTILITY = [[1.0, 0.8, 0.2], [0.8, 1.0, 0.3], [0.2, 0.3, 1.0]]


@pytest.mark.parametrize(
    ("beta", "probabilities", "transport"),
    [
        (1.0, [0.0, 0.8, 0.2], [1, 1, 2]),
        (0.1, [0.0, 0.0, 1.0], [2, 2, 2]),
        (5.0, [0.5, 0.3, 0.2], [0, 1, 2]),
    ],
)
async def test_srbon_wd_exact_optimum(
    beta: float, probabilities: list[float], transport: list[int]
) -> None:
    utility = FixedUtility(WD_UTILITY)
    strategy = StochasticRBoN(n=3, variant="wd", beta=beta, seed=2)
    result = await run_fixed(strategy, WD_ROWS, WD_REWARDS, utility=utility)
    details = result.details
    assert details["probabilities"] == pytest.approx(probabilities, abs=1e-12)
    assert details["reference"] == pytest.approx([0.5, 0.3, 0.2], rel=1e-12)
    assert details["transport"] == transport
    assert (details["utility"], details["beta"], details["logprob"]) == ("embedding", beta, "mean")
    # u = 0.956 with seed 2: the last candidate with mass.
    assert details["draw"] == 0.9560342718892494
    assert result.best.text == "c"
    assert utility.calls == [["a", "b", "c"]]


@pytest.mark.parametrize(("seed", "ranked"), [(0, ["c", "b", "a"]), (1, ["b", "c", "a"])])
async def test_srbon_wd_draw_and_ranking(seed: int, ranked: list[str]) -> None:
    # beta 1: p = (0, 0.8, 0.2); u = 0.844 (seed 0) -> "c", 0.134 (seed 1) -> "b".
    strategy = StochasticRBoN(n=3, variant="wd", beta=1.0, seed=seed)
    result = await run_fixed(strategy, WD_ROWS, WD_REWARDS, utility=FixedUtility(WD_UTILITY))
    assert [c.text for c in result.ranked] == ranked


async def test_srbon_wd_cost_reads_the_utility_with_the_answer_as_hypothesis() -> None:
    # U[j][i] scores answer j against reference i: moving mass from "b" to "a" costs
    # 1 - U[0][1] = 0.1, from "a" to "b" 1 - U[1][0] = 0.9. R = (0.75, 0.6), beta 1:
    # row "a" (0.75, -0.3) stays; row "b" (0.65, 0.6) moves to "a". p = (1, 0).
    # The transposed cost would give p = (0.5, 0.5).
    rows = [("a", 1, math.log(0.5)), ("b", 1, math.log(0.5))]
    utility = FixedUtility([[1.0, 0.9], [0.1, 1.0]])
    strategy = StochasticRBoN(n=2, variant="wd", beta=1.0, seed=0)
    result = await run_fixed(strategy, rows, {"a": 0.75, "b": 0.6}, utility=utility)
    assert result.details["probabilities"] == pytest.approx([1.0, 0.0])
    assert result.details["transport"] == [0, 0]


async def test_srbon_wd_reference_respects_the_logprob_mode() -> None:
    # Summed log pi_ref equal (-2, -2); per token -1 and -0.5. beta 100 keeps p = pi_ref.
    rows = [("a", 2, -2.0), ("b", 4, -2.0)]
    utility = FixedUtility([[1.0, 0.0], [0.0, 1.0]])
    half = math.exp(0.5)
    for mode, expected in (("sum", [0.5, 0.5]), ("mean", [1 / (1 + half), half / (1 + half)])):
        strategy = StochasticRBoN(n=2, variant="wd", beta=100.0, logprob=mode, seed=0)
        result = await run_fixed(strategy, rows, {"a": 0.9, "b": 0.1}, utility=utility)
        assert result.details["reference"] == pytest.approx(expected, rel=1e-12)
        assert result.details["probabilities"] == pytest.approx(expected, rel=1e-12)


async def test_srbon_wd_default_beta_and_budget() -> None:
    result = await run_fixed(
        StochasticRBoN(n=3, variant="wd", seed=0),
        WD_ROWS,
        WD_REWARDS,
        utility=FixedUtility(WD_UTILITY),
    )
    # beta 0.05: row 0 (.2, .49, .86) -> 2, row 1 (.19, .5, .865) -> 2, row 2 -> 2.
    assert result.details["beta"] == 0.05
    assert result.details["probabilities"] == pytest.approx([0.0, 0.0, 1.0])
    budget = result.budget
    assert (budget.engine_calls, budget.reward_calls, budget.scored_responses) == (1, 1, 3)
    assert "utility" in budget.phase_seconds


async def test_srbon_wd_without_the_utility_fails_before_the_engine() -> None:
    gen = FixedGenerator(WD_ROWS)
    sampling = SamplingConfig(max_tokens=8, logprobs=True)
    ctx = fake_context(gen, TableReward(WD_REWARDS), sampling, CONV, utilities={})
    with pytest.raises(EngineUnavailable) as info:
        await StochasticRBoN(n=3, variant="wd").run(ctx)
    assert info.value.status_code == 503
    assert ctx.budget.engine_calls == 0


# -- conformance: the paper's rule, stated independently ------------------------------

# Four candidates: summed log pi_ref, token counts, judge rewards, a symmetric utility.
LOGPROB = np.array([-31.0, -24.5, -40.2, -28.8])
TOKENS = np.array([40, 22, 64, 30])
REWARD = np.array([0.62, 0.35, 0.91, 0.70])
UTILITY = np.array(
    [
        [1.0, 0.55, 0.30, 0.72],
        [0.55, 1.0, 0.20, 0.48],
        [0.30, 0.20, 1.0, 0.41],
        [0.72, 0.48, 0.41, 1.0],
    ]
)
ROWS = [(f"t{i}", int(k), float(lp)) for i, (k, lp) in enumerate(zip(TOKENS, LOGPROB, strict=True))]
COST = 1.0 - UTILITY  # symmetric, so no question of orientation here


def reference_pi_ref(mode: str) -> np.ndarray:
    # stochastic_rbon.py: pi_ref = exp(logprob - max(logprob)), normalised inside emd2.
    logprob = LOGPROB if mode == "sum" else LOGPROB / TOKENS
    weights = np.exp(logprob - logprob.max())
    return weights / weights.sum()


def swd_value(p: np.ndarray, pi_ref: np.ndarray, beta: float) -> float:
    """p . R - beta * W(pi_ref, p), W by POT's exact earth mover's distance."""
    return float(p @ REWARD - beta * ot.emd2(pi_ref, p / p.sum(), COST))


def reference_slsqp(pi_ref: np.ndarray, beta: float) -> np.ndarray:
    """stochastic_rbon.py's SRBoN-WD optimisation (with cost 1 - U, not U): SLSQP from the
    uniform p, sum(p) = 1, p >= 1e-10."""

    def negative(p: np.ndarray) -> float:
        return -(float(p @ REWARD) - beta * float(ot.emd2(pi_ref, p / p.sum(), COST)))

    constraints = [
        {"type": "eq", "fun": lambda p: np.sum(p) - 1},
        {"type": "ineq", "fun": lambda p: p - 1e-10},
    ]
    start = np.ones(len(REWARD)) / len(REWARD)
    result = minimize(
        negative, start, method="SLSQP", bounds=Bounds(0, np.inf), constraints=constraints
    )
    return np.asarray(result.x) / np.sum(result.x)


def lp_optimum(pi_ref: np.ndarray, beta: float) -> float:
    """max over p and transport plans T of p . R - beta * sum(T * C), with T 1 = pi_ref,
    T^T 1 = p, p, T >= 0: the whole problem as one LP (variables p, then T row-major)."""
    n = len(REWARD)
    c = -np.concatenate([REWARD, -beta * COST.ravel()])
    rows_sum = np.hstack([np.zeros((n, n)), np.kron(np.eye(n), np.ones(n))])
    cols_sum = np.hstack([-np.eye(n), np.kron(np.ones(n), np.eye(n))])
    a_eq = np.vstack([rows_sum, cols_sum])
    b_eq = np.concatenate([pi_ref, np.zeros(n)])
    result = linprog(c, A_eq=a_eq, b_eq=b_eq, bounds=(0, None), method="highs")
    assert result.status == 0
    return float(-result.fun)


@pytest.mark.parametrize("mode", ["sum", "mean"])
@pytest.mark.parametrize("beta", [0.05, 0.2, 0.35, 0.5, 1.0, 3.0])
async def test_srbon_wd_is_the_optimum_of_the_papers_objective(mode: str, beta: float) -> None:
    strategy = StochasticRBoN(n=4, variant="wd", beta=beta, logprob=mode, seed=0)
    rewards = {text: float(r) for (text, _, _), r in zip(ROWS, REWARD, strict=True)}
    result = await run_fixed(strategy, ROWS, rewards, FixedUtility(UTILITY.tolist()))
    pi_ref = reference_pi_ref(mode)
    assert result.details["reference"] == pytest.approx(pi_ref, rel=1e-9, abs=1e-15)
    p = np.array(result.details["probabilities"])
    assert p.min() >= 0 and p.sum() == pytest.approx(1.0, rel=1e-12)
    value = swd_value(p, pi_ref, beta)
    # The exact optimum of the LP, and never worse than the reference's SLSQP.
    assert value == pytest.approx(lp_optimum(pi_ref, beta), abs=1e-9)
    assert value >= swd_value(reference_slsqp(pi_ref, beta), pi_ref, beta) - 1e-9


def test_conformance_example_is_not_degenerate() -> None:
    # The example must exercise a mixed optimum (some mass moved, some kept), not only
    # BoN or p = pi_ref: at beta 0.5 the reference sample t1 moves to t2, t0 and t3 stay.
    pi_ref = reference_pi_ref("mean")
    gains = REWARD[None, :] - 0.5 * COST
    assert list(gains.argmax(axis=1)) == [0, 2, 2, 3]
    assert lp_optimum(pi_ref, 0.5) > swd_value(pi_ref, pi_ref, 0.5)


# -- through the server ------------------------------------------------------------------


async def test_http_srbon_wd_answers_with_the_draw(serve_app: Any, runtime_of: Any) -> None:
    utility = FixedUtility(WD_UTILITY)
    runtime = runtime_of(
        FixedGenerator(WD_ROWS), TableReward(WD_REWARDS), utilities={"embedding": utility}
    )
    search = {"algorithm": "srbon", "n": 3, "variant": "wd", "beta": 1.0}
    async with serve_app(runtime) as client:
        first = await client.post(URL, json=body(**search, seed=0))
        second = await client.post(URL, json=body(**search, seed=1))
    assert first.status_code == 200
    assert first.json()["choices"][0]["message"]["content"] == "c"
    assert second.json()["choices"][0]["message"]["content"] == "b"
    details = first.json()["search"]["details"]
    assert details["probabilities"] == pytest.approx([0.0, 0.8, 0.2])
    assert details["transport"] == [1, 1, 2]
