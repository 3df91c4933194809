"""All configuration in one object: CLI flags override ``ALIGNSERVE_*`` environment variables."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from rewards.spec import RewardSpec


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ALIGNSERVE_", extra="forbid")

    host: str = "127.0.0.1"
    port: int = 8000
    log_level: str = "info"

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

    # Remote engine: a vLLM OpenAI server; the model then names its served model and
    # the tokenizer alignserve renders the chat template with.
    remote_engine_url: str | None = None
    remote_api_key: str | None = None

    reward: str = "judge"
    # Cross-request reward batching: a batch goes out when full or this long after its
    # first response arrived.
    reward_max_batch_size: int = Field(default=32, ge=1)
    reward_max_wait_ms: float = Field(default=10.0, ge=0)
    # A reward call (one caller's share of a batch) that takes longer fails with 504, so a
    # stuck reward model cannot hold searches until their own deadline.
    reward_timeout_s: float = Field(default=120.0, gt=0)
    # A second in-process engine scoring TreeBoN's partial responses with the implicit DPO
    # reward (log pi - log pi_ref). It must share the policy's tokenizer; "default" is the
    # embedded default model.
    reference_model: str | None = None

    # Auth: Bearer keys accepted on the /v1 routes (none: open). With protect_ops_routes
    # /health, /ready and /metrics need a key too.
    api_key: Annotated[list[str], NoDecode] = Field(default_factory=list)
    protect_ops_routes: bool = False

    # Admission control and per-request limits.
    max_concurrent_searches: int = Field(default=16, ge=1)
    max_queued_searches: int = Field(default=64, ge=0)
    retry_after_s: int = Field(default=1, ge=1)
    max_tokens_limit: int = Field(default=4096, ge=1)
    max_live_candidates: int = Field(default=256, ge=1)
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    # Every search's deadline; a request's search.timeout_s may only lower it.
    request_timeout_s: float = Field(default=600.0, gt=0)
    # On SIGTERM /ready turns 503 and new searches are refused; in-flight searches get this
    # long to finish before they are cancelled.
    shutdown_grace_s: int = Field(default=30, ge=0)

    # Record every search (conversation, candidates with token ids, logprobs and rewards,
    # the choice) to rotated JSONL shards in this directory, for `alignserve export`.
    record: str | None = None
    record_shard_mb: int = Field(default=64, ge=1)

    default_algorithm: str = "bon"
    default_n: int = Field(default=4, ge=1)
    max_n: int = Field(default=64, ge=1)
    default_max_tokens: int = Field(default=256, ge=1)
    keepalive_s: float = Field(default=5.0, gt=0)

    @field_validator("api_key", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [key.strip() for key in value.split(",") if key.strip()]
        return value

    @field_validator("reward")
    @classmethod
    def _reward_spec_parses(cls, value: str) -> str:
        RewardSpec.parse(value)
        return value
