"""The per-search budget (search/budget.py): worst cases checked before a search, the
running backstop, the bounded deadline fallback, and the L3 500s turned into 400s."""

from __future__ import annotations

import asyncio
import json
import math
import random
import zlib
from collections.abc import Sequence
from typing import Any

import pytest

from search.adaptive_bon import AdaptiveBoN
from search.budget import (
    BudgetExhausted,
    SearchLimits,
    Work,
    check_worst_case,
    trim_scored,
)
from search.context import SearchContext, gather_all
from search.darwin import Darwin
from search.deadline import best_scored, run_with_deadline
from search.errors import InvalidRequest, LimitExceeded
from search.fakes import (
    FixedGenerator,
    PromptTableGenerator,
    ScriptedGenerator,
    TableReward,
    fake_context,
)
from search.overlap import sample_and_score
from search.registry import STRATEGIES, parse_strategy
from search.spec_rejection import SpeculativeRejection
from search.srbon import StochasticRBoN, kl_probabilities
from search.strategy import SearchStrategy
from search.treebon import TreeBoN
from search.types import Completion, Message, SamplingConfig, SearchResult
from server.settings import Settings

# Rows of FixedGenerator: (text, tokens, summed logprob).
ROWS = [("low", 3, -1.0), ("high", 4, -2.0)]
REWARDS = {"low": 0.2, "high": 0.9}


class YieldingRows(FixedGenerator):
    """FixedGenerator that lets the event loop run, so a deadline can still end a search
    the budget failed to stop."""

    async def generate(
        self, prompt_ids: Sequence[int], params: SamplingConfig, n: int = 1
    ) -> list[Completion]:
        await asyncio.sleep(0)
        return await super().generate(prompt_ids, params, n)


def limited(limits: SearchLimits | None) -> SearchContext:
    ctx = fake_context(
        YieldingRows(ROWS), TableReward(REWARDS), SamplingConfig(max_tokens=10, seed=1)
    )
    ctx.limits = limits
    return ctx


class Forever(SearchStrategy):
    """A search that never ends on its own: Best-of-2 again and again."""

    name = "forever"
    score: bool = True

    async def run(self, ctx: SearchContext) -> SearchResult:
        while True:
            if self.score:
                await sample_and_score(ctx, self.n)
            else:
                await ctx.generate(ctx.prompt_ids, ctx.sampling.max_tokens, self.n)


# -- worst cases, before the search --------------------------------------------------
def test_h2_spec_rejection_that_never_rejects_is_refused_before_it_runs() -> None:
    # The review's request: 256 started, nothing ever rejected, a cut every token: 4095
    # rounds of 256 scored prefixes. alpha 0 is now below the option's bound ...
    h2 = {"algorithm": "spec_rejection", "n": 64, "n_initial": 256, "decision_tokens": 1}
    with pytest.raises(InvalidRequest) as info:
        parse_strategy({**h2, "alpha": 0.0})
    assert info.value.param == "search.alpha"
    # ... at the lowest alpha allowed a cut every token is too many decision points ...
    strategy = parse_strategy({**h2, "alpha": 0.05})
    with pytest.raises(InvalidRequest) as info:
        check_worst_case(strategy, 4096, SearchLimits())
    assert info.value.param == "search.decision_tokens" and "at least 8" in info.value.message
    # ... and at 8 tokens a cut, pools that stop shrinking at 10 still need too many calls.
    strategy = parse_strategy({**h2, "alpha": 0.05, "decision_tokens": 8})
    with pytest.raises(LimitExceeded) as exceeded:
        check_worst_case(strategy, 4096, SearchLimits())
    assert (exceeded.value.limit, exceeded.value.param) == ("search_engine_calls", "search")
    assert "--max-search-engine-calls" in exceeded.value.message


def test_search_limits_default_to_the_settings() -> None:
    limits, fields = SearchLimits(), Settings.model_fields
    assert (limits.tokens, limits.engine_calls, limits.reward_items, limits.kept_chars) == (
        fields["max_search_tokens"].default,
        fields["max_search_engine_calls"].default,
        fields["max_search_reward_items"].default,
        fields["max_search_kept_chars"].default,
    )


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_every_algorithms_defaults_fit_the_default_limits(name: str) -> None:
    # The largest default request (n 64; darwin sets its own) at the largest max_tokens:
    # only options a client raises can be refused.
    options = (
        {"algorithm": name, "n": 64} if STRATEGIES[name].takes_default_n else {"algorithm": name}
    )
    check_worst_case(parse_strategy(options), 4096, SearchLimits())


