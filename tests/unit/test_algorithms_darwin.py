"""``darwin`` (see prefix_fakes.py for how the fakes read)."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from search.darwin import Darwin, most_frequent, parse_rewrites, update_archive, with_instruction
from search.errors import InvalidRequest
from search.fakes import PromptTableGenerator, TableReward, completion_of, fake_context
from search.registry import parse_strategy
from search.types import Completion, SamplingConfig
from tests.unit.prefix_fakes import P, TwoRubricReward, context

REWRITE = "1. A\n2. B\n3. C\n4. D\n5. E"


@dataclass
class EngineLikeTable(PromptTableGenerator):
    """Records each call's sampling and, like vLLM, cuts a text at its first stop string."""

    params: list[SamplingConfig] = field(default_factory=list)

    async def generate(
        self, prompt_ids: Sequence[int], params: SamplingConfig, n: int = 1
    ) -> list[Completion]:
        self.params.append(params)
        out = []
        for c in await super().generate(prompt_ids, params, n):
            cuts = [c.text.index(s) for s in params.stop if s in c.text]
            out.append(completion_of(c.text[: min(cuts)], "stop") if cuts else c)
        return out


def rewrite_of(instruction: str, text: str) -> Callable[[str], list[str]]:
    def answer(prompt: str) -> list[str]:
        assert "Rewrite an instruction" in prompt and f"Instruction: {instruction}\n" in prompt
        return [text]

    return answer


def client_context(gen: PromptTableGenerator, reward: TableReward, max_tokens: int) -> Any:
    """The client sends a stop string and a penalty; only answer calls may see them."""
    sampling = SamplingConfig(
        max_tokens=max_tokens, temperature=0.9, presence_penalty=0.5, stop=("\n",), seed=7
    )
    return fake_context(gen, reward, sampling)


async def test_darwin_keeps_each_beams_instruction_and_archives_the_top_two_by_hits() -> None:
    # Seed output "ok" (.5). Variants A-E, one beam each; top_k 2, 2-token steps.
    # Step 1: aa .1, bb .6, c (finished) 0, dd .5, ee .3 -> top [1, 3]. The seeded rng
    #   (seed 7, after its archive pick) draws 1 then 3: beam 0 takes "bb", beam 4 "dd";
    #   the finished beam 2 stays.
    # Step 2: each beam continues under its OWN instruction: A+"bb" -> "bbAA" (.7),
    #   B -> "bbBB" (.9), D -> "ddDD" (.2), E+"dd" -> "ddEE" (.8); top [1, 4].
    # Hits: beam 1 twice, beams 3 and 4 once; 3 was counted first, so the top two are
    # [1, 3]: B (.9) beats the parent's .5 and joins, D (.2) does not; "hi" leaves.
    gen = EngineLikeTable(
        {
            P: ["ok"],
            **{f"<user>{v}<assistant>": [f"{v.lower() * 2}XX"] for v in "ABDE"},
            "<user>C<assistant>": ["c"],
            "<user>A<assistant>bb": ["AA"],
            "<user>B<assistant>bb": ["BB"],
            "<user>D<assistant>dd": ["DD"],
            "<user>E<assistant>dd": ["EE"],
        },
        fallback=rewrite_of("hi", REWRITE),
    )
    table = {"ok": 0.5, "aa": 0.1, "bb": 0.6, "dd": 0.5, "ee": 0.3}
    table |= {"bbAA": 0.7, "bbBB": 0.9, "ddDD": 0.2, "ddEE": 0.8}
    reward = TableReward(table)
    result = await Darwin(top_k=2, replacement_period=2, cycles=1).run(
        client_context(gen, reward, max_tokens=4)
    )

    assert [c.text for c in result.candidates] == ["ok", "bbAA", "bbBB", "c", "ddDD", "ddEE"]
    assert result.best is result.candidates[2]
    (cycle,) = result.details["cycles"]
    assert cycle == {
        "picked": "hi",
        "picked_reward": 0.5,
        "variants": ["A", "B", "C", "D", "E"],
        "rewrites_parsed": [True],
        "beams": [
            {"variant": 0, "response_from": 1, "reward": 0.7},
            {"variant": 1, "response_from": 1, "reward": 0.9},
            {"variant": 2, "response_from": 2, "reward": 0.0},
            {"variant": 3, "response_from": 3, "reward": 0.2},
            {"variant": 4, "response_from": 3, "reward": 0.8},
        ],
        "topk_hits": [0, 2, 0, 1, 1],
        "winners": [1, 3],
        "steps": 2,
        "joined_archive": [{"instruction": "B", "reward": 0.9}],
        "left_archive": ["hi"],
    }
    assert result.details["archive"] == [{"instruction": "B", "reward": 0.9}]
    # Every score is against the user's real conversation, never a mutated one.
    assert all(c == [{"role": "user", "content": "hi"}] for c in reward.conversations)
    # Each period judges the live beams on the partial rubric and the finished ones on
    # the complete rubric, once each: step 2 finished every beam, so its complete scores
    # are the final rewards ("c" kept its step-1 score) and no final pass is needed.
    assert reward.calls == [
        (["ok"], False),
        (["aa", "bb", "dd", "ee"], True),
        (["c"], False),
        (["bbAA", "bbBB", "ddDD", "ddEE"], False),
    ]
    step2 = [
        f"<user>{v}<assistant>{state}"
        for v, state in [("A", "bb"), ("B", "bb"), ("D", "dd"), ("E", "dd")]
    ]
    assert [(p, m) for p, m, _, _ in gen.calls[7:]] == [(p, 2) for p in step2]
    b = result.budget
    assert (b.engine_calls, b.reward_calls) == (1 + 1 + 5 + 4, 4)
    assert b.generated_tokens == 2 + len(REWRITE) + (2 + 2 + 1 + 2 + 2) + 4 * 2


