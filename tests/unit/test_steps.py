"""search.steps: responses built step by step (splitting, joining, stops, limits), the
step scores' aggregation, and the step searches' final answer (``choose``).

The fakes are one token per character: StepTableGenerator's table reads "after this
response so far, the model writes ..." and cuts it as vLLM would at the call's stop
strings and max_tokens; TablePRM scores a step by its text."""

from __future__ import annotations

import math

import pytest

from search.beam_search import BeamSearch
from search.context import SearchContext
from search.errors import EngineUnavailable, InvalidRequest
from search.fakes import StepTableGenerator, TablePRM, TableReward, fake_context, stepped
from search.registry import parse_strategy
from search.step_path import StepPath, aggregate, split_steps
from search.steps import (
    choose,
    expand,
    rounds_bound,
    score_new_steps,
    step_report,
    tokens_bound,
)
from search.types import Completion, SamplingConfig

P = "<user>hi<assistant>"


def context(
    table: dict[str, list[str]],
    prm: TablePRM | None = None,
    max_tokens: int = 100,
    stop: tuple[str, ...] = (),
) -> tuple[SearchContext, StepTableGenerator]:
    gen = StepTableGenerator(table, prompt=P)
    sampling = SamplingConfig(max_tokens=max_tokens, seed=7, stop=stop)
    ctx = fake_context(gen, TableReward({}), sampling, prm=prm if prm is not None else TablePRM({}))
    return ctx, gen


def search(**options: object) -> BeamSearch:
    return BeamSearch(n=1, beam_width=1, **options)  # type: ignore[arg-type]


# -- the fake answers as vLLM would ------------------------------------------------------
def test_fake_cuts_at_the_stop_string_that_ends_first_within_max_tokens() -> None:
    params = SamplingConfig(max_tokens=10, stop=("\n\n", "b"), include_stop=True)
    out = stepped("aab\n\ncc", params)
    assert (out.text, out.finish_reason, out.stop_reason) == ("aab", "stop", "b")
    out = stepped("aab\n\ncc", SamplingConfig(max_tokens=10, stop=("\n\n", "b")))
    assert (out.text, out.token_ids) == ("aa", (97, 97, 98))  # the string is generated
    # A stop string that would end past max_tokens is never reached.
    out = stepped("aaaa\n\n", SamplingConfig(max_tokens=5, stop=("\n\n",)))
    assert (out.text, out.finish_reason, out.stop_reason) == ("aaaa\n", "length", None)
    out = stepped("abc", SamplingConfig(max_tokens=5, stop=("\n\n",)))
    assert (out.text, out.finish_reason, out.stop_reason) == ("abc", "stop", None)


# -- splitting into steps ----------------------------------------------------------------
async def test_a_step_ends_at_the_delimiter_which_stays_in_its_text() -> None:
    ctx, gen = context({"": ["One.\n\nTwo."], "One.\n\n": ["Two."]})
    [[first]] = await expand(ctx, search(), [StepPath()], [1])
    assert first.steps == ("One.\n\n",) and not first.finished and first.end == "delimiter"
    assert first.token_ids == tuple(ord(c) for c in "One.\n\n")
    [[second]] = await expand(ctx, search(), [first], [1])
    # No delimiter before the end: the end-of-sequence token finishes the response.
    assert second.steps == ("One.\n\n", "Two.") and second.finish_reason == "stop"
    assert second.end == "eos"
    assert second.text == "One.\n\nTwo." and second.completion().text == second.text
    # Each step continues prompt + the ids so far, stopping at the delimiter, kept; its
    # only cap is what max_tokens leaves (the safety cap, 256, is above it).
    assert gen.calls == [("", 100, ("\n\n",), 1), ("One.\n\n", 94, ("\n\n",), 1)]


async def test_a_client_stop_string_ends_the_response_and_is_cut_off() -> None:
    ctx, gen = context({"": ["Yes. END more\n\n"]}, stop=("END",))
    [[path]] = await expand(ctx, search(), [StepPath()], [1])
    assert path.steps == ("Yes. ",) and path.finish_reason == "stop" and path.end == "stop"
    # The client's stops come first, then the delimiter.
    assert gen.calls == [("", 100, ("END", "\n\n"), 1)]


