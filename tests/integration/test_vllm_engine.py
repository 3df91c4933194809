"""The in-process vLLM engine on the real default model."""

from __future__ import annotations

import pytest

from tests.integration import engine_checks as checks

pytestmark = pytest.mark.integration


async def test_n_and_max_tokens(engine, tokenizer) -> None:
    await checks.check_n_and_max_tokens(engine, tokenizer)


async def test_seed(engine, tokenizer) -> None:
    await checks.check_seed(engine, tokenizer)


async def test_greedy_and_top_k(engine, tokenizer) -> None:
    await checks.check_greedy_and_sampling_params(engine, tokenizer)


async def test_stop(engine, tokenizer) -> None:
    await checks.check_stop(engine, tokenizer)


async def test_logprobs(engine, tokenizer) -> None:
    await checks.check_logprobs(engine, tokenizer)


async def test_cancel_aborts_engine_requests(engine, tokenizer) -> None:
    await checks.check_cancel_aborts(engine, tokenizer, engine.num_unfinished_requests)


async def test_prompt_too_long_is_invalid_request(engine, tokenizer) -> None:
    from search.errors import InvalidRequest
    from search.types import SamplingConfig

    with pytest.raises(InvalidRequest):
        await engine.generate([42] * 5000, SamplingConfig(max_tokens=4))
