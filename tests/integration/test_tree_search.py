"""Tree searches on the real engine, in-process: continuations on prompt + partial ids,
and TreeBoN's implicit DPO reward with the engine's prompt logprobs as the reference."""

from __future__ import annotations

import pytest

from rewards.judge import JudgeReward
from search.engines.tokenizer import HFChatTokenizer
from search.partial import Partial
from search.strategy import SearchContext
from search.treebon import TreeBoN
from search.types import SamplingConfig
from tests.integration.engine_checks import prompt

pytestmark = pytest.mark.integration


async def test_prompt_logprobs_match_the_sampled_logprobs(engine, tokenizer) -> None:
    ids = prompt(tokenizer)
    (sample,) = await engine.generate(ids, SamplingConfig(max_tokens=12, seed=3, logprobs=True))
    ref = await engine.token_logprobs([*ids, *sample.token_ids])
    assert ref[0] is None and len(ref) == len(ids) + sample.num_tokens
    # The same model scoring its own sample: the reference's logprobs of those tokens are
    # the policy's (raw logprobs on both sides, before temperature).
    assert ref[len(ids) :] == pytest.approx(list(sample.logprobs), abs=1e-3)


async def test_continuation_text_joins_to_the_whole_response(engine, tokenizer) -> None:
    ids = prompt(tokenizer)
    params = SamplingConfig(max_tokens=6, seed=5)
    (head,) = await engine.generate(ids, params)
    (tail,) = await engine.generate([*ids, *head.token_ids], params)
    joined = Partial().extend(head, 12).extend(tail, 12)
    assert joined.text == tokenizer.decode(joined.token_ids)


async def test_treebon_with_a_reference_engine_uses_dpo_scores(
    engine, tokenizer: HFChatTokenizer
) -> None:
    conversation = [{"role": "user", "content": "Name three colours of the rainbow."}]
    ctx = SearchContext(
        generator=engine,
        reward=JudgeReward(engine, tokenizer),
        tokenizer=tokenizer,
        conversation=conversation,
        prompt_ids=tokenizer.render_chat(conversation),
        sampling=SamplingConfig(max_tokens=24, seed=11, logprobs=True),
        reference=engine,
    )
    result = await TreeBoN(n=4, branching=2, layers=3).run(ctx)
    assert len(result.candidates) == 4
    assert result.budget.generated_tokens <= 4 * 24
    assert result.details["partial_score"] == "dpo"
    # Policy and reference are one model, so every implicit reward is about zero.
    for layer in result.details["layers"]:
        assert layer["partial_scores"] == pytest.approx([0.0] * layer["live"], abs=1e-2)
    assert result.best.reward == max(c.reward for c in result.candidates)
