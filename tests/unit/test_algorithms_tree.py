"""The searches that score prefixes: ``treebon``, ``spec_rejection`` and ``darwin``.

The fakes are one token per character; the chat prompt renders as "<user>hi<assistant>"
and a continuation's prompt is that plus the response so far, so PromptTableGenerator's
tables read as "which continuations follow this prefix". Every completion has log pi
-0.1 per token.
"""

from __future__ import annotations

import pytest

from search.darwin import Darwin, parse_rewrites, with_instruction
from search.errors import InvalidRequest
from search.fakes import PromptTableGenerator, TableReward, TokenTableReference, fake_context
from search.partial import Partial, segment_lengths
from search.registry import parse_strategy
from search.spec_rejection import SpeculativeRejection, survivors_count
from search.strategy import SearchContext, call_seed
from search.treebon import TreeBoN, children_per_parent, implicit_dpo_reward
from search.types import SamplingConfig

P = "<user>hi<assistant>"
# Roots with segments of 2 tokens: "aa", "bb", "dd" are cut (live), "c" stopped (finished).
ROOTS = {P: ["aaXX", "bbYY", "c", "ddZZ"]}


def context(
    generator: PromptTableGenerator,
    reward: TableReward,
    max_tokens: int,
    seed: int | None = 7,
    **kw: object,
) -> SearchContext:
    sampling = SamplingConfig(max_tokens=max_tokens, seed=seed, logprobs=True)
    return fake_context(generator, reward, sampling, **kw)  # type: ignore[arg-type]


# -- building blocks -----------------------------------------------------------------
def test_segments_split_max_tokens_without_exceeding_it() -> None:
    assert segment_lengths(10, 4) == [3, 3, 2, 2]
    assert segment_lengths(8, 4) == [2, 2, 2, 2]
    assert sum(segment_lengths(257, 5)) == 257


def test_partial_finishes_on_stop_or_at_max_tokens() -> None:
    from search.fakes import completion_of

    p = Partial().extend(completion_of("ab", "length"), max_tokens=4)
    assert not p.finished and p.text == "ab"
    assert p.extend(completion_of("cd", "length"), 4).finish_reason == "length"
    done = p.extend(completion_of("c", "stop"), 4)
    assert done.finish_reason == "stop" and done.completion().token_ids == (97, 98, 99)
    assert done.completion().cumulative_logprob == pytest.approx(-0.3)


def test_implicit_dpo_reward_weights_token_k_by_one_over_k() -> None:
    # (−1 − −2)/1 + (−2 − −2)/2 + (−3 − −2)/3 = 1 + 0 − 1/3
    assert implicit_dpo_reward([-1, -2, -3], [-2, -2, -2]) == pytest.approx(2 / 3)


def test_children_fill_the_live_slots_exactly() -> None:
    assert children_per_parent(4, 2) == [2, 2]
    assert children_per_parent(3, 2) == [2, 1]
    assert children_per_parent(1, 4) == [1]


def test_survivors_round_up_and_keep_at_least_one() -> None:
    assert [survivors_count(m, 0.5) for m in (1, 2, 3, 4, 8)] == [1, 1, 2, 2, 4]
    assert survivors_count(5, 0.0) == 5
    assert survivors_count(5, 0.9) == 1


