"""Hardening of the reward path (issue 13): the judge's prompt budget and the batch's blast
radius (M1), non-finite and wrong-length rewards at the boundary (M2, L10), abandoned
batches (L2), and the classifier keeping the response when it truncates (L8)."""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from rewards.batcher import ScoreItem
from rewards.fit import KEEP_CHARS, Shortened, cut_head, cut_middle, fit
from rewards.judge import JudgeReward
from search.errors import InvalidRequest
from search.fakes import CharTokenizer
from search.types import Completion, SamplingConfig
from server.settings import Settings
from tests.unit.conftest import USER, make_runtime

URL = "/v1/chat/completions"
CONTEXT = 3000  # the policy's and the judge's, in CharTokenizer tokens (characters)


class JudgeTokenizer(CharTokenizer):
    def token_id(self, token: str) -> int:
        return ord(token)


@dataclass
class ContextEngine:
    """The judge's engine: refuses a prompt over its context as vLLM does (a 400 with the
    engine's internals), else answers a certain "7" (reward 0.75)."""

    max_model_len: int = CONTEXT
    longest: int = 0
    refused: int = 0

    async def generate(
        self, prompt_ids: Sequence[int], params: SamplingConfig, n: int = 1
    ) -> list[Completion]:
        await asyncio.sleep(0)
        if len(prompt_ids) + params.max_tokens > self.max_model_len:
            self.refused += 1
            raise InvalidRequest(
                f"The decoder prompt (length {len(prompt_ids)}) is longer than the maximum "
                f"model length of {self.max_model_len}."
            )
        self.longest = max(self.longest, len(prompt_ids))
        top = {ord("7"): 0.0}
        return [Completion((ord("7"),), "7", "length", top_logprobs=(top,))]


def poison_body() -> dict[str, Any]:
    # "<user>" + content + "<assistant>" plus max_tokens just fits the policy's context;
    # the judge's prompt (rubric, re-rendered conversation, response) does not.
    content = "p" * (CONTEXT - 17 - 8 - 20)
    return {
        "model": "m",
        "messages": [{"role": "user", "content": content}],
        "max_tokens": 8,
        "search": {"n": 2},
    }


VICTIM = {"model": "m", "messages": USER, "max_tokens": 8, "search": {"n": 2}}


async def post_together(client: Any, bodies: list[dict[str, Any]]) -> list[Any]:
    return list(await asyncio.gather(*(client.post(URL, json=b) for b in bodies)))


# -- M1 -----------------------------------------------------------------------------------


async def test_m1_an_over_long_request_is_judged_on_a_shortened_prompt(serve_app: Any) -> None:
    engine = ContextEngine()
    judge = JudgeReward(engine, JudgeTokenizer(), max_model_len=CONTEXT)  # type: ignore[arg-type]
    settings = Settings(reward_max_wait_ms=200)  # one batch for all five requests
    async with serve_app(make_runtime(reward=judge, max_model_len=CONTEXT), settings) as client:
        replies = await post_together(client, [poison_body(), *[VICTIM] * 4])
    assert [r.status_code for r in replies] == [200] * 5
    assert engine.refused == 0 and 0 < engine.longest < CONTEXT


async def test_m1_a_judge_failure_stays_with_its_request_and_is_a_503(serve_app: Any) -> None:
    # A judge that does not know its context (a remote engine): the engine refuses the
    # long prompt. Only that request fails, with a 503 that holds nothing of the engine's.
    engine = ContextEngine()
    judge = JudgeReward(engine, JudgeTokenizer())  # type: ignore[arg-type]
    settings = Settings(reward_max_wait_ms=200)
    async with serve_app(make_runtime(reward=judge, max_model_len=CONTEXT), settings) as client:
        poisoned, *victims = await post_together(client, [poison_body(), *[VICTIM] * 4])
    assert [r.status_code for r in victims] == [200] * 4
    assert poisoned.status_code == 503
    assert poisoned.json()["error"]["message"] == "the judge could not score a response"
    assert "decoder" not in poisoned.text and str(CONTEXT) not in poisoned.text
    assert engine.refused >= 1


# -- rewards.fit ----------------------------------------------------------------------------


def test_cuts_keep_both_ends_or_the_tail_and_say_so() -> None:
    assert cut_middle("abcdefghij", 4) == "abc\n[... 4 characters left out ...]\nhij"
    assert cut_head("abcdefghij", 4) == "[... 4 characters left out ...]\nefghij"
    assert cut_middle("abc", 0) == cut_head("abc", 0) == "abc"


def test_shortened_splits_what_may_go_from_what_stays() -> None:
    conv = [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "u1"},
        {"role": "assistant", "content": "a1"},
        {"role": "user", "content": "u2"},
    ]
    state = Shortened.of(conv, "r")
    assert (state.system, state.turns, state.tail) == (
        (conv[0],),
        (conv[1], conv[2]),
        (conv[3],),
    )
    assert Shortened.of([{"role": "system", "content": "s"}], "r").tail == ()


def test_fit_leaves_out_whole_exchanges_so_turns_still_alternate() -> None:
    turns = [
        {"role": r, "content": f"{r}{i}" * 10} for i in range(4) for r in ("user", "assistant")
    ]
    conv = [*turns, {"role": "user", "content": "last"}]

    def render(state: Shortened) -> str:
        return "".join(m["content"] for m in state.conversation()) + state.response_text

    full = len(render(Shortened.of(conv, "r")))
    # One character over: the estimate leaves out the first user turn, and its answer.
    state, text, length = fit(Shortened.of(conv, "r"), render, len, full - 1, len)
    assert state.dropped == 2 and length == len(text) <= full - 1
    assert state.conversation()[0] == {"role": "user", "content": "user1" * 10}


