"""``darwin`` (see prefix_fakes.py for how the fakes read)."""

from __future__ import annotations

import pytest

from search.darwin import Darwin, parse_rewrites, with_instruction
from search.errors import InvalidRequest
from search.fakes import PromptTableGenerator, TableReward
from search.registry import parse_strategy
from tests.unit.prefix_fakes import P, context

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
