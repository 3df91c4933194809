"""Settings, the ``alignserve serve`` command line, and the request model's conversions."""

from __future__ import annotations

import argparse

import pytest
from pydantic import ValidationError

from search.errors import InvalidRequest
from search.types import SamplingConfig
from server import cli
from server.cli import serve_parser, settings_from_args
from server.protocol import UNSUPPORTED, ChatCompletionRequest, ChatMessage
from server.settings import Settings


def parse(argv: list[str]) -> Settings:
    parser = argparse.ArgumentParser()
    serve_parser(parser)
    return settings_from_args(parser.parse_args(argv))


# -- Settings ----------------------------------------------------------------------------


def test_settings_defaults() -> None:
    s = Settings()
    assert (s.host, s.port, s.reward, s.default_algorithm) == ("127.0.0.1", 8000, "judge", "bon")
    assert (s.default_n, s.max_n, s.default_max_tokens, s.keepalive_s) == (4, 64, 256, 5.0)
    assert s.model is None and s.remote_engine_url is None and s.engine_args == {}


@pytest.mark.parametrize(
    "kwargs",
    [{"reward": "bogus"}, {"default_n": 0}, {"max_n": 0}, {"keepalive_s": 0}, {"nope": 1}],
)
def test_settings_rejects(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Settings(**kwargs)  # type: ignore[arg-type]


def test_settings_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALIGNSERVE_MAX_N", "8")
    monkeypatch.setenv("ALIGNSERVE_REWARD", "remote:http://h:1/pooling")
    monkeypatch.setenv("ALIGNSERVE_ENGINE_ARGS", '{"max_num_seqs": 2}')
    s = Settings()
    assert (s.max_n, s.reward, s.engine_args) == (
        8,
        "remote:http://h:1/pooling",
        {"max_num_seqs": 2},
    )


# -- CLI ---------------------------------------------------------------------------------


def test_cli_maps_flags_into_settings() -> None:
    s = parse(["--default-n", "3", "--engine-arg", "max_num_seqs=8", "--enforce-eager"])
    assert s.default_n == 3
    assert s.engine_args == {"max_num_seqs": 8}
    assert s.enforce_eager is True
    # Everything not given keeps its default.
    assert s.max_n == 64 and s.model is None and s.reward == "judge"


def test_cli_no_flags_leaves_defaults() -> None:
    s = parse([])
    assert s == Settings()
    assert s.enforce_eager is None


def test_cli_typed_values() -> None:
    s = parse(
        [
            "--port",
            "9001",
            "--gpu-memory-utilization",
            "0.5",
            "--model",
            "/models/x",
            "--no-enforce-eager",
            "--reward",
            "classifier:rm",
            "--keepalive-s",
            "0.5",
        ]
    )
    assert s.port == 9001
    assert s.gpu_memory_utilization == 0.5
    assert s.model == "/models/x"
    assert s.enforce_eager is False
    assert s.reward == "classifier:rm"
    assert s.keepalive_s == 0.5


def test_cli_engine_args_json_and_strings() -> None:
    s = parse(
        [
            "--engine-arg",
            "max-num-batched-tokens=512",
            "--engine-arg",
            "kv_cache_dtype=fp8",
            "--engine-arg",
            'limit_mm_per_prompt={"image": 0}',
            "--engine-arg",
            "enable_chunked_prefill=false",
        ]
    )
    assert s.engine_args == {
        "max_num_batched_tokens": 512,
        "kv_cache_dtype": "fp8",
        "limit_mm_per_prompt": {"image": 0},
        "enable_chunked_prefill": False,
    }


def test_cli_engine_arg_needs_equals(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        parse(["--engine-arg", "max_num_seqs"])
    assert info.value.code == 2
    assert "KEY=VALUE" in capsys.readouterr().err


def test_cli_bad_int(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse(["--default-n", "three"])
    assert "--default-n" in capsys.readouterr().err


def test_cli_env_used_when_flag_absent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALIGNSERVE_DEFAULT_N", "7")
    assert parse([]).default_n == 7
    assert parse(["--default-n", "3"]).default_n == 3  # the flag wins


def test_cli_bad_reward_fails_validation() -> None:
    with pytest.raises(ValidationError):
        parse(["--reward", "bogus"])


def test_main_serve_passes_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    got: list[Settings] = []
    monkeypatch.setattr(cli, "serve", got.append)
    assert cli.main(["serve", "--default-n", "2", "--port", "1234"]) == 0
    assert len(got) == 1
    assert (got[0].default_n, got[0].port) == (2, 1234)


def test_main_needs_a_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main([])
    assert info.value.code == 2


def test_help_lists_every_setting(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["serve", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for name in Settings.model_fields:
        flag = "--engine-arg" if name == "engine_args" else "--" + name.replace("_", "-")
        assert flag in out, flag


# -- request model -----------------------------------------------------------------------


def test_message_content_parts_and_developer_role() -> None:
    msg = ChatMessage.model_validate(
        {
            "role": "developer",
            "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
        }
    )
    assert msg.as_message() == {"role": "system", "content": "ab"}
    assert ChatMessage(role="assistant", content=None).as_message() == {
        "role": "assistant",
        "content": "",
    }


def test_sampling_config_defaults() -> None:
    req = ChatCompletionRequest.model_validate({"messages": [{"role": "user", "content": "x"}]})
    assert req.sampling_config(99) == SamplingConfig(max_tokens=99)
    assert req.sampling_config(99, logprobs=True) == SamplingConfig(max_tokens=99, logprobs=True)


def test_sampling_config_fields() -> None:
    req = ChatCompletionRequest.model_validate(
        {
            "messages": [{"role": "user", "content": "x"}],
            "max_tokens": 10,
            "max_completion_tokens": 12,
            "temperature": 0.0,
            "top_p": 0.9,
            "top_k": 5,
            "presence_penalty": 0.5,
            "frequency_penalty": -0.5,
            "seed": 0,
            "stop": "END",
        }
    )
    assert req.sampling_config(99) == SamplingConfig(
        max_tokens=12,  # max_completion_tokens wins over the deprecated max_tokens
        temperature=0.0,
        top_p=0.9,
        top_k=5,
        presence_penalty=0.5,
        frequency_penalty=-0.5,
        seed=0,
        stop=("END",),
    )


def test_reject_unsupported() -> None:
    base = {"messages": [{"role": "user", "content": "x"}]}
    empty: tuple[object, ...] = (None, False, [], {})
    for value in empty:
        ChatCompletionRequest.model_validate({**base, "tools": value}).reject_unsupported()
    for name in UNSUPPORTED:
        req = ChatCompletionRequest.model_validate({**base, name: [{"type": "function"}]})
        with pytest.raises(InvalidRequest) as info:
            req.reject_unsupported()
        assert info.value.param == name
        assert info.value.message == f"{name} is not supported by alignserve"


def test_unknown_fields_sorted() -> None:
    req = ChatCompletionRequest.model_validate(
        {"messages": [{"role": "user", "content": "x"}], "zeta": 1, "alpha": 2}
    )
    assert req.unknown_fields() == ["alpha", "zeta"]