def test_one_shot_worst_case_is_n_responses_in_one_call() -> None:
    assert parse_strategy({"algorithm": "bon", "n": 4}).worst_case(100) == Work(400, 1, 4)


def test_spec_rejection_worst_case_follows_the_cuts() -> None:
    # 4 started, cuts every 2 of 6 tokens: at most 2 continuations. Pools 4 -> 2 -> 1.
    # Scored: 4 + 2 + 1 segments, and each of the 4 responses once more when it finishes.
    worst = SpeculativeRejection(n=2, n_initial=4, decision_tokens=2).worst_case(6)
    assert worst == Work(24, 4, 4 + 3 + 4)
    # alpha 0.05: a pool of 10 keeps round(9.5) = 10, so each of the 4 cuts continues 10.
    worst = SpeculativeRejection(n=5, n_initial=10, alpha=0.05, decision_tokens=1).worst_case(5)
    assert worst == Work(50, 1 + 4 * 10, 10 + 4 * 10 + 10)


def test_round_searches_count_their_rounds() -> None:
    # gpd needs 4 to fit: one round of 4, then 12 rounds of 1.
    assert AdaptiveBoN(n=16, round_size=1, estimator="gpd").worst_case(10) == Work(160, 13, 16)
    # 2 parents per layer after the first; 3 scoring passes of 4.
    assert TreeBoN(n=4, layers=3, branching=2).worst_case(9) == Work(36, 5, 12)
    # Seed 5 tokens; a cycle: 1024 rewrite, 5 x 5 answers, 3 steps x 5 peeks of 3.
    darwin = Darwin(top_k=1, replacement_period=2, look_ahead=3, cycles=1)
    assert darwin.worst_case(5) == Work(5 + 1024 + 25 + 45, 1 + 1 + 6 * 5, 1 + 3 * 5 + 5)


