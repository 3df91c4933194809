"""``treebon`` and the building blocks of the searches that score prefixes (see
prefix_fakes.py for how the fakes read)."""

from __future__ import annotations

import logging

import pytest

from search.context import call_seed
from search.errors import InvalidRequest
from search.fakes import PromptTableGenerator, TableReward, TokenTableReference
from search.partial import Partial, segment_lengths
from search.registry import parse_strategy
from search.treebon import TreeBoN, children_per_parent, implicit_dpo_reward
from tests.unit.prefix_fakes import ROOTS, P, context


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
    # The last layer's children are scored as their calls finish, the finished root first.
    assert reward.calls[:2] == [(["aa", "bb", "dd"], True), (["c"], False)]
    assert sorted(reward.calls[2:]) == [(["bb11", "bb22"], False), (["dd33"], False)]
    budget = result.budget
    assert budget.generated_tokens == 2 + 2 + 1 + 2 + (2 + 2) + 2  # never above 4 x 4
    assert (budget.engine_calls, budget.reward_calls) == (3, 4)
    assert budget.scored_responses == 3 + 4
    assert result.details == {
        "partial_score": "reward",
        "partial_score_why": "auto: the server has no --dpo-model and --reference-model, so "
        "the reward model scored the partial responses (RM-TreeBoN, the paper's weaker "
        "ablation)",
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


async def test_treebon_dpo_scores_with_the_dpo_model_over_its_reference() -> None:
    # DPO model: a -0.2, b -0.4, d -0.1; reference: a -0.5, b -0.1, d -0.3, so the log
    # ratios are a 0.3, b -0.3, d 0.2. Two-token prefixes: aa 0.3 + 0.3/2 = 0.45,
    # bb -0.3 - 0.15 = -0.45, dd 0.2 + 0.1 = 0.3 -> parents aa, dd. The policy's own
    # logprobs (-0.1 a token) play no part: with them as the numerator aa would be 0.6.
    gen = PromptTableGenerator({**ROOTS, P + "aa": ["11", "22"], P + "dd": ["33"]})
    reward = TableReward({"aa11": 0.5, "aa22": 0.4, "dd33": 0.6, "c": 0.1})
    dpo = TokenTableReference({"a": -0.2, "b": -0.4, "d": -0.1})
    ref = TokenTableReference({"a": -0.5, "b": -0.1, "d": -0.3})
    result = await TreeBoN(n=4, branching=2, layers=2).run(
        context(gen, reward, max_tokens=4, dpo=dpo, reference=ref)
    )
    layer = result.details["layers"][0]
    assert result.details["partial_score"] == "dpo"
    assert result.details["partial_score_why"].startswith("auto: the server has --dpo-model")
    assert layer["partial_scores"] == pytest.approx([0.45, -0.45, 0.3])
    assert layer["parents"] == [0, 3]
    assert result.best.text == "dd33"
    # Both scorers read the same ids: the prompt and each live partial response.
    live = [[ord(ch) for ch in P + text] for text in ("aa", "bb", "dd")]
    assert dpo.calls == live and ref.calls == live
    # The reward model only scores the complete responses (as they finish); the DPO pass
    # counts as a call.
    assert reward.calls[0] == (["c"], False)
    assert sorted(reward.calls[1:]) == [(["aa11", "aa22"], False), (["dd33"], False)]
    assert result.budget.reward_calls == 4


def test_treebon_never_asks_the_policy_for_logprobs() -> None:
    # Regression (review: needs_logprobs was set even for partial_score=reward): the DPO
    # score reads both scorers' prompt logprobs, never the sampled tokens'.
    assert TreeBoN.needs_logprobs is False


@pytest.mark.parametrize("scorers", [{}, {"reference": TokenTableReference({})}])
async def test_treebon_dpo_without_both_scorers_is_a_400(scorers: dict[str, object]) -> None:
    gen = PromptTableGenerator(ROOTS)
    with pytest.raises(InvalidRequest) as info:
        await TreeBoN(n=4, partial_score="dpo").run(
            context(gen, TableReward({}), max_tokens=4, **scorers)
        )
    assert info.value.param == "search.partial_score"
    assert "--dpo-model" in info.value.message and gen.calls == []


async def test_treebon_auto_without_both_scorers_scores_with_the_reward() -> None:
    gen = PromptTableGenerator({**ROOTS, P + "aa": ["11", "22"], P + "bb": ["33"]})
    reward = TableReward({"aa": 0.9, "bb": 0.5})
    ctx = context(gen, reward, max_tokens=4, dpo=TokenTableReference({}))
    result = await TreeBoN(n=4).run(ctx)
    assert result.details["partial_score"] == "reward"
    assert "RM-TreeBoN" in result.details["partial_score_why"]
    assert result.details["layers"][0]["partial_scores"] == [0.9, 0.5, 0.0]
    # Asked for by name, the report says so.
    ctx = context(gen, TableReward({}), max_tokens=4)
    result = await TreeBoN(n=4, partial_score="reward").run(ctx)
    assert result.details["partial_score_why"] == "requested"


def test_the_server_says_at_start_up_when_treebon_auto_runs_the_rm_ablation(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from server.runtime import note_treebon_partial_score

    with caplog.at_level(logging.WARNING, logger="server.runtime"):
        note_treebon_partial_score(has_scorers=True)
        assert caplog.records == []
        note_treebon_partial_score(has_scorers=False)
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert "RM-TreeBoN" in record.getMessage() and "--dpo-model" in record.getMessage()


# -- conformance: TreeBoN against the paper's rule, stated here on its own ---------------
# One token per character; log pi_dpo - log pi_ref per character: a 0.4, b -0.2, c 0.3,
# d -0.1. "ab" and "ba" (also "cd" and "dc") have equal plain sums, so only the 1/k
# weights separate them. Every segment is 2 tokens and none finishes early.
LOGP_DPO = {"a": -1.0, "b": -1.6, "c": -0.9, "d": -1.3}
LOGP_REF = {"a": -1.4, "b": -1.4, "c": -1.2, "d": -1.2}
CONTINUATIONS = {
    "": ["abXX", "baXX", "cdXX", "dcXX"],
    "ab": ["caXX", "bdXX"],
    "cd": ["aaXX", "dbXX"],
    "abca": ["ddXX", "cbXX"],
    "cdaa": ["bcXX", "adXX"],
}
FULL_REWARD = {"abcadd": 0.2, "abcacb": 0.4, "cdaabc": 0.9, "cdaaad": 0.3}


def paper_treebon(n: int, n_children: int, layers: int, seg: int) -> tuple[list[list[str]], str]:
    """Qiu et al. 2024 (arXiv 2410.16033), TreeBoN: N first segments from the base policy;
    at each further layer the N / N_children best by the weighted implicit reward
    r(y) = sum_k w_k log(pi*(y_k | x, y_<k) / pi_ref(y_k | x, y_<k)), w_k = 1 / |y_:k|,
    each continued N_children times; the answer is the argmax of the full reward over the
    last layer. Returns the parents of each layer and the answer."""

    def weighted_implicit_reward(y: str) -> float:
        return sum((LOGP_DPO[t] - LOGP_REF[t]) / len(y[: k + 1]) for k, t in enumerate(y))

    pool = [c[:seg] for c in CONTINUATIONS[""][:n]]
    parents_by_layer = []
    for _ in range(layers - 1):
        parents = sorted(pool, key=weighted_implicit_reward, reverse=True)[: n // n_children]
        parents_by_layer.append(parents)
        pool = [p + c[:seg] for p in parents for c in CONTINUATIONS[p][:n_children]]
    return parents_by_layer, max(pool, key=FULL_REWARD.__getitem__)


async def test_treebon_conforms_to_the_papers_rule() -> None:
    gen = PromptTableGenerator({P + prefix: texts for prefix, texts in CONTINUATIONS.items()})
    ctx = context(
        gen,
        TableReward(FULL_REWARD),
        max_tokens=6,
        dpo=TokenTableReference(LOGP_DPO),
        reference=TokenTableReference(LOGP_REF),
    )
    result = await TreeBoN(n=4, branching=2, layers=3).run(ctx)

    parents, answer = paper_treebon(n=4, n_children=2, layers=3, seg=2)
    assert parents == [["ab", "cd"], ["abca", "cdaa"]]  # the weights decide layer 1
    # TreeBoN continues exactly its parents: prompt + parent, after the roots' call.
    continued = [prompt.removeprefix(P) for prompt, _, _, _ in gen.calls[1:]]
    assert continued == [p for layer in parents for p in layer]
    assert result.best.text == answer == "cdaabc"


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
