"""The PRM input (Qwen2.5-Math-PRM's chat layout) and the step score read from two logits."""

from __future__ import annotations

import math
from typing import Any

import pytest

from rewards.prm_format import (
    QWEN_PRM_SYSTEM,
    clean_steps,
    positive_probability,
    prm_messages,
    question_of,
)
from search.errors import RewardUnavailable

SEP = "<extra_0>"


def test_qwen_layout_one_separator_after_each_step() -> None:
    conversation = [{"role": "user", "content": "What is 2 + 3?"}]
    steps = ["2 + 3 = 5.\n\n", "The answer is \\boxed{5}."]
    assert prm_messages(conversation, steps) == [
        {
            "role": "system",
            "content": "Please reason step by step, and put your final answer within \\boxed{}.",
        },
        {"role": "user", "content": "What is 2 + 3?"},
        {"role": "assistant", "content": f"2 + 3 = 5.{SEP}The answer is \\boxed{{5}}.{SEP}"},
    ]
    assert QWEN_PRM_SYSTEM.endswith("\\boxed{}.")


def test_the_question_is_the_last_user_turn_and_the_system_prompt_is_the_prms() -> None:
    conversation = [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "answer"},
        {"role": "user", "content": "second"},
    ]
    messages = prm_messages(conversation, ["x"])
    assert [m["role"] for m in messages] == ["system", "user", "assistant"]
    assert messages[0]["content"] == QWEN_PRM_SYSTEM
    assert messages[1]["content"] == "second"
    assert question_of([{"role": "system", "content": "s"}]) == ""


@pytest.mark.parametrize(
    ("steps", "expected"),
    [
        (["a\n\n", "b\n\n", "c"], ["a", "b", "c"]),
        # A whitespace-only step adds nothing: the last non-empty step is scored.
        (["a\n\n", "\n\n", "b\n\n", "  \n\n"], ["a", "b"]),
        (["\n\n", " "], [""]),
        ([], [""]),
        # The separator inside a step never makes a step boundary of its own.
        ([f"a{SEP}b\n\n", SEP], ["ab"]),
    ],
)
def test_clean_steps(steps: list[str], expected: list[str]) -> None:
    assert clean_steps(steps, SEP) == expected


def test_separators_in_the_question_and_steps_are_removed() -> None:
    conversation = [{"role": "user", "content": f"q{SEP}uestion"}]
    messages = prm_messages(conversation, [f"s{SEP}1\n\n", "s2"], SEP)
    assert messages[1]["content"] == "question"
    assert messages[2]["content"] == f"s1{SEP}s2{SEP}"
    assert "".join(m["content"] for m in messages).count(SEP) == 2


def test_another_separator() -> None:
    assert prm_messages([], ["a", "b"], "<step>")[2]["content"] == "a<step>b<step>"


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ([0.0, 0.0], 0.5),
        ([0.0, math.log(3.0)], 0.75),
        ([math.log(3.0), 0], 0.25),
        ((2, 2), 0.5),
        # Far apart logits: no overflow, the limit values.
        ([1000.0, -1000.0], 0.0),
        ([-1000.0, 1000.0], 1.0),
    ],
)
def test_positive_probability_is_softmax_index_1(row: Any, expected: float) -> None:
    assert positive_probability(row) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("row", [[1.0], [1.0, 2.0, 3.0], 0.5, None, ["1", 2.0], [True, 0.0]])
def test_positive_probability_refuses_a_bad_row(row: Any) -> None:
    with pytest.raises(RewardUnavailable) as info:
        positive_probability(row)
    assert info.value.reason == "bad_value"


@pytest.mark.parametrize("row", [[math.nan, 0.0], [0.0, math.inf], [-math.inf, 1.0]])
def test_positive_probability_refuses_non_finite_logits(row: list[float]) -> None:
    with pytest.raises(RewardUnavailable) as info:
        positive_probability(row)
    assert info.value.reason == "non_finite"
