"""The loaded models behind the API: generator, tokenizer, reward. Built in the background
after the HTTP server is up, so /health answers and /ready says 503 while loading."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rewards.choice import RewardSet
from search.protocols import (
    AsyncClosable,
    ChatTokenizer,
    Generator,
    ProcessRewardModel,
    RewardModel,
    TokenScorer,
    Utility,
)
from search.treebon import AUTO_WITHOUT_SCORERS
from server.settings import POLICY, Settings, same_model_error, scorer_identity

logger = logging.getLogger(__name__)


@dataclass
class Runtime:
    generator: Generator
    tokenizer: ChatTokenizer
    # The default reward (what a request that names none searches with).
    reward: RewardModel
    model_name: str
    max_model_len: int
    health_check: Callable[[], Awaitable[None]] | None = None
    utilities: Mapping[str, Utility] = field(default_factory=dict)
    # TreeBoN's DPO scorers (both or neither; either may be the generator itself).
    dpo: TokenScorer | None = None
    reference: TokenScorer | None = None
    # Every named reward (--reward NAME=SPEC); None: only ``reward``, under the name of
    # the settings' default (runtimes built by hand, in tests).
    rewards: RewardSet | None = None
    # The process reward models of the step searches (--prm NAME=SPEC), by name, and the
    # name of the default one (what a request that sets no search.prm scores steps with).
    prms: Mapping[str, ProcessRewardModel] = field(default_factory=dict)
    default_prm: str | None = None
    closers: list[Callable[[], Any]] = field(default_factory=list)

    @property
    def prm(self) -> ProcessRewardModel | None:
        """The default process reward model, if the server has one."""
        return None if self.default_prm is None else self.prms.get(self.default_prm)

    async def close(self) -> None:
        await self.close_all(self.closers)

    @staticmethod
    async def close_all(closers: list[Callable[[], Any]]) -> None:
        """In reverse order of registration; a closer that fails is logged, and the rest
        still run."""
        for close in reversed(closers):
            try:
                result = close()
                if asyncio.iscoroutine(result):
                    await result
            except Exception:
                logger.exception("closing %r failed", close)


class NeedsConstraints:
    """The default reward when it is ``constraints``: scoring without a request's
    constraints is a request error, never a made-up score."""

    bounds = (0.0, 1.0)
    takes_token_ids = False

    async def score(self, *_: Any, **__: Any) -> list[float]:
        from search.errors import InvalidRequest

        raise InvalidRequest(
            "the default reward is constraints: send search.constraints", param="search.constraints"
        )


def resolve_model(model: str | None, cache_dir: str | None) -> str:
    if model:
        return model
    from engines.default_model import ensure_default_model

    return str(ensure_default_model(Path(cache_dir) if cache_dir else None))


async def load_runtime(settings: Settings) -> Runtime:
    """Start the engine (in-process or remote) and the reward model the settings name.
    When a part fails, the parts already started are closed before the error goes on
    (the server then exits; an engine left running would hold the GPU)."""
    closers: list[Callable[[], Any]] = []
    try:
        return await _build_runtime(settings, closers)
    except BaseException:
        await Runtime.close_all(closers)
        raise


async def _build_runtime(settings: Settings, closers: list[Callable[[], Any]]) -> Runtime:
    from engines.default_model import DEFAULT_MODEL_NAME, context_length
    from engines.tokenizer import HFChatTokenizer
    from rewards.prm_spec import build_prm
    from rewards.spec import build_reward

    model = await asyncio.to_thread(resolve_model, settings.model, settings.model_cache_dir)
    tokenizer = await asyncio.to_thread(HFChatTokenizer.load, model)
    generator: Any
    if settings.remote_engine_url:
        from engines.remote import RemoteGenerator

        generator = RemoteGenerator(
            settings.remote_engine_url,
            settings.remote_model_name,
            fallback_model=settings.model or model,
            api_key=settings.remote_api_key,
            health_timeout_s=settings.health_timeout_s,
            affinity_header=settings.upstream_affinity_header,
        )
        closers.append(generator.aclose)
        max_model_len = settings.max_model_len or context_length(model)
    else:
        from engines.vllm_local import VLLMGenerator

        generator = await asyncio.to_thread(VLLMGenerator.start, engine_config(settings, model))
        closers.append(generator.shutdown)
        max_model_len = generator.max_model_len
    # The constraints reward's checks import nltk and lm-eval (seconds): once, here, in a
    # thread, rather than on the event loop in the first request that sends constraints.
    from rewards.constraints.reference import load as load_ifeval_checks

    await asyncio.to_thread(load_ifeval_checks)
    specs, default = settings.reward_specs
    built = BuildContext(settings, generator, tokenizer, max_model_len, closers)
    # constraints is built per request, so it is not among the models.
    rewards = RewardSet(await built.each(build_reward, specs), specs, default)
    prm_specs, default_prm = settings.prm_specs
    prms = await built.each(build_prm, prm_specs)
    dpo = reference = None
    if settings.dpo_model and settings.reference_model:
        in_process = None if settings.remote_engine_url else generator
        dpo, reference = await asyncio.to_thread(
            start_scorers, settings, model, in_process, tokenizer, closers
        )
    note_treebon_partial_score(dpo is not None and reference is not None)
    from rewards.utility import build_utilities

    return Runtime(
        generator=generator,
        tokenizer=tokenizer,
        reward=rewards.default_model or NeedsConstraints(),
        rewards=rewards,
        model_name=settings.served_model_name or settings.model or DEFAULT_MODEL_NAME,
        max_model_len=max_model_len,
        health_check=generator.check_health,
        utilities=build_utilities(),
        dpo=dpo,
        reference=reference,
        prms=prms,
        default_prm=default_prm,
        closers=closers,
    )


def note_treebon_partial_score(has_scorers: bool) -> None:
    """Say once, at start-up, that TreeBoN's default partial score is not the paper's
    here (its report says so per request too)."""
    if not has_scorers:
        logger.warning(AUTO_WITHOUT_SCORERS)


@dataclass
class BuildContext:
    """What every reward and PRM is built from: the settings, the served engine and its
    tokenizer and context; what a model needs closing is registered in ``closers``."""

    settings: Settings
    generator: Generator
    tokenizer: Any
    max_model_len: int
    closers: list[Callable[[], Any]]

    async def each(self, build: Callable[..., Any], specs: Sequence[Any]) -> dict[str, Any]:
        """``build(spec, ...)`` of every spec, off the event loop, by name; a spec built as
        None is left out."""
        models: dict[str, Any] = {}
        for spec in specs:
            model = await asyncio.to_thread(
                build,
                spec,
                self.generator,
                self.tokenizer,
                api_key=self.settings.remote_api_key,
                max_model_len=self.max_model_len,
                judge_layout=self.settings.judge_layout,
            )
            if model is None:
                continue
            models[spec.name] = model
            if isinstance(model, AsyncClosable):
                self.closers.append(model.aclose)
        return models


def engine_config(settings: Settings, model: str) -> Any:
    from engines.vllm_local import EngineConfig

    return EngineConfig(
        model=model,
        dtype=settings.dtype,
        max_model_len=settings.max_model_len,
        gpu_memory_utilization=settings.gpu_memory_utilization,
        tensor_parallel_size=settings.tensor_parallel_size,
        pipeline_parallel_size=settings.pipeline_parallel_size,
        enforce_eager=settings.enforce_eager,
        extra=dict(settings.engine_args),
    )


def start_scorers(
    settings: Settings,
    policy_model: str,
    generator: Any | None,
    tokenizer: Any,
    closers: list[Callable[[], Any]],
) -> tuple[Any, Any]:
    """TreeBoN's DPO model and its reference. A role on the policy's model scores with the
    in-process ``generator`` (None when the policy is remote); any other gets an engine of
    its own with the policy's engine settings (on one GPU, give every engine room with
    --gpu-memory-utilization). Each engine's shutdown goes on ``closers``."""
    from engines.tokenizer import HFChatTokenizer
    from engines.vllm_local import VLLMGenerator

    dpo, reference = settings.dpo_model, settings.reference_model
    assert dpo is not None and reference is not None, "both roles are named (load_runtime)"
    names = (dpo, reference)
    models = [
        policy_model
        if name == POLICY
        else resolve_model(None if name == "default" else name, settings.model_cache_dir)
        for name in names
    ]
    roles = [scorer_identity(m, policy_model) for m in models]
    # Settings checked the names; only resolved paths show e.g. "default" = the model folder.
    if roles[0] == roles[1]:
        raise RuntimeError(same_model_error(*names))
    scorers = []
    for role, model in zip(roles, models, strict=True):
        if role == POLICY and generator is not None:
            scorers.append(generator)
            continue
        # The scorers read the policy's token ids: a different vocabulary scores nonsense.
        if HFChatTokenizer.load(model).vocab() != tokenizer.vocab():
            raise RuntimeError(f"{model} does not share the policy's tokenizer")
        engine = VLLMGenerator.start(engine_config(settings, model))
        closers.append(engine.shutdown)
        scorers.append(engine)
    return scorers[0], scorers[1]
