"""Engines without an engine: the remote vLLM client over httpx.MockTransport, and the pure
helpers of the in-process engine (fed stand-in objects; vllm is never imported)."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from engines.remote import (
    RemoteGenerator,
    choose_model,
    completion_body,
    parse_choice,
    retry_after_header,
)
from engines.tokenizer import HFChatTokenizer
from engines.vllm_local import (
    EPSILON_PROCESSOR,
    EngineConfig,
    VLLMGenerator,
    apply_cpu_environment,
    engine_kwargs,
    one_line,
    rejection_message,
    to_completion,
)
from search.errors import EngineUnavailable, InvalidRequest
from search.types import Completion, SamplingConfig
from transport.retry import RetryBudget

# -- completion_body ---------------------------------------------------------------------


def test_completion_body_defaults() -> None:
    assert completion_body("m", (5, 6, 7), SamplingConfig(), 3) == {
        "model": "m",
        "prompt": [5, 6, 7],
        "n": 3,
        "max_tokens": 256,
        "temperature": 1.0,
        "top_p": 1.0,
        "top_k": -1,
        "presence_penalty": 0.0,
        "frequency_penalty": 0.0,
        "return_token_ids": True,
        "return_tokens_as_token_ids": True,
    }


def test_completion_body_optional_fields() -> None:
    params = SamplingConfig(
        max_tokens=9,
        temperature=0.2,
        top_p=0.5,
        top_k=40,
        presence_penalty=0.1,
        frequency_penalty=-0.3,
        seed=0,
        stop=("\n\n", "END"),
        top_logprobs=5,
    )
    body = completion_body("pol", [1], params, 1)
    assert isinstance(body["prompt"], list)
    assert body["seed"] == 0  # a zero seed is still a seed
    assert body["stop"] == ["\n\n", "END"]
    assert body["logprobs"] == 5
    assert (body["max_tokens"], body["temperature"], body["top_p"], body["top_k"]) == (
        9,
        0.2,
        0.5,
        40,
    )
    assert (body["presence_penalty"], body["frequency_penalty"]) == (0.1, -0.3)
    json.dumps(body)  # serialisable as sent


def test_completion_body_sampled_logprobs_only() -> None:
    body = completion_body("m", [1], SamplingConfig(logprobs=True), 1)
    assert body["logprobs"] == 0
    for key in ("seed", "stop"):
        assert key not in body


def test_completion_body_no_logprobs_key_unless_asked() -> None:
    assert "logprobs" not in completion_body("m", [1], SamplingConfig(), 1)


# -- parse_choice ------------------------------------------------------------------------


def test_parse_choice_with_logprobs() -> None:
    choice = {
        "index": 0,
        "text": "Hi!",
        "token_ids": [11, 12],
        "finish_reason": "length",
        "logprobs": {
            "tokens": ["token_id:11", "token_id:12"],
            "token_logprobs": [-0.5, -0.25],
            "top_logprobs": [
                {"token_id:11": -0.5, "token_id:123": -1.5},
                {"token_id:12": -0.25},
            ],
        },
    }
    params = SamplingConfig(logprobs=True, top_logprobs=2)
    assert parse_choice(choice, params) == Completion(
        token_ids=(11, 12),
        text="Hi!",
        finish_reason="length",
        cumulative_logprob=-0.75,
        logprobs=(-0.5, -0.25),
        top_logprobs=({11: -0.5, 123: -1.5}, {12: -0.25}),
    )


def test_parse_choice_ignores_logprobs_not_asked_for() -> None:
    choice = {
        "text": "a",
        "token_ids": [1],
        "finish_reason": "stop",
        "logprobs": {"token_logprobs": [-1.0], "top_logprobs": [{"token_id:1": -1.0}]},
    }
    comp = parse_choice(choice, SamplingConfig())
    assert comp == Completion(token_ids=(1,), text="a", finish_reason="stop")


def test_parse_choice_top_only_and_null_step() -> None:
    choice = {
        "text": "ab",
        "token_ids": [1, 2],
        "finish_reason": "stop",
        "logprobs": {"token_logprobs": [-1.0, -2.0], "top_logprobs": [None, {"token_id:7": -3}]},
    }
    comp = parse_choice(choice, SamplingConfig(top_logprobs=1))
    assert comp.top_logprobs == ({}, {7: -3.0})
    assert comp.logprobs is None and comp.cumulative_logprob is None


@pytest.mark.parametrize(
    ("reason", "expected"),
    [("stop", "stop"), ("length", "length"), ("abort", "abort"), (None, "abort")],
)
def test_parse_choice_finish_reason(reason: str | None, expected: str) -> None:
    comp = parse_choice({"text": "", "finish_reason": reason}, SamplingConfig())
    assert comp.finish_reason == expected
    assert comp.token_ids == ()


# -- RemoteGenerator ---------------------------------------------------------------------


def remote(handler: Callable[[httpx.Request], httpx.Response]) -> RemoteGenerator:
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler), base_url="http://x")
    return RemoteGenerator("http://unused", "policy", client=client)


async def test_remote_generate_parses_and_sorts_by_index() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(
            200,
            json={
                "choices": [
                    {"index": 1, "text": "B", "token_ids": [66], "finish_reason": "length"},
                    {"index": 0, "text": "A", "token_ids": [65], "finish_reason": "stop"},
                ]
            },
        )

    gen = remote(handler)
    params = SamplingConfig(max_tokens=4, seed=3)
    out = await gen.generate([1, 2], params, 2)
    assert out == [
        Completion(token_ids=(65,), text="A", finish_reason="stop"),
        Completion(token_ids=(66,), text="B", finish_reason="length"),
    ]
    assert len(seen) == 1
    assert seen[0].method == "POST"
    assert str(seen[0].url) == "http://x/v1/completions"
    assert json.loads(seen[0].content) == completion_body("policy", [1, 2], params, 2)
    await gen.aclose()


async def rejection(response: httpx.Response) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as info:
        await remote(lambda _: response).generate([1], SamplingConfig(), 1)
    assert info.value.status_code == 400
    return info.value


async def test_remote_400_keeps_only_a_sanitized_json_message() -> None:
    message = "top_k must be -1 or at least 1,\n got 0 (see http://10.0.0.5:8000/docs)"
    error = await rejection(httpx.Response(400, json={"error": {"message": message}}))
    assert error.message == (
        "the remote engine rejected the request: top_k must be -1 or at least 1, got 0 (see <url>"
    )


async def test_remote_400_context_length_hides_the_prompt_lengths() -> None:
    message = "This model's maximum context length is 2048 tokens. However, you requested 3100"
    error = await rejection(httpx.Response(422, json={"error": {"message": message}}))
    assert error.message == "the prompt and max_tokens do not fit in the model's context length"


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(400, text="<html><body>Bad Request from router-7</body></html>"),
        httpx.Response(400, json={"detail": [{"loc": ["body"], "msg": "field required"}]}),
        httpx.Response(400),
    ],
    ids=["html", "not-an-openai-error", "empty"],
)
async def test_remote_400_never_forwards_a_body(response: httpx.Response) -> None:
    assert (await rejection(response)).message == "the remote engine rejected the request"


async def test_remote_400_message_is_capped() -> None:
    error = await rejection(httpx.Response(400, json={"error": {"message": "x" * 5000}}))
    assert len(error.message) < 260 and error.message.endswith("...")


async def test_remote_500_is_engine_unavailable() -> None:
    gen = remote(lambda _: httpx.Response(500, text="oops at http://10.0.0.5:8000"))
    with pytest.raises(EngineUnavailable) as info:
        await gen.generate([1], SamplingConfig(), 1)
    assert info.value.status_code == 503
    assert info.value.message == "the remote engine failed (HTTP 500)"


@pytest.mark.parametrize("status", [401, 403, 404, 429])
async def test_remote_auth_routing_overload_are_engine_unavailable(status: int) -> None:
    gen = remote(lambda _: httpx.Response(status, json={"error": {"message": "nope"}}))
    with pytest.raises(EngineUnavailable) as info:
        await gen.generate([1], SamplingConfig(), 1)
    assert info.value.message == f"the remote engine failed (HTTP {status})"
    assert info.value.headers == {}


async def test_remote_429_passes_its_retry_after_on() -> None:
    gen = remote(lambda _: httpx.Response(429, headers={"Retry-After": "0"}))
    with pytest.raises(EngineUnavailable) as info:
        await gen.generate([1], SamplingConfig(), 1)
    assert info.value.status_code == 503
    assert info.value.headers == {"Retry-After": "1"}


@pytest.mark.parametrize(
    ("sent", "passed"),
    [("2.5", "3"), ("1e9", "3600"), ("inf", None), ("-1", None), ("Wed, 21 Oct 2015", None)],
)
def test_retry_after_header(sent: str, passed: str | None) -> None:
    header = retry_after_header(httpx.Response(503, headers={"Retry-After": sent}))
    assert header == (None if passed is None else {"Retry-After": passed})


async def test_remote_malformed_reply_is_engine_unavailable() -> None:
    gen = remote(lambda _: httpx.Response(200, json={"no": "choices"}))
    with pytest.raises(EngineUnavailable):
        await gen.generate([1], SamplingConfig(), 1)


async def test_remote_transport_error_is_engine_unavailable() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    gen = remote(handler)
    with pytest.raises(EngineUnavailable) as info:
        await gen.generate([1], SamplingConfig(), 1)
    assert info.value.message == "the remote engine is unreachable"  # the URL stays in the log
    assert isinstance(info.value.__cause__, httpx.ConnectError)


async def test_remote_retries_overload_then_succeeds() -> None:
    statuses = [503, 429, 200]
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        status = statuses[len(calls)]
        calls.append(status)
        if status != 200:
            return httpx.Response(status, headers={"Retry-After": "0"}, json={})
        choice = {"index": 0, "text": "A", "token_ids": [65], "finish_reason": "stop"}
        return httpx.Response(200, json={"choices": [choice]})

    out = await remote(handler).generate([1], SamplingConfig(), 1)
    assert calls == [503, 429, 200] and out[0].text == "A"


@pytest.mark.parametrize("status", [400, 401, 500])
async def test_remote_does_not_retry_what_a_retry_cannot_fix(status: int) -> None:
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(status)
        return httpx.Response(status, json={"error": {"message": "no"}})

    with pytest.raises((InvalidRequest, EngineUnavailable)):
        await remote(handler).generate([1], SamplingConfig(), 1)
    assert len(calls) == 1


async def test_remote_retries_connection_failures_a_bounded_number_of_times() -> None:
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(EngineUnavailable):
        await remote(handler).generate([1], SamplingConfig(), 1)
    assert len(calls) == 3


async def test_remote_health() -> None:
    paths: list[str] = []

    def ok(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.path)
        return httpx.Response(200)

    await remote(ok).check_health()
    assert paths == ["/health"]
    with pytest.raises(EngineUnavailable) as info:
        await remote(lambda _: httpx.Response(503)).check_health()
    assert info.value.message == "remote engine health check answered HTTP 503"

    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused: http://10.0.0.5:8000/health", request=request)

    with pytest.raises(EngineUnavailable) as info:
        await remote(refused).check_health()
    assert info.value.message == "remote engine health check failed: ConnectError"


async def test_remote_health_uses_a_client_of_its_own() -> None:
    """A hung upstream /health holds neither the generation pool nor a probe for long."""
    gen = RemoteGenerator("http://h:1", "m", health_timeout_s=2.5)
    assert gen._health_client is not gen._client
    assert gen._health_client.timeout.read == 2.5
    # Generation: a long read, but a black-holed upstream fails to connect quickly.
    assert (gen._client.timeout.read, gen._client.timeout.connect) == (600.0, 10.0)
    await gen.aclose()
    assert gen._client.is_closed and gen._health_client.is_closed

    gets: list[str] = []

    def health(request: httpx.Request) -> httpx.Response:
        gets.append(request.url.path)
        return httpx.Response(200)

    health_client = httpx.AsyncClient(transport=httpx.MockTransport(health), base_url="http://x")
    gen = RemoteGenerator(
        "http://unused",
        "m",
        client=httpx.AsyncClient(transport=httpx.MockTransport(lambda _: httpx.Response(500))),
        health_client=health_client,
    )
    await gen.check_health()
    assert gets == ["/health"]


async def test_remote_retries_stop_when_the_budget_is_spent() -> None:
    """Under a sustained outage retries stop multiplying the load (L4)."""
    attempts: list[int] = []

    def overloaded(request: httpx.Request) -> httpx.Response:
        attempts[-1] += 1
        return httpx.Response(503, headers={"Retry-After": "0"})

    gen = remote(overloaded)
    for _ in range(4):
        attempts.append(0)
        with pytest.raises(EngineUnavailable):
            await gen.generate([1], SamplingConfig(), 1)
    assert attempts == [3, 2, 1, 1]


def test_retry_budget_refills_with_successes() -> None:
    budget = RetryBudget(max_tokens=10, ratio=0.5)
    for _ in range(6):
        budget.failed()
    assert not budget.allows_retry()
    for _ in range(3):
        budget.succeeded()
    assert budget.allows_retry()
    for _ in range(100):
        budget.succeeded()
    assert budget.tokens == 10


async def test_remote_sends_api_key() -> None:
    gen = RemoteGenerator("http://h:1/", "m", api_key="sekret")
    assert gen._client.headers["Authorization"] == "Bearer sekret"
    assert str(gen._client.base_url) == "http://h:1"
    await gen.aclose()


# -- vllm_local pure helpers -------------------------------------------------------------


def test_engine_kwargs_gpu_defaults() -> None:
    assert engine_kwargs(EngineConfig(model="m"), on_cpu=False) == {
        "model": "m",
        "enable_prefix_caching": True,
        "logits_processors": [EPSILON_PROCESSOR],
    }


def test_engine_kwargs_cpu_defaults() -> None:
    assert engine_kwargs(EngineConfig(model="m"), on_cpu=True) == {
        "model": "m",
        "enable_prefix_caching": True,
        "logits_processors": [EPSILON_PROCESSOR],
        "dtype": "float32",
        "enforce_eager": True,
        "block_size": 32,
        "enable_chunked_prefill": False,
    }


def test_engine_kwargs_explicit_settings_win() -> None:
    config = EngineConfig(
        model="m",
        dtype="bfloat16",
        max_model_len=2048,
        gpu_memory_utilization=0.5,
        tensor_parallel_size=2,
        pipeline_parallel_size=1,
        enforce_eager=False,
        seed=0,
    )
    assert engine_kwargs(config, on_cpu=True) == {
        "model": "m",
        "enable_prefix_caching": True,
        "logits_processors": [EPSILON_PROCESSOR],
        "dtype": "bfloat16",
        "enforce_eager": False,
        "block_size": 32,
        "enable_chunked_prefill": False,
        "max_model_len": 2048,
        "gpu_memory_utilization": 0.5,
        "tensor_parallel_size": 2,
        "pipeline_parallel_size": 1,
        "seed": 0,
    }


def test_engine_kwargs_extra_passes_through_last() -> None:
    config = EngineConfig(model="m", dtype="half", extra={"max_num_seqs": 8, "dtype": "float16"})
    assert engine_kwargs(config, on_cpu=False) == {
        "model": "m",
        "enable_prefix_caching": True,
        "logits_processors": [EPSILON_PROCESSOR],
        "dtype": "float16",
        "max_num_seqs": 8,
    }


def test_apply_cpu_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VLLM_CPU_OMP_THREADS_BIND", raising=False)
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "7")
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    apply_cpu_environment()
    assert os.environ["VLLM_CPU_OMP_THREADS_BIND"] == "0-7"
    assert os.environ["VLLM_CPU_KVCACHE_SPACE"] == "7"  # an explicit value is kept


def lp(value: float) -> SimpleNamespace:
    return SimpleNamespace(logprob=value)


def output(**kw: Any) -> SimpleNamespace:
    base: dict[str, Any] = {
        "index": 0,
        "text": "ok",
        "token_ids": [3, 4],
        "finish_reason": "stop",
        "cumulative_logprob": -1.25,
        "logprobs": None,
    }
    base.update(kw)
    return SimpleNamespace(**base)


def test_to_completion_plain() -> None:
    assert to_completion(output(), SamplingConfig()) == Completion(
        token_ids=(3, 4), text="ok", finish_reason="stop", cumulative_logprob=-1.25
    )


def test_to_completion_logprobs() -> None:
    steps = [{3: lp(-1.0), 9: lp(-2.0)}, {4: lp(-0.25), 8: lp(-3.0)}]
    out = output(logprobs=steps, finish_reason="length")
    comp = to_completion(out, SamplingConfig(logprobs=True, top_logprobs=2))
    assert comp.logprobs == (-1.0, -0.25)
    assert comp.top_logprobs == ({3: -1.0, 9: -2.0}, {4: -0.25, 8: -3.0})
    assert comp.finish_reason == "length"
    only_sampled = to_completion(out, SamplingConfig(logprobs=True))
    assert only_sampled.logprobs == (-1.0, -0.25) and only_sampled.top_logprobs is None
    neither = to_completion(out, SamplingConfig())
    assert neither.logprobs is None and neither.top_logprobs is None


@pytest.mark.parametrize("reason", [None, "abort", "error"])
def test_to_completion_other_finish_reasons_are_abort(reason: str | None) -> None:
    assert to_completion(output(finish_reason=reason), SamplingConfig()).finish_reason == "abort"


# -- HFChatTokenizer over a stand-in Hugging Face tokenizer -----------------------------


class StandInHF:
    eos_token_id = 2

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def apply_chat_template(self, messages: Any, **kw: Any) -> str:
        self.calls.append(("template", kw))
        return "".join(f"[{m['role']}]{m['content']}" for m in messages) + "[assistant]"

    def encode(self, text: str, **kw: Any) -> list[int]:
        self.calls.append(("encode", kw))
        return [ord(c) for c in text]

    def decode(self, ids: list[int], **kw: Any) -> str:
        self.calls.append(("decode", kw))
        return "".join(chr(i) for i in ids)


def test_hf_chat_tokenizer() -> None:
    hf = StandInHF()
    tok = HFChatTokenizer(hf)
    msgs = [{"role": "user", "content": "q"}]
    assert tok.render_chat(msgs) == [ord(c) for c in "[user]q[assistant]"]
    assert hf.calls[:2] == [
        ("template", {"tokenize": False, "add_generation_prompt": True}),
        ("encode", {"add_special_tokens": False}),
    ]
    assert tok.render_with_prefix(msgs, "S: ") == [ord(c) for c in "[user]q[assistant]S: "]
    assert tok.decode((104, 105)) == "hi"
    assert hf.calls[-1] == ("decode", {"skip_special_tokens": True})
    assert tok.token_id("7") == 55
    assert tok.eos_token_id == 2
    with pytest.raises(ValueError):
        tok.token_id("12")


# -- vllm_local errors and death -----------------------------------------------------------


def test_engine_rejections_reach_clients_without_vllm_internals() -> None:
    too_long = (
        "The decoder prompt (length 5210) is longer than the maximum model length of 4096. "
        "Make sure that `max_model_len` is no smaller than the number of text tokens."
    )
    assert rejection_message(too_long) == (
        "the prompt and max_tokens do not fit in the model's context length"
    )
    assert rejection_message("Token id 999999 is out of vocabulary") == (
        "the engine rejected the request"
    )


def test_one_line() -> None:
    assert one_line("a\n  b\tc", 100) == "a b c"
    assert one_line("x" * 50, 10) == "xxxxxxx..."


async def test_in_process_engine_death_is_read_and_reported() -> None:
    engine = SimpleNamespace(errored=False)
    gen = VLLMGenerator(engine, "m")
    assert not gen.is_dead()
    engine.errored = True
    assert gen.is_dead()

    seen: list[str] = []

    def broken() -> None:
        raise RuntimeError("a callback bug")

    gen.on_death(broken)
    gen.on_death(lambda: seen.append("dead"))
    gen.report_death()  # what _run does on EngineDeadError
    assert seen == ["dead"]


def test_choose_model_takes_the_single_one_or_the_fallback_among_several() -> None:
    assert choose_model(["fleet"], "/models/local") == "fleet"
    assert choose_model(["a", "/models/local"], "/models/local") == "/models/local"
    with pytest.raises(EngineUnavailable, match=r"'a', 'b'.*--remote-model-name"):
        choose_model(["a", "b"], "/models/local")
    with pytest.raises(EngineUnavailable, match="serves none"):
        choose_model([], None)


async def test_remote_model_name_is_asked_once_and_kept() -> None:
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"object": "list", "data": [{"id": "fleet"}]})
        assert json.loads(request.content)["model"] == "fleet"
        return httpx.Response(200, json={"choices": [{"index": 0, "text": "x", "token_ids": [5]}]})

    client = httpx.AsyncClient(transport=httpx.MockTransport(handler), base_url="http://x")
    gen = RemoteGenerator("http://unused", None, fallback_model="/local", client=client)
    await asyncio.gather(*(gen.generate([1], SamplingConfig(max_tokens=1)) for _ in range(3)))
    assert calls.count("/v1/models") == 1 and calls.count("/v1/completions") == 3


async def test_remote_model_name_unlisted_is_a_503_and_asked_again() -> None:
    answers = iter([httpx.Response(503), httpx.Response(200, json={"data": [{"id": "m"}]})])
    client = httpx.AsyncClient(
        transport=httpx.MockTransport(lambda _: next(answers)), base_url="http://x"
    )
    gen = RemoteGenerator("http://unused", None, client=client)
    with pytest.raises(EngineUnavailable, match="/v1/models"):
        await gen.upstream_model()
    assert await gen.upstream_model() == "m"
