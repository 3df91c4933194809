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
from search.errors import InvalidRequest, RewardUnavailable
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


# -- M1: the judge's prompt fits the judge's context ---------------------------------------


@dataclass
class ContextEngine:
    """A judge engine with a context of ``max_model_len`` tokens: a longer prompt (plus the
    one generated token) is refused as vLLM refuses it; otherwise a certain "7"."""

    max_model_len: int
    prompts: list[str] = field(default_factory=list)

    async def generate(
        self, prompt_ids: Sequence[int], params: SamplingConfig, n: int = 1
    ) -> list[Completion]:
        if len(prompt_ids) + params.max_tokens > self.max_model_len:
            raise InvalidRequest(
                f"The decoder prompt (length {len(prompt_ids)}) is longer than the maximum "
                f"model length of {self.max_model_len}."
            )
        self.prompts.append("".join(map(chr, prompt_ids)))
        top = {ord("7"): 0.0}
        return [
            Completion(token_ids=(ord("7"),), text="7", finish_reason="length", top_logprobs=(top,))
        ]


def full_prompt_length(conversation: list[dict[str, str]], response: str) -> int:
    return len(
        JudgeTokenizer().render_with_prefix(
            judge_messages(conversation, response, False), SCORE_PREFIX
        )
    )


async def judged_prompt(
    conversation: list[dict[str, str]], response: str, max_model_len: int
) -> str:
    engine = ContextEngine(max_model_len)
    judge = JudgeReward(engine, JudgeTokenizer(), max_model_len=max_model_len)  # type: ignore[arg-type]
    assert await judge.score(conversation, [response]) == [0.75]
    (prompt,) = engine.prompts
    assert len(prompt) <= max_model_len - 1
    return prompt


async def test_m1_a_prompt_that_fits_is_sent_as_it_is() -> None:
    conv = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    length = full_prompt_length(conv, "hello")
    prompt = await judged_prompt(conv, "hello", length + 1)
    assert prompt == "".join(
        map(
            chr,
            JudgeTokenizer().render_with_prefix(judge_messages(conv, "hello", False), SCORE_PREFIX),
        )
    )


async def test_m1_the_oldest_turns_are_left_out_first() -> None:
    conv = [
        {"role": "system", "content": "SYSTEM PROMPT"},
        {"role": "user", "content": "first question " + "a" * 400},
        {"role": "assistant", "content": "first answer " + "b" * 400},
        {"role": "user", "content": "second question " + "c" * 100},
        {"role": "assistant", "content": "second answer " + "d" * 100},
        {"role": "user", "content": "LAST QUESTION"},
    ]
    full = full_prompt_length(conv, "THE RESPONSE")
    # Room for everything but the first exchange (about 830 characters).
    prompt = await judged_prompt(conv, "THE RESPONSE", full - 700)
    assert "[... 2 earlier turns left out ...]" in prompt
    assert "first question" not in prompt and "first answer" not in prompt
    for kept in (
        "SYSTEM PROMPT",
        "second question",
        "second answer",
        "LAST QUESTION",
        "THE RESPONSE",
    ):
        assert kept in prompt
    # The marker sits after the system prompt, before the first kept turn.
    assert prompt.index("SYSTEM PROMPT") < prompt.index("left out") < prompt.index("second")


async def test_m1_then_the_middle_of_the_last_user_turn() -> None:
    user = "HEAD " + "x" * 3000 + " TAIL"
    conv = [{"role": "system", "content": "SYSTEM"}, {"role": "user", "content": user}]
    full = full_prompt_length(conv, "THE RESPONSE")
    prompt = await judged_prompt(conv, "THE RESPONSE", full - 1000)
    assert "HEAD " in prompt and " TAIL" in prompt and "characters left out ...]" in prompt
    assert "SYSTEM" in prompt and "Assistant's response:\nTHE RESPONSE\n\n" in prompt


async def test_m1_then_the_system_prompt_and_last_the_head_of_the_response() -> None:
    conv = [
        {"role": "system", "content": "S" * 1500},
        {"role": "user", "content": "U" * 1500},
    ]
    response = "START " + "r" * 3000 + " FINISH"
    # Nothing fits but about 1000 characters of each part, and the rubric.
    prompt = await judged_prompt(conv, response, 3600)
    assert prompt.count("characters left out ...]") == 3
    assert "START" not in prompt and prompt.count("r") >= 900 and " FINISH\n\n" in prompt


async def test_m1_a_prompt_that_cannot_fit_is_reward_unavailable() -> None:
    conv = [{"role": "user", "content": "u" * 5000}]
    judge = JudgeReward(ContextEngine(800), JudgeTokenizer(), max_model_len=800)  # type: ignore[arg-type]
    with pytest.raises(RewardUnavailable) as info:
        await judge.score(conv, ["r" * 5000])
    assert info.value.status_code == 503
    assert info.value.reason == "too_long"


async def test_m1_an_engine_refusal_is_503_without_the_engine_text(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # No max_model_len: the prompt goes as it is, and the engine refuses it.
    judge = JudgeReward(ContextEngine(100), JudgeTokenizer())  # type: ignore[arg-type]
    with pytest.raises(RewardUnavailable) as info:
        await judge.score([{"role": "user", "content": "q" * 200}], ["a"])
    assert info.value.status_code == 503
    assert info.value.message == "the judge could not score a response"
    assert "decoder prompt" in caplog.text  # the detail is the operator's