async def test_darwin_judges_finished_beams_on_the_complete_rubric() -> None:
    # The complete rubric reads higher than the partial one. Step 1: the live beams aa .1,
    # bb .6, dd .5, ee .3 on the partial rubric; the finished "c" .9 on the complete one
    # (.1 on the partial). top_k 1 -> c: every live beam takes c's response and the cycle
    # ends. Judged as unfinished (the old rule), c would rank last and bb win the period.
    gen = EngineLikeTable(
        {
            P: ["ok"],
            **{f"<user>{v}<assistant>": [f"{v.lower() * 2}XX"] for v in "ABDE"},
            "<user>C<assistant>": ["c"],
        },
        fallback=rewrite_of("hi", REWRITE),
    )
    partial = {"aa": 0.1, "bb": 0.6, "c": 0.1, "dd": 0.5, "ee": 0.3}
    reward = TwoRubricReward({"ok": 0.5, "c": 0.9}, partial_table=partial)
    result = await Darwin(top_k=1, replacement_period=2, cycles=1).run(
        client_context(gen, reward, max_tokens=4)
    )
    (cycle,) = result.details["cycles"]
    assert (cycle["topk_hits"], cycle["steps"]) == ([0, 0, 1, 0, 0], 1)
    assert [b["response_from"] for b in cycle["beams"]] == [2] * 5
    assert [b["reward"] for b in cycle["beams"]] == [0.9] * 5
    assert reward.calls == [(["ok"], False), (["aa", "bb", "dd", "ee"], True), (["c"], False)]
    assert result.best.text == "c" and result.best.reward == 0.9


async def test_darwin_rewrite_ignores_the_clients_stop_strings_and_penalties() -> None:
    # Regression: the rewrite call inherited the client's sampling, so stop "\n" cut the
    # numbered list after its first line and every variant fell back to the instruction.
    gen = EngineLikeTable({P: ["ok"]}, fallback=lambda p: [REWRITE] if "Rewrite" in p else ["x"])
    ctx = client_context(gen, TableReward({}), max_tokens=4)
    result = await Darwin(top_k=1, cycles=1, rewrite_tokens=300).run(ctx)
    (cycle,) = result.details["cycles"]
    assert cycle["variants"] == ["A", "B", "C", "D", "E"] and cycle["rewrites_parsed"] == [True]
    rewrite = gen.params[1]
    assert (rewrite.temperature, rewrite.top_k, rewrite.max_tokens) == (0.7, 40, 300)
    assert (rewrite.stop, rewrite.presence_penalty, rewrite.frequency_penalty) == ((), 0, 0)
    assert rewrite.seed is not None and rewrite.seed != ctx.sampling.seed
    # Answer calls keep the client's sampling.
    assert all(
        p.stop == ("\n",) and p.temperature == 0.9 for i, p in enumerate(gen.params) if i != 1
    )