# -- treebon -------------------------------------------------------------------------
async def test_treebon_keeps_finished_and_expands_the_best_parents() -> None:
    # Layer 1 (2 tokens): aa, bb, dd live, c finished. Partial rewards aa .1, bb .9, dd .5.
    # Live slots 3 with branching 2: parents bb (2 children) and dd (1 child).
    gen = PromptTableGenerator({**ROOTS, P + "bb": ["11", "22"], P + "dd": ["33"]})
    reward = TableReward(
        {"aa": 0.1, "bb": 0.9, "dd": 0.5, "c": 0.3, "bb11": 0.2, "bb22": 0.8, "dd33": 0.7}
    )
    ctx = context(gen, reward, max_tokens=4)
    result = await TreeBoN(n=4, branching=2, layers=2).run(ctx)

    assert [c.text for c in result.candidates] == ["c", "bb11", "bb22", "dd33"]
    assert result.best.text == "bb22" and result.best.reward == 0.8
    # Continuations are prompt ids + parent ids, 2 tokens each, n = children.
    calls = [(p, m, n) for p, m, _, n in gen.calls]
    assert calls == [(P, 2, 4), (P + "bb", 2, 2), (P + "dd", 2, 1)]
    # Each call has its own seed derived from the request's.
    assert [seed for _, _, seed, _ in gen.calls] == [7, call_seed(7, 1), call_seed(7, 2)]
    assert reward.calls == [(["aa", "bb", "dd"], True), (["c", "bb11", "bb22", "dd33"], False)]
    budget = result.budget
    assert budget.generated_tokens == 2 + 2 + 1 + 2 + (2 + 2) + 2  # never above 4 x 4
    assert (budget.engine_calls, budget.reward_calls) == (3, 2)
    assert result.details == {
        "partial_score": "reward",
        "layers": [
            {
                "segment_tokens": 2,
                "live": 3,
                "finished": 1,
                "parents": [1, 3],
                "partial_scores": [0.1, 0.9, 0.5],
            }
        ],
    }


async def test_treebon_with_a_reference_uses_the_weighted_dpo_reward() -> None:
    # Policy -0.1 per token. Reference: a -0.5, b -0.1, d -0.3. Implicit rewards of the
    # two-token prefixes: aa 0.4 + 0.4/2 = 0.6, bb 0, dd 0.2 + 0.1 = 0.3 -> parents aa, dd.
    gen = PromptTableGenerator({**ROOTS, P + "aa": ["11", "22"], P + "dd": ["33"]})
    reward = TableReward({"aa11": 0.5, "aa22": 0.4, "dd33": 0.6, "c": 0.1})
    ref = TokenTableReference({"a": -0.5, "b": -0.1, "d": -0.3})
    result = await TreeBoN(n=4, branching=2, layers=2).run(
        context(gen, reward, max_tokens=4, reference=ref)
    )
    layer = result.details["layers"][0]
    assert result.details["partial_score"] == "dpo"
    assert layer["partial_scores"] == pytest.approx([0.6, 0.0, 0.3])
    assert layer["parents"] == [0, 3]
    assert result.best.text == "dd33"
    # The reward model only scores the complete responses; the DPO pass counts as a call.
    assert reward.calls == [(["c", "aa11", "aa22", "dd33"], False)]
    assert result.budget.reward_calls == 2


async def test_treebon_dpo_without_reference_is_a_400() -> None:
    gen = PromptTableGenerator(ROOTS)
    with pytest.raises(InvalidRequest) as info:
        await TreeBoN(n=4, partial_score="dpo").run(context(gen, TableReward({}), max_tokens=4))
    assert info.value.param == "search.partial_score"


async def test_treebon_with_one_layer_is_best_of_n() -> None:
    gen = PromptTableGenerator({P: ["x", "yy", "zzz", "w"]})
    reward = TableReward({"x": 0.1, "yy": 0.9, "zzz": 0.5, "w": 0.9})
    result = await TreeBoN(n=4, branching=4, layers=1).run(context(gen, reward, max_tokens=8))
    assert result.best.text == "yy"
    assert len(gen.calls) == 1 and len(reward.calls) == 1


async def test_treebon_layers_above_max_tokens_is_a_400() -> None:
    with pytest.raises(InvalidRequest) as info:
        await TreeBoN(layers=5).run(context(PromptTableGenerator({}), TableReward({}), 4))
    assert info.value.param == "search.layers"


