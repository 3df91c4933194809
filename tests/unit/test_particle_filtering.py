"""``particle_filtering`` (Puri et al. 2025, its_hub's ParticleFiltering) with a seeded
resampler, against hand-computed draws.

Fakes as in test_steps.py: the generator's table reads "after this response so far, the
model writes ..." (cut at "\\n\\n"), each call taking the next texts of its key; TablePRM
scores a response by its whole text, on [0, 1] (the default aggregation, ``model``, gives
the PRM the response as one step, as its_hub's benchmark does). A [0, 1] score s has the
log-weight logit(s), so with temperature 1 the resampling probabilities are the odds
s / (1 - s), normalised."""

from __future__ import annotations

import math
import random
from collections.abc import Iterator

import pytest

from search.budget import Work
from search.context import SearchContext
from search.errors import InvalidRequest
from search.fakes import StepTableGenerator, TablePRM, TableReward, fake_context
from search.particle_filtering import ParticleFiltering, log_weight, resample
from search.registry import STRATEGIES, parse_strategy
from search.step_path import StepPath
from search.types import SamplingConfig

P = "<user>hi<assistant>"

TREE = {
    "": ["a\n\n", "b\n\n", "c", "d\n\n"],
    "b\n\n": ["b1\n\n", "b2", "b3\n\n"],
    "b\n\nb1\n\n": ["e"],
}
# Odds: a 1, b 4, c 9, d 1/4; b1 1, b2 3, b3 1/4; e 1.
SCORES = {"a\n\n": 0.5, "b\n\n": 0.8, "c": 0.9, "d\n\n": 0.2, "b\n\nb1\n\n": 0.5}
SCORES |= {"b\n\nb2": 0.75, "b\n\nb3\n\n": 0.2, "b\n\nb1\n\ne": 0.5}


def context(
    table: dict[str, list[str]], prm: TablePRM, seed: int | None = 7
) -> tuple[SearchContext, StepTableGenerator]:
    gen = StepTableGenerator(table, prompt=P)
    sampling = SamplingConfig(max_tokens=100, seed=seed)
    return fake_context(gen, TableReward({}), sampling, prm=prm), gen


def test_the_seeded_draws_the_expected_counts_rest_on() -> None:
    rng = random.Random(7)
    draws = [round(rng.random(), 4) for _ in range(12)]
    assert draws[:8] == [0.3238, 0.1508, 0.6509, 0.0724, 0.5359, 0.3657, 0.058, 0.5074]
    assert draws[8:] == [0.0375, 0.4336, 0.0699, 0.0907]


