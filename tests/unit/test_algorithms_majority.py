"""Majority vote (self-consistency, Wang et al. 2022): extraction, votes, ties, weighting."""

from __future__ import annotations

import math
import re
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any, cast

import pytest

from search.context import SearchContext
from search.errors import InvalidRequest, LimitExceeded
from search.fakes import ScriptedGenerator, TableReward, completion_of, fake_context
from search.majority import MajorityVote, boxed_value, default_answer
from search.regex_check import MAX_REGEX_CHARS
from search.registry import STRATEGIES, parse_strategy
from search.types import Candidate, SamplingConfig, SearchResult

CONV = [{"role": "user", "content": "hi"}]
URL = "/v1/chat/completions"


def context(generator: ScriptedGenerator, reward: TableReward) -> SearchContext:
    return fake_context(generator, reward, SamplingConfig(max_tokens=100), CONV)


async def vote(
    strategy: MajorityVote,
    texts: Sequence[str],
    rewards: dict[str, float] | None = None,
    bounds: tuple[float, float] | None = (0.0, 1.0),
) -> tuple[SearchResult, TableReward]:
    """The vote on scripted samples; the reward is judge-like ([0, 1]) unless told."""
    reward = TableReward(rewards or {}, bounds=bounds)
    result = await strategy.run(context(ScriptedGenerator([list(texts)]), reward))
    return result, reward


def texts(cands: Sequence[Candidate]) -> list[str]:
    return [c.text for c in cands]


def cand(text: str, reward: float = 0.0) -> Candidate:
    return Candidate(completion_of(text), reward)


# -- extraction --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("The answer is 42.", "42"),
        ("so 6 apples, then 7", "7"),
        ("It costs 1,234.50 dollars", "1234.50"),
        ("x = 3.0", "3.0"),
        ("from 5 down to -7", "-7"),
        ("1,000,000 people", "1000000"),
        ("\\boxed{17}, checked against 3", "17"),
        ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
        ("\\boxed{ 1,000 }", "1000"),
        ("\\boxed{x = 2, y = 3}", "x = 2, y = 3"),
        ("first \\boxed{2} then \\boxed{3}", "3"),
        ("\\boxed{4} then a cut-off \\boxed{5", "4"),
        ("an empty \\boxed{ } and 8", "8"),
        ("no numbers here", None),
        ("", None),
    ],
)
def test_default_extraction(text: str, answer: str | None) -> None:
    assert default_answer(text) == answer
    assert MajorityVote().extract(text) == answer


def test_boxed_value_balances_braces() -> None:
    assert boxed_value("a \\boxed{{x}^{2}} b") == "{x}^{2}"
    assert boxed_value("\\boxed{") is None
    assert boxed_value("nothing") is None


@pytest.mark.parametrize(
    ("regex", "text", "answer"),
    [
        (r"Answer:\s*(\w+)", "Answer: yes. On reflection, Answer: no", "no"),
        (r"Answer:\s*(\w+)", "I cannot tell; 42", None),
        (r"Answer:\s*(\w+)", "Answer:   maybe  ", "maybe"),
        (r"\[\[(.*?)\]\]", "pick [[ B ]]", "B"),
        # An optional group that does not take part, and a blank one, give no answer.
        (r"Answer:(\d+)?", "Answer: later", None),
        (r"Answer:(\s*)$", "Answer:  ", None),
    ],
)
def test_regex_extraction(regex: str, text: str, answer: str | None) -> None:
    assert MajorityVote(answer_regex=regex).extract(text) == answer


# -- votes and selection -----------------------------------------------------------------


def test_votes_table_in_order_of_first_appearance() -> None:
    cands = [cand("so 5"), cand("so 4"), cand("hmm"), cand("4 it is"), cand("5? no, 4")]
    table = MajorityVote().votes(cands)
    assert table == {"5": 1.0, "4": 3.0}
    assert list(table) == ["5", "4"]