async def test_a_custom_delimiter_splits_the_steps() -> None:
    ctx, _ = context({"": ["a;b;"]})
    [[path]] = await expand(ctx, search(step_delimiter=";"), [StepPath()], [1])
    assert path.steps == ("a;",) and not path.finished


async def test_a_step_cut_at_the_safety_cap_stays_open_until_its_delimiter() -> None:
    ctx, gen = context({"": ["abcdefg"], "abcd": ["e\n\nfg"], "abcde\n\n": ["fghij"]}, max_tokens=9)
    options = search(max_step_tokens=4)
    [[path]] = await expand(ctx, options, [StepPath()], [1])
    assert path.steps == ("abcd",) and path.open and path.end == "cap" and not path.finished
    # The next segment continues the same step (no step boundary at the cap) ...
    [[path]] = await expand(ctx, options, [path], [1])
    assert path.steps == ("abcde\n\n",) and not path.open and path.end == "delimiter"
    # ... and the response ends at max_tokens, whatever the cap.
    [[path]] = await expand(ctx, options, [path], [1])
    assert path.steps == ("abcde\n\n", "fg") and path.finish_reason == "length"
    assert path.end == "max_tokens" and path.num_tokens == 9
    assert [(key, cap) for key, cap, _, _ in gen.calls] == [("", 4), ("abcd", 4), ("abcde\n\n", 2)]


async def test_an_open_step_is_not_scored_and_is_scored_whole_once_it_closes() -> None:
    prm = TablePRM({"abcd": 0.9, "abcde\n\n": 0.3})
    ctx, _ = context({"": ["abcdefg"], "abcd": ["e\n\nfg"]}, prm=prm)
    options = search(max_step_tokens=4)
    [[path]] = await expand(ctx, options, [StepPath()], [1])
    [path] = await score_new_steps(ctx, [path])
    assert path.scores == () and prm.calls == [] and ctx.scored == []
    [[path]] = await expand(ctx, options, [path], [1])
    [path] = await score_new_steps(ctx, [path])
    # The PRM sees the whole step, never the fragment "abcd" before a separator.
    assert path.scores == (0.3,) and prm.calls == [[("abcde\n\n",)]]


def test_split_steps_cuts_after_every_delimiter() -> None:
    assert split_steps("a\n\nb\n\nc", "\n\n") == ["a\n\n", "b\n\n", "c"]
    assert split_steps("a\n\n", "\n\n") == ["a\n\n"]
    assert split_steps("", "\n\n") == [] and split_steps("abc", ";") == ["abc"]


def test_an_engine_without_stop_reasons_still_ends_steps_at_the_delimiter() -> None:
    # S10: a remote server that reports no stop_reason; the text ends with the delimiter.
    out = Completion((1, 2, 3), "a\n\n", "stop", stop_reason=None)
    path = StepPath().extend(out, 100, "\n\n", ())
    assert path.end == "delimiter" and not path.finished
    # In the last round the delimiter is no stop string: the same reply is the end.
    path = StepPath().extend(out, 100, "\n\n", (), delimited=False)
    assert path.end == "eos" and path.finished


async def test_the_last_round_runs_to_the_end_without_the_delimiter() -> None:
    ctx, gen = context({"ab\n\n": ["cd\n\nef END x"]}, max_tokens=40, stop=("END",))
    parent = StepPath(token_ids=tuple(ord(c) for c in "ab\n\n"), steps=("ab\n\n",))
    [[path]] = await expand(ctx, search(max_step_tokens=3), [parent], [1], to_end=True)
    # Its text is split into its steps (search-and-learn's PRM sees every "\n\n").
    assert path.steps == ("ab\n\n", "cd\n\n", "ef ") and path.finish_reason == "stop"
    assert path.end == "stop"
    # The client's stop strings only, and all of max_tokens that is left.
    assert gen.calls == [("ab\n\n", 36, ("END",), 1)]


