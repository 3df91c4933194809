"""Settings, the ``alignserve serve`` command line, and the request model's conversions."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import ValidationError

from search.errors import InvalidRequest
from search.types import SamplingConfig
from server.cli import serve_parser, settings_from_args
from server.protocol import UNSUPPORTED, ChatCompletionRequest, ChatMessage
from server.settings import Settings
from tools import cli


def parse(argv: list[str]) -> Settings:
    parser = argparse.ArgumentParser()
    serve_parser(parser)
    return settings_from_args(parser.parse_args(argv))


# -- Settings ----------------------------------------------------------------------------


def test_settings_defaults() -> None:
    s = Settings()
    assert (s.host, s.port, s.reward, s.default_algorithm) == ("127.0.0.1", 8000, ["judge"], "bon")
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
        ["remote:http://h:1/pooling"],
        {"max_num_seqs": 2},
    )


@pytest.mark.parametrize(
    "kwargs",
    [
        {"dpo_model": "policy", "reference_model": "policy"},
        {"dpo_model": "/models/dpo", "reference_model": "/models/dpo"},
        # The embedded default serves unless --model is given.
        {"dpo_model": "default", "reference_model": "policy"},
        {"model": "/models/sft", "dpo_model": "/models/sft", "reference_model": "policy"},
        {"model": "/models/x", "dpo_model": "default", "reference_model": "default"},
    ],
)
def test_dpo_and_reference_on_one_model_is_a_startup_error(kwargs: dict[str, str]) -> None:
    with pytest.raises(ValidationError, match="every TreeBoN partial score would be 0"):
        Settings(**kwargs)  # type: ignore[arg-type]


def test_dpo_roles_compare_folders_by_their_real_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "m").mkdir()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValidationError, match="same model"):
        Settings(dpo_model="./m", reference_model=str(tmp_path / "m"))


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"reference_model": "/models/sft"}, "add --dpo-model policy"),
        ({"dpo_model": "/models/dpo"}, "--dpo-model needs --reference-model"),
        (
            {"remote_engine_url": "http://h:1", "dpo_model": "/d", "reference_model": "policy"},
            "needs the in-process engine",
        ),
    ],
)
def test_dpo_roles_startup_errors_say_why(kwargs: dict[str, str], says: str) -> None:
    with pytest.raises(ValidationError, match=says):
        Settings(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"dpo_model": "/models/dpo", "reference_model": "policy"},
        {"dpo_model": "policy", "reference_model": "default", "model": "/models/dpo"},
        {"dpo_model": "/models/dpo", "reference_model": "/models/sft"},
    ],
)
def test_dpo_roles_on_two_models_are_accepted(kwargs: dict[str, str]) -> None:
    s = Settings(**kwargs)  # type: ignore[arg-type]
    assert (s.dpo_model, s.reference_model) == (kwargs["dpo_model"], kwargs["reference_model"])


class FakeScorerEngine:
    def __init__(self, model: str) -> None:
        self.model = model

    def shutdown(self) -> None: ...


class FakeVocab:
    def vocab(self) -> dict[str, int]:
        return {"a": 0}


@pytest.fixture
def scorer_engines(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Scorer engines that only remember their model; a converted default model in
    tmp_path (its config.json is all ensure_default_model looks for)."""
    from engines import tokenizer, vllm_local

    monkeypatch.setattr(
        vllm_local.VLLMGenerator, "start", staticmethod(lambda c: FakeScorerEngine(c.model))
    )
    monkeypatch.setattr(tokenizer.HFChatTokenizer, "load", staticmethod(lambda m: FakeVocab()))
    (tmp_path / "SmolLM2-135M-Instruct").mkdir()
    (tmp_path / "SmolLM2-135M-Instruct" / "config.json").write_text("{}")
    return tmp_path


def test_a_policy_role_scores_with_the_served_engine(scorer_engines: Path) -> None:
    from server.runtime import start_scorers

    settings = Settings(
        model="/models/sft",
        model_cache_dir=str(scorer_engines),
        dpo_model="default",
        reference_model="/models/sft",
    )
    served, closers = object(), list[Callable[[], object]]()
    dpo, reference = start_scorers(settings, "/models/sft", served, FakeVocab(), closers)
    # The policy's own model reuses its engine; the other role gets an engine of its own.
    assert reference is served
    assert dpo.model == str(scorer_engines / "SmolLM2-135M-Instruct")
    assert closers == [dpo.shutdown]


def test_default_and_the_default_models_folder_are_one_model(scorer_engines: Path) -> None:
    from server.runtime import start_scorers

    folder = str(scorer_engines / "SmolLM2-135M-Instruct")
    # Only the resolved paths show these are the same weights.
    settings = Settings(
        model_cache_dir=str(scorer_engines), dpo_model="default", reference_model=folder
    )
    with pytest.raises(RuntimeError, match="every TreeBoN partial score would be 0"):
        start_scorers(settings, folder, object(), FakeVocab(), [])


def test_a_scorer_with_another_tokenizer_is_refused(
    scorer_engines: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from engines import tokenizer
    from server.runtime import start_scorers

    class OtherVocab:
        def vocab(self) -> dict[str, int]:
            return {"b": 0}

    monkeypatch.setattr(tokenizer.HFChatTokenizer, "load", staticmethod(lambda m: OtherVocab()))
    settings = Settings(dpo_model="/models/dpo", reference_model="policy")
    with pytest.raises(RuntimeError, match="tokenizer"):
        start_scorers(settings, "/models/sft", object(), FakeVocab(), [])


# -- CLI ---------------------------------------------------------------------------------


def test_cli_maps_flags_into_settings() -> None:
    s = parse(["--default-n", "3", "--engine-arg", "max_num_seqs=8", "--enforce-eager"])
    assert s.default_n == 3
    assert s.engine_args == {"max_num_seqs": 8}
    assert s.enforce_eager is True
    # Everything not given keeps its default.
    assert s.max_n == 64 and s.model is None and s.reward == ["judge"]


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
    assert s.reward == ["classifier:rm"]
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
    monkeypatch.setattr(cli, "serve", lambda s: got.append(s) or 0)
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