def test_votes_weighted_by_reward() -> None:
    cands = [cand("a 4", 0.2), cand("b 4", 0.3), cand("c 9", 0.9), cand("none", 1.0)]
    weighted = MajorityVote(weighting="reward")
    # A [0, 1] reward (the judge's bounds) weighs by the reward itself.
    assert weighted.votes(cands, (0.0, 1.0)) == pytest.approx({"4": 0.5, "9": 0.9})
    # Other bounds rescale to [0, 1]: (R + 1) / 2 on [-1, 1].
    assert weighted.votes(cands, (-1.0, 1.0)) == pytest.approx({"4": 1.25, "9": 0.95})
    assert MajorityVote(weighting="none").votes(cands) == {"4": 2.0, "9": 1.0}


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def test_unbounded_rewards_weigh_by_their_sigmoid() -> None:
    cands = [cand("a 4", 0.2), cand("b 4", 0.3), cand("c 9", 0.9), cand("none", 1.0)]
    expected = {"4": sigmoid(0.2) + sigmoid(0.3), "9": sigmoid(0.9)}
    assert MajorityVote(weighting="reward").votes(cands) == pytest.approx(expected)
    # Huge logits of either sign neither overflow nor go negative.
    far = [cand("a 1", 800.0), cand("b 2", -800.0)]
    assert MajorityVote(weighting="reward").votes(far) == pytest.approx({"1": 1.0, "2": 0.0})


async def test_softmax_weights_no_longer_make_the_vote_an_argmax() -> None:
    # Regression (review 2026-12-07, item 18): softmax weights [0.71, 0.10, 0.10, 0.10]
    # elected A, the one well-rewarded answer, over three fair votes for B. The verifier's
    # probability, sigmoid, counts each vote at most once: A 0.88, B 3 x 0.5 = 1.5.
    sampled = ["so 1", "so 2", "thus 2", "hence 2"]
    logits = {"so 1": 2.0, "so 2": 0.0, "thus 2": 0.0, "hence 2": 0.0}
    result, _ = await vote(MajorityVote(n=4, weighting="reward"), sampled, logits, None)
    assert result.details["winner"] == "2"
    assert result.details["votes"] == pytest.approx({"1": sigmoid(2.0), "2": 1.5})


async def test_negative_classifier_logits_no_longer_subtract_votes() -> None:
    # Regression: raw sums gave "4" -0.5 - 0.5 = -1.0 against "9"'s 0.1, so one vote beat
    # two nearly as good. As probabilities, 2 x 0.38 = 0.75 > 0.52: "4" wins.
    sampled = ["x 4", "y 4", "z 9"]
    logits = {"x 4": -0.5, "y 4": -0.5, "z 9": 0.1}
    result, _ = await vote(MajorityVote(n=3, weighting="reward"), sampled, logits, None)
    assert result.details["winner"] == "4"
    assert result.details["weights"] == pytest.approx([sigmoid(-0.5)] * 2 + [sigmoid(0.1)])


async def test_majority_picks_the_most_common_answer() -> None:
    result, _ = await vote(MajorityVote(n=4), ["it is 7", "7", "maybe 3", "so 7."])
    assert result.best.text == "it is 7"
    # The winner's group first, then the other answers, by tally.
    assert texts(result.ranked) == ["it is 7", "7", "so 7.", "maybe 3"]
    assert texts(result.candidates) == ["it is 7", "7", "maybe 3", "so 7."]


async def test_majority_tie_goes_to_the_answer_reached_first() -> None:
    result, _ = await vote(MajorityVote(n=5), ["so 4", "so 5", "so 5", "so 4", "hmm"])
    # 4 and 5 have two votes each; 4 appeared first. Unanswered candidates rank last.
    assert texts(result.ranked) == ["so 4", "so 4", "so 5", "so 5", "hmm"]
    assert result.best is result.candidates[0]


async def test_majority_unweighted_never_calls_the_reward_model() -> None:
    result, reward = await vote(MajorityVote(n=3), ["1", "2", "2"], {"1": 0.9, "2": 0.1})
    assert reward.calls == []
    assert [c.reward for c in result.candidates] == [0.0, 0.0, 0.0]
    assert result.best is result.candidates[1]
    budget = result.budget
    assert (budget.engine_calls, budget.reward_calls, budget.scored_responses) == (1, 0, 0)
    assert budget.generated_tokens == 3
    assert set(budget.phase_seconds) == {"generate"}