async def test_particles_are_resampled_in_proportion_to_their_weights() -> None:
    prm = TablePRM(SCORES)
    ctx, gen = context(TREE, prm)
    result = await ParticleFiltering(n=4).run(ctx)
    rounds = result.details["rounds"]

    # Round 0: odds 1, 4, 9, 1/4 of 14.25; cumulative .0702 .3509 .9825 1. The draws
    # .3238 .1508 .6509 .0724 pick b, b, c, b (.0724 just above a's .0702).
    assert rounds[0]["weights"] == pytest.approx([1 / 14.25, 4 / 14.25, 9 / 14.25, 0.25 / 14.25])
    assert rounds[0]["resampled"] == [1, 1, 2, 1] and rounds[0]["counts"] == [0, 3, 1, 0]
    # Round 1: the three copies of b each sample a step (c has finished and keeps .9):
    # odds b1 1, b2 3, c 9, b3 1/4 of 13.25; cumulative .0755 .3019 .9811 1. The draws
    # .5359 .3657 .058 .5074 pick c, c, b1, c.
    assert rounds[1]["weights"] == pytest.approx([1 / 13.25, 3 / 13.25, 9 / 13.25, 0.25 / 13.25])
    assert rounds[1]["resampled"] == [2, 2, 0, 2] and rounds[1]["counts"] == [1, 0, 3, 0]
    # Round 2: only b1 is live and finishes with e: odds 9, 9, 1, 9 of 28; cumulative
    # .3214 .6429 .6786 1. The draws .0375 .4336 .0699 .0907 pick 0, 1, 0, 0: all c.
    assert rounds[2]["weights"] == pytest.approx([9 / 28, 9 / 28, 1 / 28, 9 / 28])
    assert rounds[2]["resampled"] == [0, 1, 0, 0] and rounds[2]["counts"] == [3, 1, 0, 0]
    assert len(rounds) == 3  # every particle finished

    assert [(r["live"], r["finished"]) for r in rounds] == [(3, 1), (2, 2), (0, 4)]
    assert [r["scores"] for r in rounds] == [
        [0.5, 0.8, 0.9, 0.2],
        [0.5, 0.75, 0.9, 0.2],
        [0.9, 0.9, 0.5, 0.9],
    ]
    assert [r["lineage"] for r in rounds] == [[0, 1, 2, 3], [1, 1, 2, 1], [2, 2, 1, 2]]
    assert [c.text for c in result.candidates] == ["c"] * 4
    assert result.best.text == "c" and result.best.reward == 0.9

    # One request of one sample per live particle; only the grown ones are scored, each
    # whole as one step.
    assert [(key, n) for key, _, _, n in gen.calls] == [("", 1)] * 4 + [("b\n\n", 1)] * 3 + [
        ("b\n\nb1\n\n", 1)
    ]
    assert prm.calls[1] == [("b\n\nb1\n\n",), ("b\n\nb2",), ("b\n\nb3\n\n",)]
    assert [r["ends"] for r in rounds] == [
        ["delimiter", "delimiter", "eos", "delimiter"],
        ["delimiter", "eos", None, "delimiter"],
        [None, None, "eos", None],
    ]
    budget = result.budget
    assert (budget.engine_calls, budget.reward_calls, budget.scored_responses) == (8, 3, 8)
    assert budget.generated_tokens == (3 + 3 + 1 + 3) + (4 + 2 + 4) + 1
    assert set(budget.phase_seconds) == {"generate", "score_steps"}
    assert Work.spent(budget).within(ParticleFiltering(n=4).worst_case(100))


async def test_a_seeded_search_resamples_the_same_way_every_time() -> None:
    results = []
    for _ in range(2):
        ctx, _ = context(TREE, TablePRM(SCORES), seed=7)
        results.append((await ParticleFiltering(n=4).run(ctx)).details)
    assert results[0] == results[1]
    ctx, _ = context(TREE, TablePRM(SCORES), seed=3)
    # Seed 3 draws .238 .5442 .37 .6039 in round 0: b, c, c, c.
    assert (await ParticleFiltering(n=4).run(ctx)).details["rounds"][0]["resampled"] == [
        1,
        2,
        2,
        2,
    ]


async def test_particle_filtering_votes_over_the_particles_with_an_answer_regex() -> None:
    # One round (max_steps 1, to the end): answers 1, 2, 2, 1 with scores .5 .8 .9 .2.
    # Seed 7's draws pick particles 1, 1, 2, 1 (as in round 0 above): "2" x 4.
    table = {"": ["=1", "=2", "=2 ", "=1 "]}
    scores = {"=1": 0.5, "=2": 0.8, "=2 ": 0.9, "=1 ": 0.2}
    ctx, gen = context(table, TablePRM(scores))
    result = await ParticleFiltering(n=4, max_steps=1, answer_regex=r"=(\d)").run(ctx)
    assert [c.text for c in result.candidates] == ["=2", "=2", "=2 ", "=2"]
    assert result.details["votes"] == {"2": pytest.approx(0.8 * 3 + 0.9)}
    assert result.best.text == "=2 "
    assert [stops for _, _, stops, _ in gen.calls] == [()] * 4  # the last round: to the end


