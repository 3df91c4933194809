"""All configuration in one object: CLI flags override ``ALIGNSERVE_*`` environment variables."""

from __future__ import annotations

import json
import os
from typing import Annotated, Any

from pydantic import Field, PrivateAttr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from rewards.prm_spec import PRMSpec, parse_prm_specs
from rewards.spec import RewardSpec, parse_specs


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ALIGNSERVE_", extra="forbid")

    host: str = "127.0.0.1"
    port: int = 8000
    log_level: str = "info"
    # Observability (server/logs.py, server/tracing.py). "json": every log line a JSON
    # object, one "request finished" line per search request. Traces go to this OTLP/HTTP
    # endpoint (a collector's http://HOST:4318/v1/traces; a URL without a path gets
    # /v1/traces), else to OTEL_EXPORTER_OTLP_TRACES_ENDPOINT when set; neither: no tracing.
    log_format: str = Field(default="text", pattern="^(text|json)$")
    otlp_traces_endpoint: str | None = None
    # The traces' service.name; unset: OTEL_SERVICE_NAME, else "alignserve".
    otel_service_name: str | None = None

    # The policy model: a Hugging Face folder or hub id; None is the embedded default.
    model: str | None = None
    served_model_name: str | None = None
    model_cache_dir: str | None = None

    # In-process engine arguments (None keeps vLLM's or the CPU defaults).
    dtype: str | None = None
    max_model_len: int | None = None
    gpu_memory_utilization: float | None = None
    tensor_parallel_size: int | None = None
    pipeline_parallel_size: int | None = None
    enforce_eager: bool | None = None
    engine_args: dict[str, Any] = Field(default_factory=dict)

    # Remote engine: a vLLM OpenAI server; --model then names the tokenizer alignserve
    # renders the chat template with.
    remote_engine_url: str | None = None
    remote_api_key: str | None = None
    # The model name sent upstream (vLLM's --served-model-name there). Unset: the remote's
    # single model from its /v1/models, else --model when it is among several.
    remote_model_name: str | None = None
    # Search affinity (transport/affinity.py): every completions call of one search sends
    # its random key in this header, so a router's header policy (vLLM Router's
    # consistent_hash reads X-Session-ID) keeps the search on one replica and its prefix
    # cache. Unset (the default, right for a single upstream server): no header.
    upstream_affinity_header: str | None = Field(
        default=None, pattern="^[A-Za-z0-9][A-Za-z0-9-]{0,63}$"
    )

    # Named rewards, [NAME=]SPEC each (see rewards/spec.py); a request picks one by name
    # with search.reward. The default is default_reward, else the first.
    reward: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["judge"])
    default_reward: str | None = None
    # Cross-request reward batching: a batch goes out when full or this long after its
    # first response arrived.
    reward_max_batch_size: int = Field(default=32, ge=1)
    reward_max_wait_ms: float = Field(default=10.0, ge=0)
    # A reward call (one caller's share of a batch) that takes longer fails with 504, so a
    # stuck reward model cannot hold searches until their own deadline.
    reward_timeout_s: float = Field(default=120.0, gt=0)
    # The generative judge's prompt (rewards/judge.py): "continuation" continues the
    # generation's own context, which the prefix cache holds; "separate" is a prompt of
    # its own, the rubric and the conversation re-rendered as text.
    judge_layout: str = Field(default="continuation", pattern="^(continuation|separate)$")
    # Process reward models of the step searches, [NAME=]SPEC each (see rewards/prm_spec.py);
    # a request picks one with search.prm. The default is default_prm, else the first.
    prm: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["judge"])
    default_prm: str | None = None
    # TreeBoN's implicit DPO reward (log pi_dpo - log pi_ref on partial responses) scores
    # with two models' prompt logprobs: a DPO-trained model and its reference, the model it
    # was trained from. Each is a model folder or hub id sharing the policy's tokenizer,
    # "default" (the embedded default model) or "policy" (the served in-process engine);
    # any other gets an in-process engine of its own. Both or neither.
    dpo_model: str | None = None
    reference_model: str | None = None

    # Auth: Bearer keys accepted on the /v1 routes (none: open). With protect_ops_routes
    # /health, /ready and /metrics need a key too.
    api_key: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Keys from a file, one per line (# comments and blank lines skipped): unlike
    # --api-key, not visible in `ps` (finding L6). Added to --api-key's.
    api_key_file: str | None = None
    protect_ops_routes: bool = False
    # The Host headers answered (server.allowed_hosts); empty: any.
    allowed_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)

    # Admission control and per-request limits.
    max_concurrent_searches: int = Field(default=16, ge=1)
    max_queued_searches: int = Field(default=64, ge=0)
    retry_after_s: int = Field(default=1, ge=1)
    max_tokens_limit: int = Field(default=4096, ge=1)
    max_live_candidates: int = Field(default=256, ge=1)
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    # What one request may send: messages, and characters of message content in all.
    max_messages: int = Field(default=1024, ge=1)
    max_request_chars: int = Field(default=1_000_000, ge=1)
    # What one search may spend (see search.budget): a request whose worst case exceeds a
    # limit is refused with 400 naming it; a search that reaches one at run time ends as at
    # its deadline, with the best response scored so far.
    max_search_tokens: int = Field(default=1_048_576, ge=1)
    max_search_engine_calls: int = Field(default=4096, ge=1)
    max_search_reward_items: int = Field(default=65_536, ge=1)
    # Characters of scored text a search keeps for its deadline fallback.
    max_search_kept_chars: int = Field(default=16_000_000, ge=1)
    # Top logprobs a request may make the engine return: alternatives per token
    # (top_logprobs, completions' logprobs) times every token its search may generate, or
    # times its prompts' tokens for echo (server.logprobs).
    max_logprob_entries: int = Field(default=262_144, ge=1)
    # A user regex (majority's answer_regex) gets this long per search, then 400.
    regex_timeout_s: float = Field(default=0.5, gt=0)
    # Sockets: open streams beyond this are refused with 429; a stream whose client reads
    # nothing for stream_write_timeout_s is closed; headers and each body chunk must arrive
    # within http_read_timeout_s (else 408); uvicorn refuses connections beyond
    # max_connections with 503.
    max_open_streams: int = Field(default=64, ge=1)
    stream_write_timeout_s: float = Field(default=30.0, gt=0)
    http_read_timeout_s: float = Field(default=30.0, gt=0)
    max_connections: int = Field(default=1024, ge=1)
    # A request's whole body must arrive within http_body_timeout_s of its headers (else
    # 408), and at most max_uploads_per_client requests from one client address may be
    # sending a body at once (one more gets 429): trickling bodies cannot hold every
    # connection (server.http_timeouts).
    http_body_timeout_s: float = Field(default=60.0, gt=0)
    max_uploads_per_client: int = Field(default=16, ge=1)
    # A request's head (request line and headers): at most this many bytes and headers,
    # else 431 (server.http_timeouts; httptools itself has no limit).
    max_header_bytes: int = Field(default=64 * 1024, ge=1024)
    max_header_count: int = Field(default=256, ge=8)
    # Health: how often the engine, reward and scorer checks run in the background, and how
    # long each may take; an in-process engine that died ends the process.
    health_interval_s: float = Field(default=5.0, gt=0)
    health_timeout_s: float = Field(default=5.0, gt=0)
    # /docs, /redoc and /openapi.json (off by default whenever API keys are set).
    disable_docs: bool = False
    # Every search's deadline; a request's search.timeout_s may only lower it.
    request_timeout_s: float = Field(default=600.0, gt=0)
    # On SIGTERM /ready turns 503 and new searches are refused; in-flight searches get this
    # long to finish before they are cancelled.
    shutdown_grace_s: int = Field(default=30, ge=0)

    # Record every search (conversation, candidates with token ids, logprobs and rewards,
    # the choice) to rotated JSONL shards in this directory, for `alignserve export`.
    record: str | None = None
    record_shard_mb: int = Field(default=64, ge=1)
    # Records queued for the writer, in MB (estimated); past it a record is dropped, counted.
    record_queue_mb: int = Field(default=256, ge=1)
    # Retention: the oldest shards of the directory are deleted past this many MB (0: keep all).
    record_max_total_mb: int = Field(default=0, ge=0)

    default_algorithm: str = "bon"
    default_n: int = Field(default=4, ge=1)
    max_n: int = Field(default=64, ge=1)
    default_max_tokens: int = Field(default=256, ge=1)
    keepalive_s: float = Field(default=5.0, gt=0)

    # --reward and --prm, parsed once when the settings load (a bad spec refuses them).
    _parsed_rewards: tuple[list[RewardSpec], str] = PrivateAttr()
    _parsed_prms: tuple[list[PRMSpec], str | None] = PrivateAttr()

    @property
    def reward_specs(self) -> tuple[list[RewardSpec], str]:
        """The named rewards' specs and the default's name."""
        return self._parsed_rewards

    @property
    def prm_specs(self) -> tuple[list[PRMSpec], str | None]:
        """The process reward models' specs and the default's name (None: none)."""
        return self._parsed_prms

    @field_validator("api_key", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        # An empty key (--api-key "$KEY" with KEY unset, or ALIGNSERVE_API_KEY=" , ") would
        # otherwise leave the server open while it looks protected: refuse to start.
        keys = value.split(",") if isinstance(value, str) else value
        if isinstance(keys, list):
            if any(not isinstance(k, str) or not k.strip() for k in keys):
                raise ValueError(
                    "an API key is empty (an unset variable?): give every --api-key / "
                    "ALIGNSERVE_API_KEY entry a value, or leave them out for an open server"
                )
            return [k.strip() for k in keys]
        return value

    @field_validator("allowed_hosts", mode="before")
    @classmethod
    def _hosts_comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [h.strip() for h in value.split(",") if h.strip()]
        return value

    @model_validator(mode="after")
    def _keys_from_file(self) -> Settings:
        if self.api_key_file is not None:
            self.api_key = [*self.api_key, *read_key_file(self.api_key_file)]
        return self

    @field_validator("reward", "prm", mode="before")
    @classmethod
    def _reward_specs(cls, value: Any) -> Any:
        # One spec, or (from the environment) a JSON list of them.
        if isinstance(value, str):
            return json.loads(value) if value.lstrip().startswith("[") else [value]
        return value

    @model_validator(mode="after")
    def _reward_specs_parse(self) -> Settings:
        self._parsed_rewards = parse_specs(self.reward, self.default_reward)
        self._parsed_prms = parse_prm_specs(self.prm, self.default_prm)
        return self

    @model_validator(mode="after")
    def _affinity_header_is_remote(self) -> Settings:
        header = self.upstream_affinity_header
        if header is None:
            return self
        if self.remote_engine_url is None:
            raise ValueError(
                "--upstream-affinity-header routes the calls to --remote-engine-url: "
                "set both, or neither"
            )
        if header.lower() in RESERVED_HEADERS:
            raise ValueError(
                f"--upstream-affinity-header {header} is a header the client sets itself"
            )
        return self

    @model_validator(mode="after")
    def _dpo_roles_differ(self) -> Settings:
        error = dpo_roles_error(
            self.model,
            self.dpo_model,
            self.reference_model,
            remote=self.remote_engine_url is not None,
        )
        if error:
            raise ValueError(error)
        return self


def read_key_file(path: str) -> list[str]:
    """The keys of an --api-key-file; refuses to start on a file that cannot be read or
    holds none (the server would otherwise be open while it looks protected)."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as exc:
        raise ValueError(f"--api-key-file {path}: {exc.strerror or exc}") from None
    keys = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not keys:
        raise ValueError(f"--api-key-file {path} holds no key")
    return keys


POLICY = "policy"
# Headers the remote engine's HTTP client sets itself: an affinity key must not replace them.
RESERVED_HEADERS = frozenset(
    {"authorization", "content-type", "content-length", "host", "connection", "accept"}
)


def scorer_identity(name: str, model: str | None) -> str:
    """What a DPO scorer flag names, comparable with the other role's: ``policy`` for the
    served model (``model``; None is the embedded default), else the model's real path
    when it is a folder here, else the name as given."""
    if name == "default":
        return POLICY if model is None else "default"
    if name == POLICY:
        return POLICY
    real = _real_path(name)
    return POLICY if model is not None and real == _real_path(model) else real


def _real_path(name: str) -> str:
    path = os.path.expanduser(name)
    return os.path.realpath(path) if os.path.exists(path) else name


def dpo_roles_error(
    model: str | None, dpo: str | None, reference: str | None, *, remote: bool
) -> str | None:
    """Why these DPO scorer flags cannot work, or None when they can."""
    if dpo is None and reference is None:
        return None
    if dpo is None:
        # Earlier versions put the served model's sampled-token logprobs in the numerator.
        return (
            "--reference-model needs --dpo-model: TreeBoN's implicit DPO reward is "
            "log pi_dpo - log pi_ref (to score with the served model as the DPO model, "
            "add --dpo-model policy)"
        )
    if reference is None:
        return "--dpo-model needs --reference-model, the model the DPO model was trained from"
    same = scorer_identity(dpo, model) == scorer_identity(reference, model)
    if same:
        return same_model_error(dpo, reference)
    if remote and POLICY in (dpo, reference):
        return (
            "'policy' as a DPO scoring model needs the in-process engine; with "
            "--remote-engine-url name the model instead (it gets an in-process engine)"
        )
    return None


def same_model_error(dpo: str, reference: str) -> str:
    return (
        f"--dpo-model ({dpo}) and --reference-model ({reference}) are the same model: "
        "log pi_dpo - log pi_ref would be 0 for every token, so every TreeBoN partial "
        "score would be 0 and its parents would be picked by float noise"
    )