async def test_reward_weighting_flips_the_winner() -> None:
    sampled = ["a: 4", "b: 4", "c: 9"]
    rewards = {"a: 4": 0.2, "b: 4": 0.3, "c: 9": 0.9}
    # Unweighted, 4 wins two votes to one.
    plain, _ = await vote(MajorityVote(n=3), sampled, rewards)
    assert plain.best.text == "a: 4"
    # Weighted, 9 has 0.9 against 0.2 + 0.3 = 0.5.
    weighted, reward = await vote(MajorityVote(n=3, weighting="reward"), sampled, rewards)
    assert texts(weighted.ranked) == ["c: 9", "b: 4", "a: 4"]
    assert [c.reward for c in weighted.candidates] == [0.2, 0.3, 0.9]
    assert reward.calls == [(sampled, False)]
    budget = weighted.budget
    assert (budget.engine_calls, budget.reward_calls, budget.scored_responses) == (1, 1, 3)


async def test_weighted_chooses_the_best_reward_within_the_winning_answer() -> None:
    # 4 has 0.2 + 0.7 = 0.9 against 9's 0.8: the answer is "y 4", not the best-reward "z 9".
    sampled = ["x 4", "y 4", "z 9"]
    result, _ = await vote(
        MajorityVote(n=3, weighting="reward"), sampled, {"x 4": 0.2, "y 4": 0.7, "z 9": 0.8}
    )
    assert texts(result.ranked) == ["y 4", "x 4", "z 9"]


async def test_weighted_reward_tie_inside_the_group_goes_to_the_earlier() -> None:
    sampled = ["p 1", "q 1", "r 1"]
    rewards = {"p 1": 0.2, "q 1": 0.5, "r 1": 0.5}
    result, _ = await vote(MajorityVote(n=3, weighting="reward"), sampled, rewards)
    assert texts(result.ranked) == ["q 1", "r 1", "p 1"]


async def test_regex_votes_end_to_end() -> None:
    strategy = MajorityVote(n=4, answer_regex=r"Answer:\s*([A-D])")
    sampled = ["Answer: B", "42 Answer: C", "Answer: C", "Answer: B or so"]
    result, _ = await vote(strategy, sampled)
    assert strategy.votes(result.candidates) == {"B": 2.0, "C": 2.0}
    assert texts(result.ranked) == ["Answer: B", "Answer: B or so", "42 Answer: C", "Answer: C"]


async def test_boxed_answers_vote_together_with_plain_numbers() -> None:
    sampled = ["so \\boxed{1,200}", "total 1200", "about 12"]
    result, _ = await vote(MajorityVote(n=3), sampled)
    assert result.best.text == "so \\boxed{1,200}"
    assert MajorityVote().votes(result.candidates) == {"1200": 2.0, "12": 1.0}


async def test_math_answers_vote_by_value_s5() -> None:
    # Finding S5: "0.5" and "\\frac{1}{2}" were two answers, so "3" (two votes) beat the
    # three votes for one half. Grouped by value (math-verify), one half wins, named by its
    # first spelling, and the reply is that group's first response.
    sampled = ["so 3", "\\boxed{0.5}", "so 3", "\\boxed{\\frac{1}{2}}", "\\boxed{\\dfrac12}"]
    result, _ = await vote(MajorityVote(n=5), sampled)
    assert result.details["answers"] == ["3", "0.5", "3", "\\frac{1}{2}", "\\dfrac12"]
    assert result.details["groups"] == ["3", "0.5", "3", "0.5", "0.5"]
    assert result.details["votes"] == {"3": 2.0, "0.5": 3.0}
    assert result.details["winner"] == "0.5"
    assert result.details["grouping"] == "math"
    assert result.best.text == "\\boxed{0.5}"


async def test_words_and_labels_keep_exact_grouping() -> None:
    # math-verify would read "(A)" and "A" as one symbol, and "no 1" words as a product of
    # letters: answers that are not math are compared as strings.
    strategy = MajorityVote(n=4, answer_regex=r"Answer: (.+)")
    sampled = ["Answer: (A)", "Answer: A", "Answer: one half", "Answer: half one"]
    result, _ = await vote(strategy, sampled)
    assert result.details["groups"] == ["(A)", "A", "one half", "half one"]
    assert result.details["votes"] == {"(A)": 1.0, "A": 1.0, "one half": 1.0, "half one": 1.0}


async def test_no_answer_falls_back_to_the_first_unweighted() -> None:
    result, _ = await vote(MajorityVote(n=2), ["hmm", "no idea"], {"no idea": 0.6})
    assert texts(result.ranked) == ["hmm", "no idea"]


