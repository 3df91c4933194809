"""``beam_search`` (search-and-learn's step-level beam search) on hand-computed trees.

Fakes as in test_steps.py: the generator's table reads "after this response so far, the
model writes ..." (cut at the step delimiter "\\n\\n"); TablePRM scores each step by its
text."""

from __future__ import annotations

import pytest

from search.beam_search import BeamSearch, calls_per_round, copies_per_beam, requests
from search.budget import Work
from search.context import SearchContext
from search.errors import InvalidRequest
from search.fakes import StepTableGenerator, TablePRM, TableReward, fake_context
from search.registry import STRATEGIES, parse_strategy
from search.step_path import StepPath
from search.types import SamplingConfig

P = "<user>hi<assistant>"

# N = 4, M = 2. Round 0: A, B, C live, D finished. Keep the top 2 live (B .9, C .6), two
# copies each, in search-and-learn's order (B, C, B, C). Round 1: B1 live, C1 done, B2
# done, C2 live: keep both, two copies each. Round 2: E, G, F done, H live: 6 completed
# >= 4, stop; the first 4 are the candidates.
TREE = {
    "": ["A\n\n", "B\n\n", "C\n\n", "D"],
    "B\n\n": ["B1\n\n", "B2"],
    "C\n\n": ["C1", "C2\n\n"],
    "B\n\nB1\n\n": ["E", "F"],
    "C\n\nC2\n\n": ["G", "H\n\n"],
}
SCORES = {
    "A\n\n": 0.3,
    "B\n\n": 0.9,
    "C\n\n": 0.6,
    "D": 0.5,
    "B1\n\n": 0.7,
    "B2": 0.8,
    "C1": 0.4,
    "C2\n\n": 0.95,
    "E": 0.99,
    "F": 0.2,
    "G": 1.0,  # the best score of all, but the fifth to complete: not a candidate
    "H\n\n": 0.1,
}


def context(
    table: dict[str, list[str]], prm: TablePRM, max_tokens: int = 100
) -> tuple[SearchContext, StepTableGenerator]:
    gen = StepTableGenerator(table, prompt=P)
    sampling = SamplingConfig(max_tokens=max_tokens, seed=7)
    return fake_context(gen, TableReward({}), sampling, prm=prm), gen


async def test_beam_search_keeps_the_best_n_over_m_and_expands_each_by_m() -> None:
    prm = TablePRM(SCORES)
    ctx, gen = context(TREE, prm)
    result = await BeamSearch(n=4, beam_width=2).run(ctx)

    assert [c.text for c in result.candidates] == ["D", "C\n\nC1", "B\n\nB2", "B\n\nB1\n\nE"]
    assert [c.reward for c in result.candidates] == [0.5, 0.4, 0.8, 0.99]
    assert result.best.text == "B\n\nB1\n\nE"
    # Round 0 is N / M requests of M from the prompt; then M per kept beam.
    assert [(key, n) for key, _, _, n in gen.calls] == [
        ("", 2),
        ("", 2),
        ("B\n\n", 2),
        ("C\n\n", 2),
        ("B\n\nB1\n\n", 2),
        ("C\n\nC2\n\n", 2),
    ]
    assert [len(call) for call in prm.calls] == [4, 4, 4]
    assert prm.calls[1] == [
        ("B\n\n", "B1\n\n"),
        ("C\n\n", "C1"),
        ("B\n\n", "B2"),
        ("C\n\n", "C2\n\n"),
    ]
    budget = result.budget
    assert (budget.engine_calls, budget.reward_calls, budget.scored_responses) == (6, 3, 12)
    assert budget.generated_tokens == (3 + 3 + 3 + 1) + (4 + 2 + 2 + 4) + (1 + 1 + 1 + 3)
    assert set(budget.phase_seconds) == {"generate", "score_steps"}
    assert result.details == {
        "rounds": [
            {
                "live": 3,
                "finished": 1,
                "scores": [0.3, 0.9, 0.6, 0.5],
                "ends": ["delimiter", "delimiter", "delimiter", "eos"],
                "lineage": [0, 1, 2, 3],
                "kept": [1, 2],
                "completed": 1,
            },
            {
                "live": 2,
                "finished": 2,
                "scores": [0.7, 0.4, 0.8, 0.95],
                "ends": ["delimiter", "eos", "eos", "delimiter"],
                "lineage": [1, 2, 1, 2],
                "kept": [0, 3],
                "completed": 3,
            },
            {
                "live": 1,
                "finished": 3,
                "scores": [0.99, 1.0, 0.2, 0.1],
                "ends": ["eos", "eos", "eos", "delimiter"],
                "lineage": [1, 2, 1, 2],
                "kept": [],
                "completed": 6,
            },
        ]
    }
    assert Work.spent(budget).within(BeamSearch(n=4, beam_width=2).worst_case(100))


async def test_beam_search_ranks_by_the_aggregation() -> None:
    # min over the steps: D .5, C-C1 .4, B-B2 .8, B-B1-E .7.
    ctx, _ = context(TREE, TablePRM(SCORES))
    result = await BeamSearch(n=4, beam_width=2, aggregation="min").run(ctx)
    assert result.best.text == "B\n\nB2"
    assert [c.reward for c in result.candidates] == [0.5, 0.4, 0.8, 0.7]