def test_log_weights_are_the_logits_of_the_scores_on_zero_to_one() -> None:
    assert log_weight(0.5, (0.0, 1.0)) == 0.0
    assert log_weight(0.8, (0.0, 1.0)) == pytest.approx(math.log(4))
    assert log_weight(8.0, (0.0, 10.0)) == pytest.approx(math.log(4))
    # its_hub's clip keeps certain scores finite.
    assert log_weight(1.0, (0.0, 1.0)) == pytest.approx(math.log((1 - 1e-7) / 1e-7))
    assert log_weight(-3.0, (0.0, 1.0)) == pytest.approx(math.log(1e-7 / (1 - 1e-7)))
    assert log_weight(2.5, None) == 2.5  # an unbounded PRM's raw score


def test_the_temperature_divides_the_log_weights() -> None:
    particles = [StepPath(steps=("x",), scores=(s,)) for s in (0.5, 0.8, 0.9, 0.2)]
    hot = ParticleFiltering(n=4, resample_temperature=2.0).weights(particles, (0.0, 1.0))
    # Odds to the power 1/2: 1, 2, 3, 1/2.
    assert hot == pytest.approx([1 / 6.5, 2 / 6.5, 3 / 6.5, 0.5 / 6.5])


def test_a_particle_not_scored_yet_has_the_neutral_weight() -> None:
    # Its first step cut at the safety cap: no score, log-weight 0 (odds 1), not logit(0).
    particles = [StepPath(steps=("x",), open=True), StepPath(steps=("y",), scores=(0.8,))]
    weights = ParticleFiltering(n=2).weights(particles, (0.0, 1.0))
    assert weights == pytest.approx([1 / 5, 4 / 5])


class Scripted(random.Random):
    def __init__(self, draws: list[float]) -> None:
        super().__init__(0)
        self.draws: Iterator[float] = iter(draws)

    def random(self) -> float:
        return next(self.draws)


def test_resampling_is_multinomial_on_the_cumulative_weights() -> None:
    # Cumulative .25 .5 1: .1 -> 0, .3 -> 1, .6 -> 2, .99 -> 2, .5 -> 2 (a bound goes up).
    picks = resample([0.25, 0.25, 0.5], 5, Scripted([0.1, 0.3, 0.6, 0.99, 0.5]))
    assert picks == [0, 1, 2, 2, 2]


def test_worst_case_and_samples_per_call() -> None:
    search = ParticleFiltering(n=4, max_steps=3, max_step_tokens=8)
    assert search.worst_case(100) == Work(
        tokens=4 * (2 * 8 + 100), engine_calls=3 * 4, reward_items=3 * 4
    )
    # Scoring every step: the last round's run to the end may hold one step per token.
    every = ParticleFiltering(n=4, max_steps=3, aggregation="min").worst_case(100)
    assert every.reward_items == 4 * (3 + 99)
    assert search.samples_per_call() == 1 and search.peak_candidates() == 4


@pytest.mark.parametrize(
    ("options", "param"),
    [
        ({"resample_temperature": 0.0}, "search.resample_temperature"),
        ({"resample_temperature": 101.0}, "search.resample_temperature"),
        ({"resample_temperature": "1"}, "search.resample_temperature"),
        ({"resample_temperature": float("nan")}, "search.resample_temperature"),
        ({"max_step_tokens": 5000}, "search.max_step_tokens"),
    ],
)
def test_options_are_validated(options: dict[str, object], param: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        parse_strategy({"algorithm": "particle_filtering", **options})
    assert err.value.param == param


def test_registered_with_its_hubs_defaults() -> None:
    search = parse_strategy({"algorithm": "particle_filtering", "resample_temperature": 1})
    assert STRATEGIES["particle_filtering"] is ParticleFiltering
    assert isinstance(search, ParticleFiltering)
    assert (search.resample_temperature, search.aggregation) == (1.0, "model")