async def test_no_answer_falls_back_to_the_best_reward_weighted() -> None:
    result, _ = await vote(
        MajorityVote(n=3, weighting="reward"), ["hmm", "no idea", "pass"], {"no idea": 0.6}
    )
    assert texts(result.ranked) == ["no idea", "hmm", "pass"]
    assert result.best.reward == 0.6


# -- options -----------------------------------------------------------------------------


def test_majority_defaults_and_registry() -> None:
    strategy = parse_strategy({"algorithm": "majority", "n": 5})
    assert isinstance(strategy, MajorityVote)
    assert (strategy.n, strategy.answer_regex, strategy.weighting) == (5, None, "none")
    assert MajorityVote.needs_logprobs is False
    assert STRATEGIES["majority"] is MajorityVote


@pytest.mark.parametrize(
    ("regex", "why"),
    [
        ("(", "not a valid regular expression"),
        (r"\d+", "exactly one capturing group, not 0"),
        (r"(a)(b)", "exactly one capturing group, not 2"),
        (r"(?P<x>a)(?:b)(c)", "exactly one capturing group, not 2"),
    ],
)
async def test_bad_answer_regex(regex: str, why: str) -> None:
    # Compiled after admission (search.regex_check), by the strategy's preflight.
    with pytest.raises(InvalidRequest) as info:
        await parse_strategy({"algorithm": "majority", "answer_regex": regex}).preflight()
    assert info.value.param == "search.answer_regex"
    assert info.value.status_code == 400
    assert why in info.value.message


def test_one_group_regex_accepted() -> None:
    strategy = parse_strategy({"algorithm": "majority", "answer_regex": r"(?:x)=(\d+)"})
    assert isinstance(strategy, MajorityVote)


# A realistic line of model output, about 80 characters.
LINE = "The sea is wide and deep, and its waves roll on forever under the grey sky, ok!"
# Exponential on `re`, which ran it on the event loop with no end: the review's repro.
REDOS_RE = r"(.*)*QZX"
# Exponential on the `regex` engine too, whose guards see through the first.
REDOS = r"(?:\w+|\w+\s|.)*(\d)"


async def test_redos_answer_regex_is_bounded_h1() -> None:
    # Regression (H1): one request froze the whole server. Now the search's extractions get
    # 0.5 s in all, off the event loop, and then fail with a 400.
    strategy = parse_strategy({"algorithm": "majority", "n": 4, "answer_regex": REDOS})
    start = time.perf_counter()
    with pytest.raises(LimitExceeded) as info:
        await vote(cast(MajorityVote, strategy), [LINE] * 4)
    assert time.perf_counter() - start < 2.0  # the 0.5 s budget, on a loaded machine
    error = info.value
    assert (error.limit, error.param, error.status_code) == (
        "regex_time",
        "search.answer_regex",
        400,
    )


async def test_the_reviews_redos_pattern_finds_nothing_quickly_h1() -> None:
    strategy = parse_strategy({"algorithm": "majority", "n": 4, "answer_regex": REDOS_RE})
    start = time.perf_counter()
    result, _ = await vote(cast(MajorityVote, strategy), [LINE] * 4)
    assert time.perf_counter() - start < 0.1
    assert result.details == {"votes": {}}


def test_regex_time_is_one_budget_per_search_h1() -> None:
    # The budget is the server's (SearchContext.limits), and shared by the search's candidates:
    # eight that take a quarter of it each run out, where a budget per candidate (or none)
    # would let them all finish, in twice the time.
    strategy = MajorityVote(n=8, answer_regex=REDOS)
    slow = LINE[:48] + "!"  # about 50 ms
    one = min(timed(lambda: strategy.answers([slow], 10.0)) for _ in range(3))
    start = time.perf_counter()
    with pytest.raises(LimitExceeded):
        strategy.answers([slow] * 8, one * 4)
    assert time.perf_counter() - start < one * 6


def timed(call: Any) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def test_answer_regex_time_is_not_a_client_option() -> None:
    with pytest.raises(InvalidRequest):
        parse_strategy({"algorithm": "majority", "regex_seconds": 100})


def test_boxed_value_is_linear_in_unclosed_boxes() -> None:
    # Each unclosed box used to be rescanned to the end: 4,000 took 19 s.
    text = "\\boxed{7} " + "\\boxed{x " * 4000
    start = time.perf_counter()
    assert boxed_value(text) == "7"
    assert time.perf_counter() - start < 0.5