async def test_expand_samples_count_steps_per_parent_and_skips_zero() -> None:
    ctx, gen = context({"": ["a\n\n", "b\n\n", "c"], "a\n\n": ["x"]})
    root = StepPath(lineage=3)
    a = StepPath(token_ids=(97, 10, 10), steps=("a\n\n",))
    groups = await expand(ctx, search(), [root, a, root], [2, 1, 0])
    assert [[p.text for p in g] for g in groups] == [["a\n\n", "b\n\n"], ["a\n\nx"], []]
    assert [p.lineage for p in groups[0]] == [3, 3]
    assert [(key, n) for key, _, _, n in gen.calls] == [("", 2), ("a\n\n", 1)]
    assert ctx.budget.engine_calls == 2 and ctx.budget.generated_tokens == 3 + 3 + 1


# -- scores ------------------------------------------------------------------------------
def test_aggregations_of_step_scores() -> None:
    scores = [0.5, 0.2, 0.8]
    assert aggregate(scores, "last") == 0.8
    assert aggregate(scores, "min") == 0.2
    assert aggregate(scores, "prod") == pytest.approx(0.08)
    assert aggregate(scores, "mean") == pytest.approx(0.5)
    assert aggregate(scores, "model") == 0.8
    assert all(aggregate([], how) == 0.0 for how in ("last", "min", "prod", "mean", "model"))
    path = StepPath(steps=("a", "b", "c"), scores=(0.5, 0.2, 0.8))
    assert path.score("min") == 0.2 and path.score("last") == 0.8


async def test_only_the_newest_unscored_steps_are_scored_in_one_call() -> None:
    prm = TablePRM({"b": 0.7, "x": 0.1})
    ctx, _ = context({}, prm=prm)
    done = StepPath(steps=("a",), scores=(0.4,), scored_steps=1)
    fresh = StepPath(steps=("a", "b"), scores=(0.4,), scored_steps=1)
    root = StepPath(steps=("x",), end="delimiter")
    scored = await score_new_steps(ctx, [done, fresh, root])
    assert [p.scores for p in scored] == [(0.4,), (0.4, 0.7), (0.1,)]
    assert prm.calls == [[("a", "b"), ("x",)]]
    assert (ctx.budget.reward_calls, ctx.budget.scored_responses) == (1, 2)
    # Kept for the deadline fallback: the newly scored ones, live ones as partial.
    assert ctx.scored == [("ab", 0.7, True), ("x", 0.1, True)]
    assert step_report(scored, [False, True, True]) == {
        "live": 3,
        "finished": 0,
        "scores": [0.4, 0.7, 0.1],
        "ends": [None, None, "delimiter"],
        "lineage": [0, 0, 0],
    }


async def test_the_last_rounds_steps_are_scored_as_the_aggregation_needs() -> None:
    # S2: a response whose last round added three steps. ``last`` scores the last step
    # after all three separators; ``min``, ``prod`` and ``mean`` every new step; ``model``
    # the whole response as one step.
    steps = ("a\n\n", "b\n\n", "c\n\n", "d")
    path = StepPath(
        token_ids=tuple(ord(c) for c in "".join(steps)),
        steps=steps,
        scores=(0.9,),
        scored_steps=1,
        finish_reason="stop",
    )
    table = {"a\n\nb\n\n": 0.5, "a\n\nb\n\nc\n\n": 0.2, "a\n\nb\n\nc\n\nd": 0.6}
    for how, calls, scores in [
        ("last", [steps], (0.9, 0.6)),
        ("min", [steps[:2], steps[:3], steps], (0.9, 0.5, 0.2, 0.6)),
        ("model", [("a\n\nb\n\nc\n\nd",)], (0.9, 0.6)),
    ]:
        prm = TablePRM(table)
        ctx, _ = context({}, prm=prm)
        [done] = await score_new_steps(ctx, [path], how)  # type: ignore[arg-type]
        assert prm.calls == [list(calls)] and done.scores == scores, how
    assert done.score("model") == 0.6 and aggregate((0.9, 0.5, 0.2, 0.6), "min") == 0.2


async def test_a_step_search_without_a_prm_is_a_server_fault() -> None:
    ctx, _ = context({})
    ctx.prm = None
    with pytest.raises(EngineUnavailable):
        await score_new_steps(ctx, [StepPath(steps=("a",))])