@pytest.mark.parametrize(
    ("options", "param"),
    [
        ({"algorithm": "treebon", "layers": 65}, "search.layers"),
        ({"algorithm": "darwin", "cycles": 17}, "search.cycles"),
        ({"algorithm": "darwin", "mutations": 17}, "search.mutations"),
        ({"algorithm": "srbon", "beta": 1e7}, "search.beta"),
        ({"algorithm": "rbon_kl", "beta": 1e7}, "search.beta"),
        ({"algorithm": "rbon_wd", "beta": 1e7}, "search.beta"),
        ({"algorithm": "spec_rejection", "alpha": 0.04}, "search.alpha"),
    ],
)
def test_options_that_multiply_work_are_bounded(options: dict[str, object], param: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_strategy(options)
    assert info.value.param == param


@pytest.mark.parametrize(
    ("options", "max_tokens", "param"),
    [
        ({"algorithm": "treebon", "layers": 5}, 4, "search.layers"),
        ({"algorithm": "darwin", "replacement_period": 7}, 4096, "search.replacement_period"),
        ({"algorithm": "spec_rejection", "decision_tokens": 7}, 4096, "search.decision_tokens"),
    ],
)
def test_options_bounded_by_max_tokens_are_checked_with_it(
    options: dict[str, object], max_tokens: int, param: str
) -> None:
    with pytest.raises(InvalidRequest) as info:
        check_worst_case(parse_strategy(options), max_tokens, SearchLimits())
    assert info.value.param == param
    check_worst_case(parse_strategy(options), 64, SearchLimits())  # fine at a small max


class HashReward:
    """A reward that looks random but is a function of the text."""

    bounds = None
    takes_token_ids = False

    async def score(
        self, conversation: Sequence[Message], responses: Sequence[str], **_: Any
    ) -> list[float]:
        return [zlib.crc32(r.encode()) % 1000 / 1000 for r in responses]


def random_texts(prompt: str) -> list[str]:
    """Continuations of random lengths (the short ones finish), fixed by the prompt."""
    rng = random.Random(zlib.crc32(prompt.encode()))
    return ["".join(rng.choices("abc", k=rng.randint(1, 12))) for _ in range(64)]


@pytest.mark.parametrize("seed", range(40))
async def test_what_a_search_spends_never_exceeds_its_worst_case(seed: int) -> None:
    rng = random.Random(seed)
    max_tokens = rng.randint(1, 16)
    n = rng.choice([2, 4, 8])
    strategy = rng.choice(
        [
            SpeculativeRejection(
                n=n,
                n_initial=n * rng.randint(1, 3),
                alpha=rng.choice([0.05, 0.3, 0.5, 0.9]),
                decision_tokens=rng.choice([None, 1, 2, 3]),
            ),
            TreeBoN(n=n, layers=rng.randint(1, max_tokens), branching=rng.choice([1, 2])),
            Darwin(
                top_k=rng.randint(1, 4),
                replacement_period=rng.randint(1, 4),
                look_ahead=rng.choice([0, 2]),
                cycles=rng.randint(1, 2),
                replacement=rng.random() < 0.8,
                rewrite_tokens=16,
                seed=seed,
            ),
            AdaptiveBoN(n=n * 2, round_size=rng.randint(1, 3), min_gain=0.0),
        ]
    )
    ctx = fake_context(
        PromptTableGenerator({}, fallback=random_texts),
        HashReward(),
        SamplingConfig(max_tokens=max_tokens, seed=seed),
    )
    result = await strategy.run(ctx)
    assert Work.spent(result.budget).within(strategy.worst_case(max_tokens))


# -- the running backstop ------------------------------------------------------------
async def test_a_search_at_its_limit_answers_with_the_best_so_far() -> None:
    ctx = limited(SearchLimits(engine_calls=3))
    result = await run_with_deadline(Forever(n=2), ctx, 10.0, "best")
    assert result.best.text == "high" and result.best.reward == 0.9
    assert result.details == {
        "budget_hit": True,
        "budget_limit": "search_engine_calls",
        "answer_was_partial": False,
    }
    # Stopped before the call that would pass the limit, not after.
    assert (ctx.budget.engine_calls, ctx.budget.scored_responses) == (3, 6)


@pytest.mark.parametrize(
    ("limits", "spent"),
    [
        # Each call may generate 2 x 10 tokens: after two (14 spent) a third could pass 30.
        (SearchLimits(tokens=30), Work(14, 2, 4)),
        # Each round scores 2: the fourth round's call runs, its scores would pass 7.
        (SearchLimits(reward_items=7), Work(28, 4, 6)),
    ],
)
async def test_each_limit_stops_the_search_before_it_passes(
    limits: SearchLimits, spent: Work
) -> None:
    ctx = limited(limits)
    result = await run_with_deadline(Forever(n=2), ctx, 10.0, "best")
    assert result.details["budget_hit"] and Work.spent(ctx.budget) == spent


async def test_calls_started_together_cannot_pass_a_limit_between_them() -> None:
    # Three calls gathered at once against a limit of 2: the third is refused while the
    # first two are still running (their spending is reserved), and they are cancelled.
    ctx = limited(SearchLimits(engine_calls=2))
    ctx.generator = ScriptedGenerator([["a"], ["b"], ["c"]], delay_s=0.01)
    with pytest.raises(BudgetExhausted):
        await gather_all([ctx.generate(ctx.prompt_ids, 5) for _ in range(3)])
    assert ctx.budget.engine_calls == 0 and ctx.in_flight == Work()


async def test_a_limit_with_nothing_scored_is_a_400_naming_it() -> None:
    ctx = limited(SearchLimits(tokens=45))
    with pytest.raises(LimitExceeded) as info:
        await run_with_deadline(Forever(n=2, score=False), ctx, 10.0, "best")
    assert (info.value.limit, info.value.param) == ("search_tokens", "search")
    assert "--max-search-tokens" in info.value.message
    # on_timeout "error" asks for no fallback answer: the same 400 with responses scored.
    ctx = limited(SearchLimits(engine_calls=2))
    with pytest.raises(LimitExceeded) as info:
        await run_with_deadline(Forever(n=2), ctx, 10.0, "error")
    assert info.value.limit == "search_engine_calls" and ctx.scored


async def test_without_limits_nothing_is_checked() -> None:
    ctx = limited(None)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(Forever(n=2).run(ctx), 0.05)
    assert ctx.budget.engine_calls > 0


# -- what the deadline fallback keeps ------------------------------------------------
def test_trim_keeps_what_the_fallback_picks_first() -> None:
    scored = [
        ("ab", 0.5, True),
        ("x", 1.0, False),  # never eligible again: the stream already sent "ab"
        ("abd", 0.2, False),
        ("abc", 0.9, True),
        ("abcd", 0.7, False),
    ]
    # Fallback order: complete abcd (.7), abd (.2), then partial abc (.9), ab (.5).
    assert trim_scored(scored, "ab", 7) == [("abd", 0.2, False), ("abcd", 0.7, False)]
    assert trim_scored(scored, "ab", 3) == [("abcd", 0.7, False)]  # the best, whatever it costs
    assert trim_scored(scored, "zz", 100) == []


async def test_kept_text_stays_under_its_limit_and_the_fallback_is_unchanged() -> None:
    texts = [f"{i:03d}" + "x" * (i % 7) for i in range(200)]
    rewards = {t: (i * 37 % 101) / 100 for i, t in enumerate(texts)}
    ctx = limited(SearchLimits(kept_chars=60))
    ctx.reward = TableReward(rewards)
    unlimited = limited(None)
    unlimited.reward = TableReward(rewards)
    for i in range(0, 200, 4):
        await ctx.score(texts[i : i + 4], partial=i % 8 == 0)
        await unlimited.score(texts[i : i + 4], partial=i % 8 == 0)
        assert sum(len(t) for t, _, _ in ctx.scored) <= 60
        assert best_scored(ctx) == best_scored(unlimited)
    assert len(unlimited.scored) == 200 and len(ctx.scored) <= 20


# -- L3: client-triggerable 500s -----------------------------------------------------
async def test_l3_darwin_without_a_user_message_is_a_400_before_any_generation() -> None:
    gen = ScriptedGenerator([])
    ctx = fake_context(
        gen, TableReward({}), SamplingConfig(max_tokens=4), [{"role": "system", "content": "x"}]
    )
    with pytest.raises(InvalidRequest) as info:
        await Darwin(cycles=1).run(ctx)
    assert info.value.param == "messages" and gen.calls == []


def test_l3_srbon_kl_probabilities_stay_finite_when_beta_times_reward_overflows() -> None:
    # beta x R = inf for the first two: they share the draw; the old softmax gave NaN.
    probs = kl_probabilities([-1.0, -5.0, -0.5], [2e302, 5e302, 1.0], 1e6)
    assert probs == [0.5, 0.5, 0.0]
    # A -inf log pi_ref plus an overflowing reward is no number: never drawn.
    assert kl_probabilities([-math.inf, -1.0], [1e303, 0.5], 1e6) == [0.0, 1.0]


async def test_l3_srbon_with_the_largest_beta_and_rewards_above_one_answers() -> None:
    ctx = fake_context(
        FixedGenerator(ROWS), TableReward({"low": 3e302, "high": 2.0}), SamplingConfig(seed=1)
    )
    result = await StochasticRBoN(n=2, beta=1e6).run(ctx)
    assert result.details["probabilities"] == [1.0, 0.0] and result.best.text == "low"
    json.dumps(result.details, allow_nan=False)  # what the server's JSON response needs


def test_a_default_spec_rejection_is_admitted_under_the_servers_default_limits() -> None:
    # Its defaults start 8n responses (at most 256): every n the server allows, at every
    # max_tokens it allows, passes the live-candidate check and the worst-case limits.
    from server.settings import Settings

    settings = Settings()
    limits = SearchLimits(
        tokens=settings.max_search_tokens,
        engine_calls=settings.max_search_engine_calls,
        reward_items=settings.max_search_reward_items,
    )
    for n in range(1, settings.max_n + 1):
        strategy = parse_strategy({"algorithm": "spec_rejection", "n": n})
        assert strategy.peak_candidates() <= settings.max_live_candidates
        for max_tokens in (1, 7, 8, settings.default_max_tokens, settings.max_tokens_limit):
            check_worst_case(strategy, max_tokens, limits)