def test_fit_reports_when_nothing_is_left_to_cut() -> None:
    conv = [{"role": "user", "content": "u" * 5000}]
    state, _, length = fit(Shortened.of(conv, "r" * 5000), lambda s: s, _size, 100, len)
    assert length > 100
    assert (state.user_cut, state.response_cut) == (5000 - KEEP_CHARS, 5000 - KEEP_CHARS)


def _size(state: Shortened) -> int:
    return sum(len(m["content"]) for m in state.conversation()) + len(state.response_text)


# -- M2 and L10 at the boundary (TimedReward) -------------------------------------------------


class Returns:
    """A reward model that answers ``values`` whatever it is asked."""

    bounds = None
    takes_token_ids = False

    def __init__(self, values: list[Any]) -> None:
        self.values = values

    async def score(self, conversation: Any, responses: Sequence[str], **_: Any) -> list[Any]:
        return self.values


def failures(metrics: str, reason: str) -> float:
    found = re.search(
        rf'alignserve_reward_failures_total\{{reason="{reason}",reward="judge"\}} (\S+)', metrics
    )
    return float(found.group(1)) if found else 0.0


@pytest.mark.parametrize(
    ("values", "reason"),
    [
        ([0.1, math.nan, 0.9, 0.5], "non_finite"),
        ([0.1, 0.2, math.inf, 0.5], "non_finite"),
        ([0.1, 0.2, 0.3, -math.inf], "non_finite"),
        ([0.1, 0.2, 0.3], "bad_value"),
        ([0.1, 0.2, 0.3, None], "bad_value"),
        ([0.1, 0.2, 0.3, "0.4"], "bad_value"),
    ],
)
async def test_m2_non_finite_or_wrong_rewards_fail_the_request_and_are_counted(
    serve_app: Any, values: list[Any], reason: str
) -> None:
    body = {"model": "m", "messages": USER, "search": {"n": 4, "return_candidates": True}}
    async with serve_app(make_runtime(reward=Returns(values))) as client:
        r = await client.post(URL, json=body)
        streamed = await client.post(URL, json={**body, "stream": True})
        text = (await client.get("/metrics")).text
    assert r.status_code == 503, r.text
    assert r.json()["error"]["type"] == "service_unavailable"
    assert "NaN" not in streamed.text and "Infinity" not in streamed.text
    assert failures(text, reason) == 2


class BlockingItems:
    """A batched reward model (score_items) whose calls run until cancelled."""

    bounds = None
    takes_token_ids = False

    def __init__(self) -> None:
        self.cancelled = 0

    async def score_items(self, items: Sequence[ScoreItem]) -> list[float]:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        return []

    async def score(self, conversation: Any, responses: Sequence[str], **_: Any) -> list[float]:
        return await self.score_items([ScoreItem(conversation, r) for r in responses])


async def test_l2_a_batched_reward_that_hangs_is_504_and_its_batch_is_cancelled(
    serve_app: Any,
) -> None:
    # The production path: TimedReward over the MicroBatcher over a score_items model.
    reward = BlockingItems()
    async with serve_app(make_runtime(reward=reward), Settings(reward_timeout_s=0.2)) as client:
        r = await client.post(URL, json={"model": "m", "messages": USER, "search": {"n": 2}})
        for _ in range(100):
            if reward.cancelled:
                break
            await asyncio.sleep(0.01)
    assert r.status_code == 504
    assert reward.cancelled == 1


# -- L8: the classifier keeps the response --------------------------------------------------


def word_tokenizer() -> Any:
    """A real Hugging Face fast tokenizer (word level, built in memory: nothing to load)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["[UNK]", "[PAD]", "old", "reply", "question", "answer", "END", "[", "]", "user"]
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=core, unk_token="[UNK]", eos_token="[PAD]")


@dataclass
class Conversation:
    old_turns: int = 0
    long_question: int = 0
    messages: list[dict[str, str]] = field(init=False)

    def __post_init__(self) -> None:
        old = [
            {"role": r, "content": ("old " if r == "user" else "reply ") * 20}
            for _ in range(self.old_turns)
            for r in ("user", "assistant")
        ]
        last = {"role": "user", "content": "question " * max(1, self.long_question)}
        self.messages = [*old, last]


def test_l8_the_classifier_leaves_out_old_turns_before_truncating() -> None:
    from rewards.classifier import fit_text, prepare_tokenizer

    tokenizer = prepare_tokenizer(word_tokenizer())
    text = fit_text(tokenizer, Conversation(old_turns=3).messages, "answer answer END", 40)
    assert "old" not in text and "reply" not in text
    assert "question" in text and text.endswith("answer answer END")


def test_l8_what_is_still_too_long_is_cut_from_the_left() -> None:
    from rewards.classifier import fit_text, prepare_tokenizer

    tokenizer = prepare_tokenizer(word_tokenizer())
    conversation = Conversation(long_question=100).messages
    text = fit_text(tokenizer, conversation, "answer END", 30)
    batch = tokenizer([text], truncation=True, max_length=30, add_special_tokens=False)
    ids = batch["input_ids"][0]
    assert len(ids) == 30
    # The response's tokens are the last ones kept; the question's head went instead.
    assert tokenizer.convert_ids_to_tokens(ids[-2:]) == ["answer", "END"]
    assert tokenizer.pad_token == "[PAD]"
