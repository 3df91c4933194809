"""The generative judge: expected score from score-token probabilities, and its prompts."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

from rewards.judge import (
    PARTIAL_NOTE,
    RUBRIC,
    SCORE_PREFIX,
    JudgeReward,
    expected_score,
    judge_messages,
    render_conversation,
)
from search.fakes import CharTokenizer
from search.types import Completion, SamplingConfig

# Nine distinct made-up token ids for the scores "1".."9".
IDS = [101, 102, 103, 104, 105, 106, 107, 108, 109]


def lp(p: float) -> float:
    return math.log(p)


# -- expected_score ----------------------------------------------------------------------


def test_only_nine_present_is_one() -> None:
    assert expected_score({109: -3.0}, IDS) == 1.0


def test_only_one_present_is_zero() -> None:
    assert expected_score({101: -0.2}, IDS) == 0.0


def test_only_two_present_is_one_eighth() -> None:
    assert expected_score({102: -5.0}, IDS) == pytest.approx(0.125)


def test_one_and_nine_equal_is_half() -> None:
    assert expected_score({101: lp(0.3), 109: lp(0.3)}, IDS) == pytest.approx(0.5)


def test_none_present_is_midpoint() -> None:
    assert expected_score({}, IDS) == 0.5
    # Non-score tokens carry no information either.
    assert expected_score({7: -0.1, 8: -2.0}, IDS) == 0.5


def test_zero_probability_everywhere_is_midpoint() -> None:
    assert expected_score({101: -math.inf, 109: -math.inf}, IDS) == 0.5


def test_all_nine_uniform_is_half() -> None:
    assert expected_score(dict.fromkeys(IDS, lp(1 / 9)), IDS) == pytest.approx(0.5)


def test_all_nine_proportional_to_score() -> None:
    # p(s) = s / 45: the mean is sum(s^2) / 45 = 285 / 45 = 19/3; (19/3 - 1) / 8 = 2/3.
    top = {tok: lp(s / 45) for s, tok in zip(range(1, 10), IDS, strict=True)}
    assert expected_score(top, IDS) == pytest.approx(2 / 3)


def test_renormalises_over_present_score_tokens() -> None:
    # "3" at 0.2, "7" at 0.6, a non-score token at 0.2: mean (0.6 + 4.2) / 0.8 = 6.0,
    # so (6 - 1) / 8 = 0.625; the non-score mass does not pull the score down.
    top = {103: lp(0.2), 107: lp(0.6), 55: lp(0.2)}
    assert expected_score(top, IDS) == pytest.approx(0.625)


def test_unnormalised_probabilities_give_the_same_score() -> None:
    # Only the ratio matters: 3:1 on "9":"1" -> mean (27 + 1) / 4 = 7 -> 0.75.
    assert expected_score({109: lp(0.03), 101: lp(0.01)}, IDS) == pytest.approx(0.75)
    assert expected_score({109: lp(0.6), 101: lp(0.2)}, IDS) == pytest.approx(0.75)


def test_score_ids_must_be_nine() -> None:
    with pytest.raises(ValueError):
        expected_score({1: 0.0}, [1, 2, 3])


# -- prompts ----------------------------------------------------------------------------


def test_render_conversation() -> None:
    conv = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    assert render_conversation(conv) == "[system]\nbe brief\n\n[user]\nhi"


def test_judge_messages_full() -> None:
    msgs = judge_messages([{"role": "user", "content": "hi"}], "hello there", partial=False)
    assert msgs == [
        {"role": "system", "content": RUBRIC},
        {
            "role": "user",
            "content": (
                "Conversation:\n[user]\nhi\n\n"
                "Assistant's response:\nhello there\n\n"
                "Rate the response from 1 to 9."
            ),
        },
    ]


def test_judge_messages_partial_adds_the_note() -> None:
    msgs = judge_messages([{"role": "user", "content": "hi"}], "hel", partial=True)
    assert msgs[0] == {"role": "system", "content": RUBRIC + " " + PARTIAL_NOTE}
    assert msgs[1]["content"].startswith("Conversation:\n[user]\nhi\n\n")


# -- JudgeReward -------------------------------------------------------------------------


class JudgeTokenizer(CharTokenizer):
    """CharTokenizer (one id per character) plus the judge's ``token_id``."""

    def token_id(self, token: str) -> int:
        if len(token) != 1:
            raise ValueError(token)
        return ord(token)