async def test_darwin_unparseable_rewrite_falls_back_and_ties_keep_the_seed_output() -> None:
    # "not a list": five copies of "hi", so every beam is the user's own prompt P. Every
    # final reward ties the parent's .5: nothing joins (strictly better only) and the
    # seed output, the earliest candidate, stays the answer.
    gen = PromptTableGenerator({P: ["ok"]}, fallback=rewrite_of("hi", "not a list"))
    reward = TableReward({"ok": 0.5})
    result = await Darwin(top_k=1, replacement_period=4, cycles=1).run(context(gen, reward, 4))
    (cycle,) = result.details["cycles"]
    assert cycle["variants"] == ["hi"] * 5 and cycle["rewrites_parsed"] == [False]
    assert result.best is result.candidates[0] and len(result.candidates) == 6
    assert cycle["joined_archive"] == [] and cycle["left_archive"] == []
    assert result.details["archive"] == [{"instruction": "hi", "reward": 0.5}]


async def test_darwin_picks_an_archive_instruction_at_random_not_the_best() -> None:
    # No replacement (the ablation): each beam answers in one call, the top_k of the final
    # rewards count as the cycle's hits. Cycle 1: hi1 .9 and hi3 .7 beat "hi" (.5): both
    # join, "hi" leaves. Cycle 2: random.Random(0)'s second draw picks hi3, the WORSE of
    # the two; its variant hi32 (.8) beats .7 and replaces it.
    def world(prompt: str) -> list[str]:
        if "Rewrite" in prompt:
            instruction = prompt.split("Instruction: ")[-1].split("\n")[0]
            return ["\n".join(f"{j}. {instruction}{j}" for j in range(1, 6))]
        return ["r:" + prompt.removeprefix("<user>").removesuffix("<assistant>")]

    gen = PromptTableGenerator({P: ["ok"]}, fallback=world)
    table = {"ok": 0.5, "r:hi1": 0.9, "r:hi2": 0.1, "r:hi3": 0.7, "r:hi4": 0.2}
    reward = TableReward(table | {"r:hi5": 0.3, "r:hi32": 0.8})
    darwin = Darwin(top_k=2, cycles=2, replacement=False, seed=0)
    result = await darwin.run(context(gen, reward, max_tokens=8))

    first, second = result.details["cycles"]
    assert (first["picked"], first["steps"], first["winners"]) == ("hi", 1, [0, 2])
    assert first["topk_hits"] == [1, 0, 1, 0, 0]
    assert [e["instruction"] for e in first["joined_archive"]] == ["hi1", "hi3"]
    assert first["left_archive"] == ["hi"]
    assert (second["picked"], second["picked_reward"]) == ("hi3", 0.7)
    assert second["variants"] == [f"hi3{j}" for j in range(1, 6)]
    assert second["winners"] == [1, 0] and second["left_archive"] == ["hi3"]
    assert result.details["archive"] == [
        {"instruction": "hi1", "reward": 0.9},
        {"instruction": "hi32", "reward": 0.8},
    ]
    assert result.best.text == "r:hi1"
    # One call per beam for the whole response, no per-step scoring.
    assert all(m == 8 for _, m, _, _ in gen.calls[2:7])
    assert [partial for _, partial in reward.calls] == [False, False, False]