# -- the answer --------------------------------------------------------------------------
def done(text: str, score: float) -> StepPath:
    return StepPath(
        token_ids=tuple(ord(c) for c in text), steps=(text,), scores=(score,), finish_reason="stop"
    )


async def test_choose_takes_the_best_aggregated_score() -> None:
    ctx, _ = context({})
    result = await choose(ctx, search(), [done("a", 0.5), done("b", 0.9)], {"x": 1})
    assert [c.text for c in result.ranked] == ["b", "a"] and result.details == {"x": 1}


async def test_choose_votes_by_prm_score_with_an_answer_regex() -> None:
    # Weights on a [0, 1] PRM are the scores: "1" gets 0.5 + 0.6 = 1.1, "2" gets 0.9.
    ctx, _ = context({}, prm=TablePRM({}, bounds=(0.0, 1.0)))
    paths = [done("ANS 1", 0.5), done("ANS 2", 0.9), done("ANS 1", 0.6), done("none", 0.95)]
    result = await choose(ctx, search(answer_regex=r"ANS (\d)"), paths, {})
    # The reply is the best-scored response with the winning answer; no answer last.
    assert [c.reward for c in result.ranked] == [0.6, 0.5, 0.9, 0.95]
    assert result.details == {
        "votes": {"1": pytest.approx(1.1), "2": 0.9},
        "answers": ["1", "2", "1", None],
        "groups": ["1", "2", "1", None],
        "weights": [0.5, 0.9, 0.6, 0.95],
        "winner": "1",
        "grouping": "math",
    }


async def test_choose_weighs_an_unbounded_prm_by_sigmoid() -> None:
    ctx, _ = context({}, prm=TablePRM({}, bounds=None))
    paths = [done("ANS 1", 0.0), done("ANS 2", math.log(3))]
    result = await choose(ctx, search(answer_regex=r"ANS (\d)"), paths, {})
    assert result.details["weights"] == pytest.approx([0.5, 0.75])
    assert result.best.text == "ANS 2"


async def test_the_prm_weighted_vote_groups_math_answers_by_value_s5() -> None:
    # Finding S5: sal's find_answer_with_largest_sum sums scores per canonical form. Here
    # one half gets 0.4 + 0.3 + 0.2 = 0.9 against 3's 0.8; as strings 3 won with 0.8.
    ctx, _ = context({}, prm=TablePRM({}, bounds=(0.0, 1.0)))
    texts = ["ANS 3", "ANS 0.5", "ANS \\frac{1}{2}", "ANS 1/2"]
    paths = [done(t, score) for t, score in zip(texts, [0.8, 0.4, 0.3, 0.2], strict=True)]
    result = await choose(ctx, search(answer_regex=r"ANS (.+)"), paths, {})
    assert result.details["votes"] == {"3": 0.8, "0.5": pytest.approx(0.9)}
    assert result.details["groups"] == ["3", "0.5", "0.5", "0.5"]
    assert result.best.text == "ANS 0.5"


# -- options and bounds ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("options", "param"),
    [
        ({"answer_regex": "(?x)(a)"}, "search.answer_regex"),
        ({"answer_regex": "(a{1000}){1000}"}, "search.answer_regex"),
        ({"max_steps": 0}, "search.max_steps"),
        ({"max_steps": 257}, "search.max_steps"),
        ({"max_step_tokens": 0}, "search.max_step_tokens"),
        ({"step_delimiter": ""}, "search.step_delimiter"),
        ({"aggregation": "max"}, "search.aggregation"),
    ],
)
def test_step_options_are_validated(options: dict[str, object], param: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        parse_strategy({"algorithm": "particle_filtering", **options})
    assert err.value.param == param


def test_rounds_and_tokens_are_bounded_by_max_steps_and_max_tokens() -> None:
    options = search(max_steps=3, max_step_tokens=8)
    assert rounds_bound(options, 100) == 3 and rounds_bound(options, 2) == 2
    # Two rounds of 8-token steps, the last one up to max_tokens, 4 steps a round.
    assert tokens_bound(options, 100, 4) == 4 * (2 * 8 + 100)
    assert tokens_bound(options, 2, 4) == 4 * (1 * 2 + 2)