@dataclass
class LogprobGenerator:
    """Answers a judge prompt with top logprobs that depend on the response found in the
    prompt; later responses answer sooner, to shuffle completion order."""

    by_response: dict[str, dict[int, float]]
    calls: list[tuple[list[int], SamplingConfig, int]] = field(default_factory=list)

    async def generate(
        self, prompt_ids: Sequence[int], params: SamplingConfig, n: int = 1
    ) -> list[Completion]:
        self.calls.append((list(prompt_ids), params, n))
        text = "".join(chr(t) for t in prompt_ids)
        matches = [r for r in self.by_response if f"Assistant's response:\n{r}\n\n" in text]
        assert len(matches) == 1, matches
        await asyncio.sleep(0.01 * (len(self.by_response) - len(self.calls)))
        top = self.by_response[matches[0]]
        return [
            Completion(
                token_ids=(ord("5"),),
                text="5",
                finish_reason="length",
                # A second position, as if more were generated: only the first counts.
                top_logprobs=(top, {ord("1"): 0.0}) if top else None,
            )
        ]


async def test_judge_reward_scores_in_order() -> None:
    d = {str(s): ord(str(s)) for s in range(1, 10)}
    gen = LogprobGenerator(
        {
            "first answer": {d["9"]: -0.5},  # 1.0
            "second answer": {d["1"]: lp(0.5), d["9"]: lp(0.5)},  # 0.5
            "third answer": {d["1"]: -0.1, ord("x"): -0.01},  # 0.0
            "fourth answer": {},  # no top logprobs at all: 0.5
            "fifth answer": {d["3"]: lp(0.2), d["7"]: lp(0.6)},  # 0.625
        }
    )
    judge = JudgeReward(gen, JudgeTokenizer())  # type: ignore[arg-type]
    conv = [{"role": "user", "content": "hi"}]
    rewards = await judge.score(conv, list(gen.by_response))
    assert rewards == pytest.approx([1.0, 0.5, 0.0, 0.5, 0.625])
    # One call per response, in order, each one greedy token with the top-20 logprobs.
    assert len(gen.calls) == 5
    for (prompt, params, n), response in zip(gen.calls, gen.by_response, strict=True):
        assert params == SamplingConfig(max_tokens=1, temperature=0.0, top_logprobs=20)
        assert n == 1
        tok = JudgeTokenizer()
        assert prompt == tok.render_with_prefix(judge_messages(conv, response, False), "Score: ")
        assert "".join(map(chr, prompt)).endswith("<assistant>" + SCORE_PREFIX)


async def test_judge_reward_partial_prompts_carry_the_note() -> None:
    gen = LogprobGenerator({"abc": {ord("9"): 0.0}})
    judge = JudgeReward(gen, JudgeTokenizer())  # type: ignore[arg-type]
    assert await judge.score([{"role": "user", "content": "q"}], ["abc"], partial=True) == [1.0]
    assert PARTIAL_NOTE in "".join(map(chr, gen.calls[0][0]))


async def test_judge_reward_no_responses() -> None:
    gen = LogprobGenerator({})
    judge = JudgeReward(gen, JudgeTokenizer())  # type: ignore[arg-type]
    assert await judge.score([{"role": "user", "content": "q"}], []) == []
    assert gen.calls == []


def test_judge_reward_needs_single_token_digits() -> None:
    class Multi(JudgeTokenizer):
        def token_id(self, token: str) -> int:
            raise ValueError(f"{token!r} is not a single token")

    with pytest.raises(ValueError):
        JudgeReward(LogprobGenerator({}), Multi())  # type: ignore[arg-type]
