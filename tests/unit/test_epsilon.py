"""ε-sampling: the request field reaches vLLM's SamplingParams (in process) and the upstream
(remote), and the logits processor (engines.epsilon) drops exactly the tokens under ε, on
both of vLLM's processor interfaces, on hand-computed logits."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace
from typing import Any

import httpx
import numpy as np
import pytest

from engines.remote import RemoteGenerator, completion_body
from engines.vllm_local import EPSILON_PROCESSOR, EngineConfig, VLLMGenerator, engine_kwargs
from search.errors import InvalidRequest
from search.fakes import ScriptedGenerator, TableReward
from search.types import SamplingConfig

URL = "/v1/chat/completions"


# -- the request -------------------------------------------------------------------------


async def test_chat_and_completions_pass_epsilon_to_the_engine(
    serve_app: Any, runtime_of: Any
) -> None:
    generator = ScriptedGenerator([["a"] * 4, ["b"] * 4])
    async with serve_app(runtime_of(generator, TableReward({}))) as client:
        chat = await client.post(
            URL, json={"messages": [{"role": "user", "content": "hi"}], "epsilon": 0.02}
        )
        plain = await client.post("/v1/completions", json={"prompt": "hi", "epsilon": 0.05})
    assert chat.status_code == 200 and plain.status_code == 200
    assert [params.epsilon for _, params, _ in generator.calls] == [0.02, 0.05]


@pytest.mark.parametrize("epsilon", [-0.1, 1.0, "0.1", True])
async def test_epsilon_out_of_range_is_a_400_naming_it(
    serve_app: Any, runtime_of: Any, epsilon: Any
) -> None:
    generator = ScriptedGenerator([["a"]])
    async with serve_app(runtime_of(generator, TableReward({}))) as client:
        r = await client.post(
            URL, json={"messages": [{"role": "user", "content": "hi"}], "epsilon": epsilon}
        )
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "epsilon"
    assert generator.calls == []


def test_the_in_process_engine_loads_the_processor_unless_speculative() -> None:
    assert engine_kwargs(EngineConfig(model="m"), on_cpu=True)["logits_processors"] == [
        EPSILON_PROCESSOR
    ]
    mine = EngineConfig(model="m", extra={"logits_processors": ["x:Y"]})
    assert engine_kwargs(mine, on_cpu=False)["logits_processors"] == ["x:Y", EPSILON_PROCESSOR]
    speculative = EngineConfig(model="m", extra={"speculative_config": {"method": "ngram"}})
    assert "logits_processors" not in engine_kwargs(speculative, on_cpu=False)


async def test_epsilon_without_the_processor_is_a_400() -> None:
    engine = VLLMGenerator(engine=None, model="m", epsilon=False)
    with pytest.raises(InvalidRequest) as info:
        await engine.generate([1], SamplingConfig(epsilon=0.1), 1)
    assert info.value.param == "epsilon"


def test_the_in_process_engine_puts_epsilon_in_extra_args() -> None:
    pytest.importorskip("vllm")
    from engines.vllm_local import to_sampling_params

    assert to_sampling_params(SamplingConfig(epsilon=0.01), n=2).extra_args == {"epsilon": 0.01}
    assert to_sampling_params(SamplingConfig(), n=2).extra_args is None


def test_the_remote_engine_sends_epsilon_as_vllm_xargs() -> None:
    assert completion_body("m", [1], SamplingConfig(epsilon=0.01), 1)["vllm_xargs"] == {
        "epsilon": 0.01
    }
    assert "vllm_xargs" not in completion_body("m", [1], SamplingConfig(), 1)


def upstream(has_processor: bool, seen: list[dict[str, Any]]) -> RemoteGenerator:
    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append(body)
        if has_processor and body.get("vllm_xargs", {}).get("epsilon", 0) >= 1:
            message = "epsilon must be in [0, 1), got 2.0"
            return httpx.Response(400, json={"error": {"message": message}})
        choice = {"index": 0, "text": "A", "token_ids": [65], "finish_reason": "stop"}
        return httpx.Response(200, json={"choices": [choice]})

    client = httpx.AsyncClient(transport=httpx.MockTransport(handler), base_url="http://x")
    return RemoteGenerator("http://unused", "m", client=client)


async def test_the_remote_engine_asks_the_upstream_once_whether_it_has_the_processor() -> None:
    seen: list[dict[str, Any]] = []
    gen = upstream(True, seen)
    params = SamplingConfig(epsilon=0.01)
    await gen.generate([1], params, 1)
    await gen.generate([1], params, 1)
    assert [body.get("vllm_xargs") for body in seen] == [
        {"epsilon": 2.0},  # the probe
        {"epsilon": 0.01},
        {"epsilon": 0.01},
    ]
    await gen.aclose()


async def test_a_remote_upstream_without_the_processor_refuses_epsilon() -> None:
    seen: list[dict[str, Any]] = []
    gen = upstream(False, seen)
    with pytest.raises(InvalidRequest) as info:
        await gen.generate([1], SamplingConfig(epsilon=0.01), 1)
    assert info.value.param == "epsilon"
    assert len(seen) == 1  # the probe only: the request was not sampled without ε
    await gen.generate([1], SamplingConfig(), 1)  # without ε nothing is asked
    assert len(seen) == 2
    await gen.aclose()


# -- the processor -----------------------------------------------------------------------

# Probabilities [0.5, 0.3, 0.15, 0.05] at temperature 1.
PROBS = [0.5, 0.3, 0.15, 0.05]


def logits_of(rows: list[list[float]]) -> Any:
    import torch

    return torch.log(torch.tensor(rows))


def kept(row: Any) -> list[int]:
    return [i for i, x in enumerate(row.tolist()) if math.isfinite(x)]


def test_truncate_keeps_tokens_at_or_over_epsilon_and_always_the_likeliest() -> None:
    torch = pytest.importorskip("torch")
    pytest.importorskip("vllm")
    from engines.epsilon import truncate

    logits = logits_of([PROBS, PROBS, PROBS, PROBS])
    epsilon = torch.tensor([[0.1], [0.15], [0.0], [0.9]])
    out = truncate(logits.clone(), epsilon, torch.ones(4, 1))
    assert [kept(row) for row in out] == [[0, 1, 2], [0, 1, 2], [0, 1, 2, 3], [0]]
    # Kept tokens keep their logits: renormalised, 0.5 / 0.95 and so on.
    assert torch.softmax(out[0], -1).tolist() == pytest.approx(
        [0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0.0]
    )
    # At temperature 2 the probabilities flatten (about 0.38, 0.29, 0.21, 0.12): ε = 0.1
    # now keeps all four.
    hot = truncate(logits[:1].clone(), torch.tensor([[0.1]]), torch.tensor([[2.0]]))
    assert kept(hot[0]) == [0, 1, 2, 3]


def params_with(epsilon: float | None, temperature: float = 1.0) -> Any:
    from vllm import SamplingParams

    extra = None if epsilon is None else {"epsilon": epsilon}
    return SamplingParams(temperature=temperature, extra_args=extra)


def test_the_v1_interface_truncates_only_the_rows_with_epsilon() -> None:
    pytest.importorskip("vllm")
    from vllm.v1.sample.logits_processor import BatchUpdate

    from engines.epsilon import EpsilonLogitsProcessor

    processor = EpsilonLogitsProcessor(None, "cpu", False)
    added = [(0, params_with(0.1), None, []), (1, params_with(None), None, [])]
    processor.update_state(BatchUpdate(batch_size=2, removed=[], added=added, moved=[]))
    out = processor.apply(logits_of([PROBS, PROBS]))
    assert [kept(row) for row in out] == [[0, 1, 2], [0, 1, 2, 3]]
    # The request leaves the batch: nothing is truncated any more.
    processor.update_state(BatchUpdate(batch_size=1, removed=[0], added=[], moved=[]))
    assert kept(processor.apply(logits_of([PROBS, PROBS]))[0]) == [0, 1, 2, 3]
    assert processor.is_argmax_invariant()


def test_the_v2_interface_reads_the_request_temperature() -> None:
    torch = pytest.importorskip("torch")
    pytest.importorskip("vllm")
    from engines.epsilon import EpsilonLogitsProcessor

    states = SimpleNamespace(device=torch.device("cpu"), max_num_reqs=4)
    processor = EpsilonLogitsProcessor(None, states)
    # Slot 2: ε 0.1 at T=1 drops token 3 (0.05); slot 3: ε 0.1 at T=2 keeps it (0.12);
    # slot 0: no ε.
    assert processor.add_request(2, params_with(0.1)) is True
    assert processor.add_request(3, params_with(0.1, temperature=2.0)) is True
    assert processor.add_request(0, params_with(None)) is False
    processor.apply_staged_writes()
    ctx = SimpleNamespace(
        expanded_idx_mapping=torch.tensor([2, 3, 0]), idx_mapping_np=np.array([2, 3, 0])
    )
    out = processor.apply(logits_of([PROBS, PROBS, PROBS]), ctx)
    assert [kept(row) for row in out] == [[0, 1, 2], [0, 1, 2, 3], [0, 1, 2, 3]]
    # A step with no ε request is left alone.
    only = SimpleNamespace(expanded_idx_mapping=torch.tensor([0]), idx_mapping_np=np.array([0]))
    untouched = logits_of([PROBS])
    assert processor.apply(untouched, only) is untouched


@pytest.mark.parametrize("epsilon", [-0.1, 1.0, 2.0, math.nan, "0.1", True])
def test_the_processor_refuses_a_bad_epsilon(epsilon: Any) -> None:
    pytest.importorskip("vllm")
    from vllm import SamplingParams

    from engines.epsilon import EpsilonLogitsProcessor

    with pytest.raises(ValueError, match="epsilon"):
        EpsilonLogitsProcessor.validate_params(SamplingParams(extra_args={"epsilon": epsilon}))


def test_both_of_vllms_runners_accept_the_class() -> None:
    pytest.importorskip("vllm")
    from vllm.v1.sample.logits_processor import _load_logitsprocs_by_fqcns
    from vllm.v1.worker.gpu.sample.logits_processor.loader import (
        _load_v2_logitsprocs_by_fqcns,
    )

    from engines.epsilon import EpsilonLogitsProcessor

    assert _load_logitsprocs_by_fqcns([EPSILON_PROCESSOR]) == [EpsilonLogitsProcessor]
    assert _load_v2_logitsprocs_by_fqcns([EPSILON_PROCESSOR]) == [EpsilonLogitsProcessor]