async def test_darwin_look_ahead_scores_a_peek_and_drops_it() -> None:
    # Five copies of "hi" (unparseable rewrite), top_k 1, steps of 2, max_tokens 5,
    # look_ahead 3. Step 1: "aa", peek min(3, 5 - 2) = 3 -> scored "aaxyZ". Step 2 goes on
    # from "aa" (the peek is dropped): "aaxy"; peek min(3, 1) = 1 -> "aaxy!". Step 3:
    # "aaxy!" finishes every beam, so no peek.
    gen = PromptTableGenerator(
        {P: ["aaXX"], P + "aa": ["xyZ"], P + "aaxy": ["!!"]},
        fallback=rewrite_of("hi", "no list"),
    )
    reward = TableReward({})
    darwin = Darwin(top_k=1, replacement_period=2, look_ahead=3, cycles=1)
    result = await darwin.run(context(gen, reward, max_tokens=5))
    beam_calls = [(p.removeprefix(P), m) for p, m, _, _ in gen.calls[2:]]
    assert beam_calls == [("", 2)] * 5 + [("aa", 3)] * 5 + [("aa", 2)] * 5 + [("aaxy", 1)] * 10
    # Step 3's finished beams are judged complete once (five copies of one text), and
    # those scores are the final rewards.
    calls = [(texts, partial) for texts, partial in reward.calls[1:]]
    assert calls == [(["aaxyZ"] * 5, True), (["aaxy!"] * 5, True), (["aaxy!"], False)]
    assert [c.text for c in result.candidates[1:]] == ["aaxy!"] * 5
    assert result.details["cycles"][0]["steps"] == 3


def test_update_archive_is_the_references_rule() -> None:
    archive = {"seed": 0.5, "old": 0.6}
    # Both beat the parent: both set (an existing entry's reward is overwritten, the later
    # offer of a repeated instruction wins); the parent leaves.
    joined, left = update_archive(archive, "seed", [("old", 0.55), ("new", 0.9)])
    assert archive == {"old": 0.55, "new": 0.9} and left
    assert joined == [{"instruction": "old", "reward": 0.55}, {"instruction": "new", "reward": 0.9}]
    # A variant equal to the parent (a fallback copy) updates it and it stays.
    assert update_archive(archive, "new", [("new", 1.0), ("x", 0.1)])[1] is False
    assert archive == {"old": 0.55, "new": 1.0}
    # Nothing beats the parent: unchanged; ties do not count.
    assert update_archive(archive, "old", [("y", 0.55)]) == ([], False)
    assert archive == {"old": 0.55, "new": 1.0}


def test_most_frequent_breaks_ties_by_first_count() -> None:
    hits = Counter([3, 1])
    hits.update([4, 1])
    hits.update([0, 4])
    assert most_frequent(hits, 2) == [1, 4] and most_frequent(Counter([2, 0]), 2) == [2, 0]


# -- conformance with the reference ----------------------------------------------------
def reference_cycle(
    rng: random.Random,
    archive: dict[str, float],
    mutate: Callable[[str], list[str]],
    decode: Callable[[str, str], str],
    score: Callable[[list[str]], list[float]],
    top_k: int,
) -> tuple[list[str], list[float], dict[int, int]]:
    """One iteration of declare-lab/darwin ``Darwin.generate`` on text, restated from its
    darwin.py (explore, random_replacement, top-2 winning beams) and utils.py
    (update_archive). ``decode(instruction, state)`` returns the next segment, "$" (the
    EOS) included when the response ended. Updates ``archive`` in place."""
    previous = rng.sample(list(archive), 1)[0]
    mutated = mutate(previous)
    states = ["" for _ in mutated]
    winning: Counter[int] | None = None
    while True:
        states = [s if "$" in s else s + decode(mutated[i], s) for i, s in enumerate(states)]
        scores = score([s.replace("$", "") for s in states])
        top = sorted(range(len(scores)), key=lambda i: scores[i], reverse=True)[:top_k]
        if not winning:
            winning = Counter(top)
        else:
            for i in top:
                winning[i] = winning.get(i, 0) + 1
        top_states = [states[i] for i in top]
        states = [
            s if "$" in s or i in top else rng.choice(top_states) for i, s in enumerate(states)
        ]
        if all("$" in s for s in states):
            break
    states = [s.replace("$", "") for s in states]
    rewards = score(states)
    top_2 = sorted(dict(winning), key=winning.__getitem__, reverse=True)[:2]
    previous_reward = archive[previous]
    updated = False
    for i in top_2:
        if previous_reward < rewards[i]:
            archive[mutated[i]] = rewards[i]
            updated |= mutated[i] != previous
    if updated:
        archive.pop(previous, None)
    return states, rewards, dict(winning)