@pytest.mark.parametrize(
    ("options", "param"),
    [
        ({"n": 6, "branching": 4}, "search.branching"),
        ({"branching": 0}, "search.branching"),
        ({"layers": 0}, "search.layers"),
        ({"partial_score": "prm"}, "search.partial_score"),
        ({"layers": "4"}, "search.layers"),
    ],
)
def test_treebon_validation_names_the_field(options: dict[str, object], param: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_strategy({"algorithm": "treebon", **options})
    assert info.value.param == param


# -- spec_rejection ------------------------------------------------------------------
async def test_spec_rejection_cuts_live_and_finished_together() -> None:
    # n 2 -> 4 started, decision every 2 tokens. Partial: aa .1, bb .9, c .6, dd .5:
    # keep ceil(0.5 * 4) = 2 -> bb (live) and c (finished). bb continues to "bb11".
    gen = PromptTableGenerator({**ROOTS, P + "bb": ["11"]})
    reward = TableReward({"aa": 0.1, "bb": 0.9, "c": 0.6, "dd": 0.5, "bb11": 0.4})
    result = await SpeculativeRejection(n=2, decision_tokens=2).run(
        context(gen, reward, max_tokens=4)
    )
    assert [c.text for c in result.candidates] == ["bb11", "c"]
    assert result.best.text == "c"
    assert [(p, m, n) for p, m, _, n in gen.calls] == [(P, 2, 4), (P + "bb", 2, 1)]
    assert reward.calls == [(["aa", "bb", "c", "dd"], True), (["bb11", "c"], False)]
    assert result.details["rounds"] == [
        {"tokens": 2, "pool": 4, "kept": 2, "partial_rewards": [0.1, 0.9, 0.6, 0.5]}
    ]
    b = result.budget
    assert (b.generated_tokens, b.engine_calls, b.reward_calls) == (7 + 2, 2, 2)


# max 6, decision 2: 4 roots -> keep 2 (bb, dd) -> both +2 -> keep 1 (dd33) -> +2.
REPEATS = {
    P: ["aaXXXX", "bbYYYY", "ccWWWW", "ddZZZZ"],
    P + "bb": ["11XX"],
    P + "dd": ["33XX"],
    P + "dd33": ["44XX"],
}
REPEATS_REWARDS = {"bb": 0.9, "dd": 0.8, "bb11": 0.2, "dd33": 0.7, "dd3344": 0.5}


async def test_spec_rejection_repeats_until_every_survivor_finishes() -> None:
    reward = TableReward(REPEATS_REWARDS)
    result = await SpeculativeRejection(n=2, decision_tokens=2).run(
        context(PromptTableGenerator(REPEATS), reward, max_tokens=6)
    )
    assert [c.text for c in result.candidates] == ["dd3344"]
    assert [r["kept"] for r in result.details["rounds"]] == [2, 1]
    assert result.budget.generated_tokens == 8 + 4 + 2  # far below 4 x 6
    assert result.budget.engine_calls == 4


async def test_spec_rejection_commits_the_text_of_its_last_survivor() -> None:
    # As above: no common prefix while bb and dd both survive; once dd33 alone survives,
    # its text is final, and then its continuation.
    ctx = context(PromptTableGenerator(REPEATS), TableReward(REPEATS_REWARDS), max_tokens=6)
    commits: list[str] = []
    ctx.on_commit = commits.append
    result = await SpeculativeRejection(n=2, decision_tokens=2).run(ctx)
    assert commits == ["dd33", "dd3344"] and result.best.text == "dd3344"


@pytest.mark.parametrize(
    ("roots", "expected"),
    [
        # Both parents are "aa" prefixes: that much is final after layer 1.
        (["aaXX", "aaYY", "aaWW", "ddZZ"], ["aa"]),
        # "c" finished and keeps its slot: it could still be the answer, nothing is final.
        (["aaXX", "aaYY", "c", "ddZZ"], []),
    ],
)
async def test_treebon_commits_the_common_prefix_of_what_can_still_win(
    roots: list[str], expected: list[str]
) -> None:
    table = {P: roots, P + "aa": ["11", "22"]}
    reward = TableReward({"aa": 0.9, "dd": 0.1, "c": 0.0, "aa11": 0.3, "aa22": 0.6})
    ctx = context(PromptTableGenerator(table), reward, max_tokens=4)
    commits: list[str] = []
    ctx.on_commit = commits.append
    result = await TreeBoN(n=4, layers=2, branching=2, partial_score="reward").run(ctx)
    assert commits == expected and result.best.text == "aa22"


async def test_spec_rejection_defaults_follow_n_and_max_tokens() -> None:
    strategy = SpeculativeRejection(n=3)
    assert (strategy.initial(), strategy.step(256), strategy.step(3)) == (6, 64, 1)


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


# -- darwin --------------------------------------------------------------------------
REWRITE = "1. yo\n2. hey\n3. a\n4. b\n5. c"


def rewrites(prompt: str) -> list[str]:
    assert "Rewrite an instruction" in prompt and "Instruction: hi\n" in prompt
    return [REWRITE]


async def test_darwin_replaces_beams_and_archives_the_winning_instruction() -> None:
    # Plain seed output "ok" (0.5). Variants yo, hey, a, b, c; beams 0 (yo) and 1 (hey).
    # Step 1: "xx" .2 vs "zz" .7 -> top-1 is beam 1; beam 0 becomes a copy of it.
    # Step 2: both continue "zz" -> "zzww" (finished, .9). hey reached the top-k twice and
    # beat the seed's 0.5, so it joins the archive; the answer is "zzww".
    gen = PromptTableGenerator(
        {
            P: ["ok"],
            "<user>yo<assistant>": ["xxQQ"],
            "<user>hey<assistant>": ["zzRR"],
            "<user>hey<assistant>zz": ["ww"],
        },
        fallback=rewrites,
    )
    reward = TableReward({"ok": 0.5, "xx": 0.2, "zz": 0.7, "zzww": 0.9})
    ctx = context(gen, reward, max_tokens=4)
    result = await Darwin(n=2, replacement_period=2, top_k=1).run(ctx)

    assert [c.text for c in result.candidates] == ["ok", "zzww", "zzww"]
    assert result.best is result.candidates[1]
    (cycle,) = result.details["cycles"]
    assert cycle["variants"] == ["yo", "hey", "a", "b", "c"]
    assert cycle["rewrites_parsed"] == [True]
    assert cycle["topk_hits"] == {"hey": 2}
    assert cycle["steps"] == 2 and cycle["beam_variants"] == [1, 1]
    assert cycle["added_to_archive"] == ["hey"]
    assert result.details["archive"] == [
        {"instruction": "hi", "reward": 0.5},
        {"instruction": "hey", "reward": 0.9},
    ]
    # Every score is against the user's real conversation, never a mutated one.
    assert all(c == [{"role": "user", "content": "hi"}] for c in reward.conversations)
    assert reward.calls[1:] == [
        (["xx", "zz"], True),
        (["zzww", "zzww"], True),
        (["zzww", "zzww"], False),
    ]
    b = result.budget
    assert (b.engine_calls, b.reward_calls) == (1 + 1 + 2 + 2, 4)
    assert b.generated_tokens == 2 + len(REWRITE) + 2 + 2 + 2 + 2


async def test_darwin_keeps_the_seed_output_when_mutations_do_worse() -> None:
    gen = PromptTableGenerator(
        {P: ["ok"], "<user>hi<assistant>": ["ok"]},
        fallback=lambda prompt: ["not a list"] if "Rewrite" in prompt else ["bad"],
    )
    reward = TableReward({"ok": 0.5, "bad": 0.1})
    result = await Darwin(n=2, replacement_period=4, top_k=1).run(context(gen, reward, 4))
    (cycle,) = result.details["cycles"]
    # Unparseable rewrite: five copies of the instruction, flagged.
    assert cycle["variants"] == ["hi"] * 5 and cycle["rewrites_parsed"] == [False]
    assert result.best.text == "ok" and cycle["added_to_archive"] == []


def test_parse_rewrites_and_instruction_swap() -> None:
    assert parse_rewrites('1) "one"\n2. two\nnoise', "x") == (["one", "two", "x", "x", "x"], False)
    conv = [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "second"},
    ]
    assert with_instruction(conv, "new")[2] == {"role": "user", "content": "new"}
    assert conv[2]["content"] == "second"


@pytest.mark.parametrize(
    ("options", "param"),
    [
        ({"top_k": 0}, "search.top_k"),
        ({"replacement_period": 0}, "search.replacement_period"),
        ({"cycles": 0}, "search.cycles"),
        ({"mutations": 1.5}, "search.mutations"),
    ],
)
def test_darwin_validation_names_the_field(options: dict[str, object], param: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_strategy({"algorithm": "darwin", **options})
    assert info.value.param == param
