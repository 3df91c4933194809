"""``dvts`` (search-and-learn's diverse verifier tree search) on a hand-computed tree.

Fakes as in test_steps.py: the generator's table reads "after this response so far, the
model writes ..." (cut at "\\n\\n"); a second call on the same key gets the texts after the
first call's; TablePRM scores each step by its text."""

from __future__ import annotations

import pytest

from search.budget import Work
from search.context import SearchContext
from search.dvts import DiverseVerifierTreeSearch
from search.errors import InvalidRequest
from search.fakes import StepTableGenerator, TablePRM, TableReward, fake_context
from search.registry import STRATEGIES, parse_strategy
from search.types import SamplingConfig

P = "<user>hi<assistant>"

# N = 4, M = 2: subtree 0 samples a, b and keeps b (.7); subtree 1 samples c, d and keeps c
# (.9). A global top 2 would have kept c and d: the subtrees never compete. Round 1:
# subtree 0 keeps b1 (.6, finished; its sibling b2 stopped at a delimiter), subtree 1 keeps
# c2 (.4). Round 2: subtree 1 keeps y (.95, finished). Every subtree has ended.
TREE = {
    "": ["a\n\n", "b\n\n", "c\n\n", "d\n\n"],
    "b\n\n": ["b1", "b2\n\n"],
    "c\n\n": ["c1\n\n", "c2\n\n"],
    "c\n\nc2\n\n": ["x", "y"],
}
SCORES = {
    "a\n\n": 0.2,
    "b\n\n": 0.7,
    "c\n\n": 0.9,
    "d\n\n": 0.8,
    "b1": 0.6,
    "b2\n\n": 0.5,
    "c1\n\n": 0.3,
    "c2\n\n": 0.4,
    "x": 0.1,
    "y": 0.95,
}


def context(
    table: dict[str, list[str]], prm: TablePRM, max_tokens: int = 100
) -> tuple[SearchContext, StepTableGenerator]:
    gen = StepTableGenerator(table, prompt=P)
    sampling = SamplingConfig(max_tokens=max_tokens, seed=7)
    return fake_context(gen, TableReward({}), sampling, prm=prm), gen


async def test_each_subtree_keeps_its_own_best_step() -> None:
    prm = TablePRM(SCORES)
    ctx, gen = context(TREE, prm)
    result = await DiverseVerifierTreeSearch(n=4, beam_width=2).run(ctx)

    # Per subtree its last round's complete samples: b2 (cut at a delimiter) is left out.
    assert [c.text for c in result.candidates] == ["b\n\nb1", "c\n\nc2\n\nx", "c\n\nc2\n\ny"]
    assert [c.reward for c in result.candidates] == [0.6, 0.1, 0.95]
    assert result.best.text == "c\n\nc2\n\ny"
    # One request of M per live subtree per round; subtree 0 stopped after round 1.
    assert [(key, n) for key, _, _, n in gen.calls] == [
        ("", 2),
        ("", 2),
        ("b\n\n", 2),
        ("c\n\n", 2),
        ("c\n\nc2\n\n", 2),
    ]
    assert [len(call) for call in prm.calls] == [4, 4, 2]
    budget = result.budget
    assert (budget.engine_calls, budget.reward_calls, budget.scored_responses) == (5, 3, 10)
    assert budget.generated_tokens == 4 * 3 + (2 + 4 + 4 + 4) + (1 + 1)
    assert set(budget.phase_seconds) == {"generate", "score_steps"}
    d, e = "delimiter", "eos"
    assert result.details == {
        "rounds": [
            {
                "subtrees": [0, 1],
                "scores": [[0.2, 0.7], [0.9, 0.8]],
                "ends": [[d, d], [d, d]],
                "kept": [1, 0],
                "finished": 0,
            },
            {
                "subtrees": [0, 1],
                "scores": [[0.6, 0.5], [0.3, 0.4]],
                "ends": [[e, d], [d, d]],
                "kept": [0, 1],
                "finished": 1,
            },
            {
                "subtrees": [1],
                "scores": [[0.1, 0.95]],
                "ends": [[e, e]],
                "kept": [1],
                "finished": 2,
            },
        ]
    }
    assert Work.spent(budget).within(DiverseVerifierTreeSearch(n=4, beam_width=2).worst_case(100))


async def test_dvts_votes_with_an_answer_regex() -> None:
    # "=1": .6 (b1) + .5 (x) = 1.1 beats "=2": .95 (y), which subtree 1 kept over x.
    tree = {**TREE, "b\n\n": ["b=1", "b2\n\n"], "c\n\nc2\n\n": ["x=1", "y=2"]}
    scores = {**SCORES, "b=1": 0.6, "x=1": 0.5, "y=2": 0.95}
    ctx, _ = context(tree, TablePRM(scores))
    result = await DiverseVerifierTreeSearch(n=4, beam_width=2, answer_regex=r"=(\d)").run(ctx)
    assert result.best.text == "b\n\nb=1"
    assert result.details["votes"] == {"1": pytest.approx(1.1), "2": 0.95}
    assert result.details["rounds"][2]["kept"] == [1]


async def test_one_subtree_commits_its_kept_steps_and_ends_in_the_last_round() -> None:
    # N = M = 2, max_steps 2: round 0 keeps "q\n\n", the last round runs to the end.
    tree = {"": ["p\n\n", "q\n\n"], "q\n\n": ["one\n\ntwo", "three"]}
    ctx, gen = context(tree, TablePRM({"p\n\n": 0.1, "q\n\n": 0.5, "three": 0.8}), 30)
    result = await DiverseVerifierTreeSearch(n=2, beam_width=2, max_steps=2).run(ctx)
    assert gen.calls == [("", 30, ("\n\n",), 2), ("q\n\n", 27, (), 2)]
    assert [c.text for c in result.candidates] == ["q\n\none\n\ntwo", "q\n\nthree"]
    assert result.best.text == "q\n\nthree"
    assert ctx.committed == "q\n\n"


def test_worst_case_and_samples_per_call() -> None:
    search = DiverseVerifierTreeSearch(n=8, beam_width=4, max_steps=3, max_step_tokens=8)
    assert search.worst_case(100) == Work(
        tokens=8 * (2 * 8 + 100), engine_calls=3 * 2, reward_items=3 * 8
    )
    assert search.samples_per_call() == 4 and search.peak_candidates() == 8


@pytest.mark.parametrize(
    ("options", "param"),
    [
        ({"n": 4, "beam_width": 3}, "search.beam_width"),
        ({"n": 4, "beam_width": 0}, "search.beam_width"),
        ({"n": 6}, "search.beam_width"),
        ({"max_steps": 1000}, "search.max_steps"),
    ],
)
def test_options_are_validated(options: dict[str, object], param: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        parse_strategy({"algorithm": "dvts", **options})
    assert err.value.param == param


def test_registered_with_search_and_learns_defaults() -> None:
    search = parse_strategy({"algorithm": "dvts", "n": 8})
    assert STRATEGIES["dvts"] is DiverseVerifierTreeSearch
    assert isinstance(search, DiverseVerifierTreeSearch)
    assert (search.beam_width, search.subtrees(), search.aggregation) == (4, 2, "last")