# Seeds whose runs also tell apart a greedy archive pick and index-order tie-breaking.
@pytest.mark.parametrize("seed", [1, 3, 4])
async def test_darwin_matches_the_reference_rule_on_a_scripted_world(seed: int) -> None:
    # A world both sides query: segments and rewards are fixed pseudo-random functions of
    # (instruction, response so far) and of the text. Responses stop with chance .15 per
    # step, else run to max_tokens = 8 in steps of 2.
    def segment(instruction: str, state: str) -> tuple[str, bool]:
        draw = random.Random(f"{instruction}|{state}")
        if draw.random() < 0.15:
            return draw.choice("xyz"), True
        return "".join(draw.choice("abcdefgh") for _ in range(3)), False

    def variants(instruction: str) -> list[str]:
        return [f"{instruction}/{j}" for j in range(1, 6)]

    def score(texts: list[str]) -> list[float]:
        return [round(random.Random(t).random(), 3) for t in texts]

    def engine(prompt: str) -> list[str]:
        if "Rewrite" in prompt:
            picked = prompt.split("Instruction: ")[-1].split("\n")[0]
            return ["\n".join(f"{j}. {v}" for j, v in enumerate(variants(picked), 1))]
        instruction, state = prompt.removeprefix("<user>").split("<assistant>")
        text, _ = segment(instruction, state)
        return [text]

    def decode(instruction: str, state: str) -> str:
        text, stopped = segment(instruction, state)
        text = text[:2]
        return text + "$" if stopped or len(state) + len(text) >= 8 else text

    class WorldReward(TableReward):
        async def score(self, conversation: Any, responses: Any, **_: Any) -> Any:
            return score(list(responses))

    cycles, top_k = 3, 2
    gen = PromptTableGenerator({P: ["seed output"]}, fallback=engine)
    darwin = Darwin(top_k=top_k, replacement_period=2, cycles=cycles, seed=seed)
    result = await darwin.run(context(gen, WorldReward({}), max_tokens=8))

    (seed_reward,) = score(["seed output"])
    archive = {"hi": seed_reward}
    best, best_reward = "seed output", seed_reward
    rng = random.Random(seed)
    continued_copies = 0
    for c, cycle in enumerate(result.details["cycles"]):
        states, rewards, winning = reference_cycle(rng, archive, variants, decode, score, top_k)
        beams = result.candidates[1 + 5 * c : 6 + 5 * c]
        assert [b.text for b in beams] == states
        assert cycle["topk_hits"] == [winning.get(k, 0) for k in range(5)]
        assert [e["reward"] for e in cycle["beams"]] == rewards
        continued_copies += sum(
            e["response_from"] != k and states[k] != states[e["response_from"]]
            for k, e in enumerate(cycle["beams"])
        )
        if max(rewards) > best_reward:
            best, best_reward = states[rewards.index(max(rewards))], max(rewards)
    assert result.details["archive"] == [
        {"instruction": i, "reward": r} for i, r in archive.items()
    ]
    assert result.best.text == best
    # The example exercises what it claims to: copied responses continued under another
    # instruction than their source's, and a parent that left the archive.
    assert continued_copies > 0 and any(c["left_archive"] for c in result.details["cycles"])


# -- options ---------------------------------------------------------------------------
def test_darwin_has_one_beam_per_variant_whatever_n_says() -> None:
    darwin = parse_strategy({"algorithm": "darwin", "n": 4, "mutations": 2, "top_k": 9})
    assert isinstance(darwin, Darwin)
    assert (darwin.n, darwin.peak_candidates(), darwin.samples_per_call()) == (10, 10, 1)
    assert parse_strategy({"algorithm": "darwin"}).n == 5


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
        ({"top_k": 5}, "search.top_k"),
        ({"mutations": 2, "top_k": 10}, "search.top_k"),
        ({"replacement_period": 0}, "search.replacement_period"),
        ({"cycles": 0}, "search.cycles"),
        ({"mutations": 1.5}, "search.mutations"),
        ({"mutations": 0, "top_k": 4}, "search.mutations"),
        ({"look_ahead": -1}, "search.look_ahead"),
        ({"replacement": "no"}, "search.replacement"),
        ({"rewrite_tokens": 8}, "search.rewrite_tokens"),
    ],
)
def test_darwin_validation_names_the_field(options: dict[str, object], param: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_strategy({"algorithm": "darwin", "n": 4, **options})
    assert info.value.param == param
