"""``spec_rejection`` (see prefix_fakes.py for how the fakes read)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

import pytest

from search.errors import InvalidRequest
from search.fakes import PromptTableGenerator, TableReward
from search.registry import parse_strategy
from search.spec_rejection import SpeculativeRejection, next_decision, survivors_count
from tests.unit.prefix_fakes import ROOTS, P, TwoRubricReward, context


def test_survivors_round_halves_to_even_and_keep_at_least_one() -> None:
    # Python's round(), as the reference's int(round(...)): 1.5 -> 2, 2.5 -> 2, 4.5 -> 4.
    assert [survivors_count(m, 0.5) for m in (1, 2, 3, 4, 5, 8, 9)] == [1, 1, 2, 2, 2, 4, 4]
    assert survivors_count(5, 0.0) == 5
    assert survivors_count(10, 0.3) == 7
    assert survivors_count(5, 0.9) == 1  # the reference keeps 0 and stops


def test_next_decision_spends_the_first_batchs_tokens_at_least_a_step_apart() -> None:
    # 64 started, first cut at 16: 1024 tokens. 32 live run to 32, 16 to 64 (capped).
    assert next_decision(16, 32, 1024, 16, 64) == 32
    assert next_decision(32, 16, 1024, 16, 64) == 64
    # A cut that barely shrank the pool (30 live: 1024 // 30 = 34) still moves 16 on.
    assert next_decision(32, 30, 1024, 16, 128) == 48


async def test_spec_rejection_cuts_live_and_finished_together() -> None:
    # 4 started, first cut at 2 tokens. aa .1, bb .9, dd .5 and the finished "c" .6 are
    # ranked on the partial rubric; "c" is also judged complete (its candidate reward).
    # keep round(0.5 * 4) = 2 -> bb and c. bb alone is live: 4 x 2 tokens of memory let
    # it run to 8, capped at max_tokens 4: "bb11", with no cut after it, judged complete.
    gen = PromptTableGenerator({**ROOTS, P + "bb": ["11"]})
    reward = TableReward({"aa": 0.1, "bb": 0.9, "c": 0.6, "dd": 0.5, "bb11": 0.4})
    result = await SpeculativeRejection(n=2, n_initial=4, decision_tokens=2).run(
        context(gen, reward, max_tokens=4)
    )
    assert [c.text for c in result.candidates] == ["c", "bb11"]  # every finished response
    assert result.best.text == "c"
    assert [(p, m, n) for p, m, _, n in gen.calls] == [(P, 2, 4), (P + "bb", 2, 1)]
    assert reward.calls == [
        (["aa", "bb", "c", "dd"], True),
        (["c"], False),
        (["bb11"], False),
    ]
    assert result.details == {
        "rank_score": "partial",
        "rounds": [
            {
                "tokens": 2,
                "pool": 4,
                "kept": 2,
                "continued": 1,
                "rank_scores": [0.9, 0.6, 0.5, 0.1],
            }
        ],
    }
    b = result.budget
    assert (b.generated_tokens, b.engine_calls, b.reward_calls) == (7 + 2, 2, 3)


async def test_finished_response_is_scored_once_per_rubric_not_rejudged_every_round() -> None:
    # Regression: the old loop re-scored every pool member (finished "c" included) at
    # each decision point, then the survivors again at the end.
    # alpha 0.25: 4 -> keep 3 (bb, c, dd); bb11 .7, dd22 .3, c .6 -> keep 2 (bb11, c);
    # bb11 runs to 8. "c" stays in the pool for two cuts but is judged once per rubric.
    table = {**ROOTS, P + "bb": ["11X"], P + "dd": ["22X"], P + "bb11": ["3344"]}
    rewards = {"aa": 0.1, "bb": 0.9, "c": 0.6, "dd": 0.5, "bb11": 0.7, "dd22": 0.3}
    reward = TableReward({**rewards, "bb113344": 0.5})
    result = await SpeculativeRejection(n=2, n_initial=4, decision_tokens=2, alpha=0.25).run(
        context(PromptTableGenerator(table), reward, max_tokens=8)
    )
    assert [r["pool"] for r in result.details["rounds"]] == [4, 3]
    scored = Counter((t, partial) for texts, partial in reward.calls for t in texts)
    assert set(scored.values()) == {1}
    assert scored[("c", True)] == scored[("c", False)] == 1
    # bb113344 finished in the last segment, with no cut after it: judged complete only.
    assert ("bb113344", True) not in scored
    assert [c.text for c in result.candidates] == ["c", "bb113344"]
    assert result.best.text == "c" and result.best.reward == 0.6


async def test_a_cut_ranks_live_and_finished_responses_on_one_rubric() -> None:
    # The complete rubric reads higher than the partial one: "c" (finished) scores .9
    # complete and .4 partial. alpha 0.75 keeps round(0.25 x 4) = 1 of aa .1, bb .5,
    # c .4, dd .3 on the partial rubric: bb, which runs on. Ranked with c's complete .9
    # among the prefixes' partial scores (the old mixed cut), c alone would have survived
    # and the search stopped after 2 tokens. c stays a candidate with its complete .9.
    gen = PromptTableGenerator({**ROOTS, P + "bb": ["11"]})
    reward = TwoRubricReward(
        {"c": 0.9, "bb11": 0.3}, partial_table={"aa": 0.1, "bb": 0.5, "c": 0.4, "dd": 0.3}
    )
    result = await SpeculativeRejection(n=1, n_initial=4, decision_tokens=2, alpha=0.75).run(
        context(gen, reward, max_tokens=4)
    )
    (cut,) = result.details["rounds"]
    assert result.details["rank_score"] == "partial"
    assert (cut["kept"], cut["continued"], cut["rank_scores"]) == (1, 1, [0.5, 0.4, 0.3, 0.1])
    assert [(p, m) for p, m, _, _ in gen.calls] == [(P, 2), (P + "bb", 2)]
    # Candidates carry complete scores only; the answer is picked on them.
    assert [(c.text, c.reward) for c in result.candidates] == [("c", 0.9), ("bb11", 0.3)]
    assert result.best.text == "c"
    assert reward.calls == [
        (["aa", "bb", "c", "dd"], True),
        (["c"], False),
        (["bb11"], False),
    ]


# max 6, first cut at 2: 4 roots -> keep 2 (bb, dd) -> both to 4 (8 // 2) -> keep 1
# (dd33) -> to 6.
REPEATS = {
    P: ["aaXXXX", "bbYYYY", "ccWWWW", "ddZZZZ"],
    P + "bb": ["11XX"],
    P + "dd": ["33XX"],
    P + "dd33": ["44XX"],
}
REPEATS_REWARDS = {"bb": 0.9, "dd": 0.8, "bb11": 0.2, "dd33": 0.7, "dd3344": 0.5}


async def test_spec_rejection_repeats_until_every_survivor_finishes() -> None:
    reward = TableReward(REPEATS_REWARDS)
    result = await SpeculativeRejection(n=2, n_initial=4, decision_tokens=2).run(
        context(PromptTableGenerator(REPEATS), reward, max_tokens=6)
    )
    assert [c.text for c in result.candidates] == ["dd3344"]
    assert [r["kept"] for r in result.details["rounds"]] == [2, 1]
    assert result.budget.generated_tokens == 8 + 4 + 2  # far below 4 x 6
    assert result.budget.engine_calls == 4
    assert reward.calls[-1] == (["dd3344"], False)  # judged complete once, when it finished


async def test_spec_rejection_commits_the_text_of_its_last_survivor() -> None:
    # As above: no common prefix while bb and dd both survive; once dd33 alone survives,
    # its text is final, and then its continuation.
    ctx = context(PromptTableGenerator(REPEATS), TableReward(REPEATS_REWARDS), max_tokens=6)
    commits: list[str] = []
    ctx.on_commit = commits.append
    result = await SpeculativeRejection(n=2, n_initial=4, decision_tokens=2).run(ctx)
    assert commits == ["dd33", "dd3344"] and result.best.text == "dd3344"


async def test_spec_rejection_defaults_follow_n_and_max_tokens() -> None:
    # 8n started, cut first where they hold Best-of-n's n x max_tokens tokens: at
    # max_tokens / 8, but never before 8 tokens nor after max_tokens.
    strategy = SpeculativeRejection(n=3)
    assert (strategy.initial(), strategy.step(256), strategy.step(40), strategy.step(3)) == (
        24,
        32,
        8,
        3,
    )
    # The first call samples n_initial at once: the server's greedy guard must see that.
    assert strategy.samples_per_call() == strategy.peak_candidates() == 24
    # At most 256 by default; a client's n_initial sets the first cut the same way.
    assert SpeculativeRejection(n=64).initial() == 256
    assert SpeculativeRejection(n=1, n_initial=64).step(1024) == 16


def test_the_default_start_fits_the_servers_live_limit_and_an_option_does_not() -> None:
    strategy = SpeculativeRejection(n=2)
    strategy.fit_live_limit(5)
    assert strategy.initial() == 5
    strategy.fit_live_limit(9)  # only ever lowered
    assert strategy.initial() == 5 and strategy.step(40) == 16  # 2 x 40 // 5
    strategy.fit_live_limit(1)  # never below n: the server's check then names the limit
    assert strategy.initial() == 2
    chosen = SpeculativeRejection(n=2, n_initial=12)
    chosen.fit_live_limit(4)
    assert chosen.initial() == 12


def test_spec_rejection_many_started_for_one_answer() -> None:
    strategy = parse_strategy(
        {"algorithm": "spec_rejection", "n": 1, "n_initial": 64, "decision_tokens": 16}
    )
    assert isinstance(strategy, SpeculativeRejection)
    assert (strategy.samples_per_call(), strategy.peak_candidates()) == (64, 64)
    assert strategy.step(64) == 16


@pytest.mark.parametrize(
    ("options", "param"),
    [
        ({"n": 4, "n_initial": 3}, "search.n_initial"),
        ({"alpha": 1.0}, "search.alpha"),
        ({"alpha": -0.1}, "search.alpha"),
        ({"decision_tokens": 0}, "search.decision_tokens"),
    ],
)
def test_spec_rejection_validation_names_the_field(options: dict[str, object], param: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_strategy({"algorithm": "spec_rejection", **options})
    assert info.value.param == param


# -- conformance with the reference ---------------------------------------------------
@dataclass
class Trajectory:
    text: str
    score: float
    finished: bool


@dataclass
class ReferenceRun:
    cuts: list[int]  # keep_amount of every perform_speculative_rejection
    continued: list[tuple[str, int]]  # (response so far, gen_len) per generated row
    scored: list[str]  # every text compute_scores saw
    choice: str


def reference_rule(
    table: Mapping[str, list[str]],
    rewards: Mapping[str, float],
    n_initial: int,
    alpha: float,
    memory: int,
    max_len: int,
) -> ReferenceRun:
    """Zanette-Labs/SpeculativeRejection @ b51917f, stated over the fakes:
    ``SpeculativeRejection.generate`` and ``perform_speculative_rejection``
    (speculative_rejection.py), then ``gather_best_ans`` (max score over every stored
    trajectory, first on ties). Its GPU memory is ``memory`` generated tokens: a batch of
    B may grow to memory // B (``get_gen_len``, at least 1). Row i of the first batch
    samples table[P][i], a continuation table[P + text][0]; a row is finished when its
    sample ended inside the segment (the reference: a stop token was decoded)."""
    kept: list[Trajectory] = []  # self.trajectories
    finished_store: list[Trajectory] = []  # self.finished_trajectories
    generations = [""] * n_initial  # current_generations, without the prompt
    length, cuts, continued, scored = 0, [], [], []
    current: list[Trajectory] = []
    while length < max_len:
        gen_len = max(1, min(memory // len(generations), max_len) - length)
        current = []
        for i, text in enumerate(generations):
            sample = table[P][i] if length == 0 else table[P + text][0]
            if length > 0:
                continued.append((text, gen_len))
            out = text + sample[:gen_len]
            scored.append(out)
            current.append(Trajectory(out, rewards[out], len(sample) <= gen_len))
        length += gen_len  # the padded batch grows by gen_len, finished rows too
        previous_finished = [t for t in kept if t.finished]
        finished_store += previous_finished
        to_rank = sorted(previous_finished + current, key=lambda t: t.score, reverse=True)
        keep = int(round((1.0 - alpha) * len(to_rank)))  # noqa: RUF046 (as written there)
        cuts.append(keep)
        kept = to_rank[:keep]
        generations = [t.text for t in kept if not t.finished]
        if not generations:
            break
    stored = kept + current + finished_store
    scores = [t.score for t in stored]
    return ReferenceRun(cuts, continued, scored, stored[scores.index(max(scores))].text)


# 10 started, first cut at 2 (memory 20), max 10. Cut 1 keeps 5 of 10: ee bb f hh jj
# ("f" finished; "gg" finished and rejected). 4 live run to 20 // 4 = 5: bb1 finishes.
# Cut 2: 5 -> round(2.5) = 2 (hh123, bb1; ceil would keep jj123 too). hh123 runs to 10.
CONFORMANCE = {
    P: [
        "aaXXXXXXXX",
        "bbXXXXXXXX",
        "f",
        "ddXXXXXXXX",
        "eeXXXXXXXX",
        "gg",
        "hhXXXXXXXX",
        "iiXXXXXXXX",
        "jjXXXXXXXX",
        "kkXXXXXXXX",
    ],
    P + "ee": ["123XXXX"],
    P + "bb": ["1"],
    P + "hh": ["123XXXX"],
    P + "jj": ["123XXXX"],
    P + "hh123": ["45678XX"],
}
CONFORMANCE_REWARDS = {
    **{"aa": 0.10, "bb": 0.70, "f": 0.65, "dd": 0.30, "ee": 0.90},
    **{"gg": 0.20, "hh": 0.50, "ii": 0.40, "jj": 0.45, "kk": 0.05},
    **{"ee123": 0.60, "bb1": 0.68, "hh123": 0.80, "jj123": 0.66, "hh12345678": 0.55},
}


async def test_spec_rejection_conforms_to_the_reference_rule() -> None:
    ref = reference_rule(CONFORMANCE, CONFORMANCE_REWARDS, 10, 0.5, 20, 10)
    gen, reward = PromptTableGenerator(CONFORMANCE), TableReward(CONFORMANCE_REWARDS)
    result = await SpeculativeRejection(n=1, n_initial=10, decision_tokens=2).run(
        context(gen, reward, max_tokens=10)
    )
    # The reference also cuts after the segment that reached max_len; that cut decides
    # nothing (its final max looks at every trajectory of that segment), and alignserve,
    # with nothing live left, does not make it.
    assert ref.cuts == [5, 2, 1]
    assert [r["kept"] for r in result.details["rounds"]] == ref.cuts[:-1]
    # Same live survivors continued, in the same order, to the same decision points.
    assert [(prompt[len(P) :], m) for prompt, m, _, _ in gen.calls[1:]] == ref.continued
    # Same texts scored, each once per rubric: "f" sits in two rankings and is judged
    # once as a prefix (its rank score) and once as complete.
    scored = Counter((t, partial) for texts, partial in reward.calls for t in texts)
    assert sorted({t for t, _ in scored}) == sorted(ref.scored)
    assert len(set(ref.scored)) == len(ref.scored) and set(scored.values()) == {1}
    assert result.best.text == ref.choice == "bb1"


async def test_spec_rejection_keeps_a_finished_response_the_reference_loses() -> None:
    # The documented difference: "b" finishes at the first cut with .7 but two live
    # prefixes score higher, so that cut rejects it; the reference never stored it and
    # answers with the live line's end (.4). alignserve keeps every finished response.
    table = {
        P: ["aaXXXX", "b", "ccXXXX", "ddXXXX"],
        P + "aa": ["11XX"],
        P + "cc": ["22XX"],
        P + "aa11": ["33XX"],
    }
    rewards = {"aa": 0.9, "b": 0.7, "cc": 0.8, "dd": 0.1, "aa11": 0.3, "cc22": 0.2}
    rewards["aa1133"] = 0.4
    ref = reference_rule(table, rewards, 4, 0.5, 8, 6)
    result = await SpeculativeRejection(n=2, n_initial=4, decision_tokens=2).run(
        context(PromptTableGenerator(table), TableReward(rewards), max_tokens=6)
    )
    assert ref.choice == "aa1133"
    assert [r["kept"] for r in result.details["rounds"]] == ref.cuts[:-1] == [2, 1]
    assert result.best.text == "b" and result.best.reward == 0.7