@pytest.mark.parametrize(
    ("regex", "why"),
    [
        ("(" + "a" * MAX_REGEX_CHARS + ")", "at most 256 characters"),
        # `regex` unrolls counted repeats when compiling: this one would take 300 MB.
        (r"(a{1000}){1000}", "counted repeats multiply to more than 10000"),
        (r"((a{100}){10}){11}", "counted repeats multiply to more than 10000"),
        (r"(a{0})b{0,20000}", "counted repeats multiply to more than 10000"),
    ],
)
def test_answer_regex_size_limits_h1(regex: str, why: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_strategy({"algorithm": "majority", "answer_regex": regex})
    assert info.value.param == "search.answer_regex"
    assert why in info.value.message


def test_answer_regex_within_limits_accepted() -> None:
    # Exactly the longest pattern allowed (lazy empty repeats as padding), and counted
    # repeats whose product is small.
    base = r"(\d{4}-\d{2}-\d{2})"
    pattern = base + "z*?" * ((MAX_REGEX_CHARS - len(base)) // 3)
    assert len(pattern) == MAX_REGEX_CHARS
    strategy = parse_strategy({"algorithm": "majority", "answer_regex": pattern})
    assert isinstance(strategy, MajorityVote)
    assert strategy.extract("on 2024-01-31.") == "2024-01-31"


@pytest.mark.parametrize(
    ("options", "param"),
    [({"weighting": "softmax"}, "search.weighting"), ({"answer_regex": 3}, "search.answer_regex")],
)
def test_bad_majority_options(options: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_strategy({"algorithm": "majority", **options})
    assert info.value.param == param


# -- through the server ------------------------------------------------------------------


def body(**search: Any) -> dict[str, Any]:
    return {"model": "m", "messages": CONV, "search": search}


async def test_http_majority_answers_with_the_vote(
    serve_app: Any, runtime_of: Any, script: Any
) -> None:
    reward = TableReward({"so 5": 0.9})
    runtime = runtime_of(script(["so 5", "so 4", "so 4", "so 6"]), reward)
    async with serve_app(runtime) as client:
        r = await client.post(URL, json=body(algorithm="majority", n=4))
    assert r.status_code == 200
    data = r.json()
    assert data["choices"][0]["message"]["content"] == "so 4"
    report = data["search"]
    assert (report["algorithm"], report["chosen_index"]) == ("majority", 1)
    assert (report["engine_calls"], report["reward_calls"], report["chosen_reward"]) == (1, 0, None)
    assert reward.calls == []


async def test_http_majority_weighted_and_bad_regex(
    serve_app: Any, runtime_of: Any, script: Any
) -> None:
    # Unbounded: sigmoid weights, 5 has 0.71 against 4's 2 x 0.05 and 6's 0.5.
    reward = TableReward({"so 5": 0.9, "so 4": -3.0})
    runtime = runtime_of(script(["so 5", "so 4", "so 4", "so 6"]), reward)
    async with serve_app(runtime) as client:
        weighted = await client.post(URL, json=body(algorithm="majority", weighting="reward"))
        bad = await client.post(URL, json=body(algorithm="majority", answer_regex="(a"))
    assert weighted.json()["choices"][0]["message"]["content"] == "so 5"
    assert weighted.json()["search"]["reward_calls"] == 1
    assert bad.status_code == 400
    assert bad.json()["error"]["param"] == "search.answer_regex"


async def test_conformance_with_self_consistency_plurality_vote() -> None:
    """Wang et al. 2022: parse each sampled path's final answer and take the most frequent
    (the paper's unweighted plurality vote), stated here independently of MajorityVote."""
    sampled = ["so 12", "it is 7", "7", "x = 12", "answer 12", "maybe 7", "none", "3"]
    parsed = [re.findall(r"-?\d+", t)[-1] if re.findall(r"-?\d+", t) else None for t in sampled]
    counts = Counter(a for a in parsed if a is not None)
    top = max(counts.values())
    # Ties go to the answer seen first; the reply is the first path with that answer.
    expected = next(a for a in parsed if a is not None and counts[a] == top)
    result, _ = await vote(MajorityVote(n=len(sampled)), sampled)
    assert result.details["winner"] == expected == "12"
    assert result.best.text == sampled[parsed.index(expected)]
    assert result.details["votes"] == {a: float(c) for a, c in counts.items()}