async def test_beam_search_votes_with_an_answer_regex() -> None:
    # Answers D: none; B2, C1: "2"; E: "9". Tally "2": .8 + .4 = 1.2 > "9": .99.
    tree = {
        **TREE,
        "B\n\n": ["B1\n\n", "B=2"],
        "C\n\n": ["C=2", "C2\n\n"],
        "B\n\nB1\n\n": ["E=9", "F"],
    }
    scores = {**SCORES, "B=2": 0.8, "C=2": 0.4, "E=9": 0.99}
    ctx, _ = context(tree, TablePRM(scores))
    result = await BeamSearch(n=4, beam_width=2, answer_regex=r"=(\d)").run(ctx)
    assert result.best.text == "B\n\nB=2"
    assert result.details["votes"] == {"2": pytest.approx(1.2), "9": 0.99}
    assert result.details["winner"] == "2"


async def test_fewer_live_beams_than_n_over_m_share_the_n_slots() -> None:
    # N = 4, M = 2: only B is live after round 0, so it gets all 4 copies, 2 per request.
    tree = {"": ["A", "B\n\n", "C", "D"], "B\n\n": ["1", "2", "3", "4"]}
    ctx, gen = context(tree, TablePRM({}))
    result = await BeamSearch(n=4, beam_width=2).run(ctx)
    assert [(key, n) for key, _, _, n in gen.calls] == [
        ("", 2),
        ("", 2),
        ("B\n\n", 2),
        ("B\n\n", 2),
    ]
    assert [c.text for c in result.candidates] == ["A", "C", "D", "B\n\n1"]
    assert result.details["rounds"][0]["kept"] == [1]


async def test_the_last_round_completes_every_beam_and_commits_the_kept_prefix() -> None:
    # N = M = 2, two rounds: round 0 keeps "Y\n\n" (committed), round 1 runs to the end.
    tree = {"": ["X\n\n", "Y\n\n"], "Y\n\n": ["end one\n\nmore", "two"]}
    ctx, gen = context(tree, TablePRM({"X\n\n": 0.1, "Y\n\n": 0.5, "two": 0.9}), max_tokens=30)
    result = await BeamSearch(n=2, beam_width=2, max_steps=2).run(ctx)
    assert gen.calls == [("", 30, ("\n\n",), 2), ("Y\n\n", 27, (), 2)]
    assert [c.text for c in result.candidates] == ["Y\n\nend one\n\nmore", "Y\n\ntwo"]
    assert result.best.text == "Y\n\ntwo"
    assert ctx.committed == "Y\n\n"


def test_duplicate_live_beams_are_kept_once() -> None:
    live = [StepPath(steps=(t,), scores=(s,)) for t, s in [("a", 0.9), ("a", 0.9), ("b", 0.1)]]
    assert BeamSearch(n=4, beam_width=2).select(live) == [0, 2]
    assert BeamSearch(n=4, beam_width=2, filter_duplicates=False).select(live) == [0, 1]
    # Kept in their order, not by score.
    ranked = [StepPath(steps=(t,), scores=(s,)) for t, s in [("a", 0.1), ("b", 0.5), ("c", 0.9)]]
    assert BeamSearch(n=4, beam_width=2).select(ranked) == [1, 2]


def test_copies_and_requests() -> None:
    assert copies_per_beam(4, 2) == [2, 2]
    assert copies_per_beam(8, 3) == [3, 3, 2]
    a, b = StepPath(lineage=1), StepPath(lineage=2)
    assert requests([a, b], [4, 3], 2) == ([a, a, b, b], [2, 2, 2, 1])
    # N / M requests when N / M beams are kept; more (never above N) when fewer are.
    assert calls_per_round(4, 2) == 2 and calls_per_round(4, 4) == 1
    assert calls_per_round(8, 2) == 6 and calls_per_round(4, 1) == 4


def test_worst_case_and_samples_per_call() -> None:
    search = BeamSearch(n=4, beam_width=2, max_steps=3, max_step_tokens=8)
    assert search.worst_case(100) == Work(
        tokens=4 * (2 * 8 + 100), engine_calls=2 + 2 * 2, reward_items=12
    )
    # At most max_tokens rounds: 2 at max_tokens 2.
    assert search.worst_case(2) == Work(tokens=4 * (2 + 2), engine_calls=2 + 2, reward_items=8)
    assert search.samples_per_call() == 2 and search.peak_candidates() == 4


@pytest.mark.parametrize(
    ("options", "param"),
    [
        ({"n": 4, "beam_width": 3}, "search.beam_width"),
        ({"n": 4, "beam_width": 0}, "search.beam_width"),
        ({"n": 2}, "search.beam_width"),  # the default M = 4 does not divide 2
        ({"filter_duplicates": "yes"}, "search.filter_duplicates"),
    ],
)
def test_options_are_validated(options: dict[str, object], param: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        parse_strategy({"algorithm": "beam_search", **options})
    assert err.value.param == param


def test_registered_with_search_and_learns_defaults() -> None:
    search = parse_strategy({"algorithm": "beam_search", "n": 8})
    assert STRATEGIES["beam_search"] is BeamSearch
    assert isinstance(search, BeamSearch)
    assert (search.beam_width, search.filter_duplicates, search.max_steps) == (4, True, 40)
