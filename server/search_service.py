"""The search behind every API (chat completions, completions, responses), in three steps
(``server.serving_base`` runs them for a request):

    prepare   validate a chat-shaped request and convert it: search strategy, sampling
              config, prompt token ids (the chat template is rendered once, here)
    run       the strategy searches with the runtime's generator and reward model
    report    what the answer says of the search: the chosen candidates, honest usage
              and the ``search`` report of what it spent

Nothing here knows which algorithm runs; the registry does. Nor which API asked: each
shapes its own answer from ``chosen``, ``usage`` and ``report``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from rewards.choice import reward_report
from search.budget import SearchLimits, check_worst_case
from search.context import SearchContext
from search.deadline import run_with_deadline
from search.errors import (
    AlignserveError,
    DeadlineExceeded,
    EngineUnavailable,
    InvalidRequest,
    LimitExceeded,
    ModelNotFound,
)
from search.select import top_distinct
from search.strategy import SearchStrategy
from search.types import Candidate, Message, SearchResult
from server.metrics import ServerMetrics
from server.protocol import ChatCompletionRequest
from server.recording import Recorder
from server.runtime import Runtime
from server.search_options import ServingOptions, process_reward, search_options
from server.search_record import finish_reason, index_of, request_rubric, search_record
from server.settings import Settings
from server.structured import OutputRules, check_strategy, output_rules, rank_valid
from server.tool_calls import parse_tools, with_tools_prompt
from transport import affinity

logger = logging.getLogger(__name__)
RECORD_WAIT_S = 1.0


@dataclass
class Prepared:
    request: ChatCompletionRequest
    strategy: SearchStrategy
    serving: ServingOptions
    context: SearchContext
    completion_id: str
    created: int
    model: str
    record: bool = False
    # Set when a stream ends in an error after its 200 headers went out.
    stream_error_status: int | None = None
    # The search's result once it ran (a stream's request log line and span read it).
    result: SearchResult | None = None
    # Done when its record (--record) is written or dropped.
    record_written: Future[None] | None = None
    # Structured outputs and tools: the grammar, the tools, the validity check.
    rules: OutputRules | None = None
    # When the request was prepared (time.monotonic): its deadline counts from here, so
    # time queued for a slot is part of it (finding L1: a request with timeout_s 1 waited
    # 80 s in the queue, then got its full second).
    arrived: float = field(default_factory=time.monotonic)

    @property
    def algorithm(self) -> str:
        return self.strategy.name


class SearchService:
    def __init__(
        self,
        runtime: Runtime,
        settings: Settings,
        metrics: ServerMetrics,
        recorder: Recorder | None = None,
    ) -> None:
        self.runtime = runtime
        self.settings = settings
        self.metrics = metrics
        self.recorder = recorder
        # One thread: HF tokenizers are not meant to be used from many threads at once.
        self.render_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="render")

    # -- prepare ---------------------------------------------------------------------
    def check_size(self, request: ChatCompletionRequest) -> list[Message]:
        """The conversation, refused (400) over --max-messages or --max-request-chars
        before anything renders or tokenizes it."""
        if len(request.messages) > self.settings.max_messages:
            raise LimitExceeded(
                f"{len(request.messages)} messages; the server accepts at most "
                f"{self.settings.max_messages} (--max-messages)",
                limit="messages",
                param="messages",
            )
        conversation = request.conversation()
        chars = sum(len(m["content"]) for m in conversation)
        check_request_chars(chars, self.settings, what="the messages", param="messages")
        return conversation

    async def tokenize(self, function: Callable[..., list[int]], *args: Any) -> list[int]:
        """``function(*args)`` (a template render or an encode) in the render thread:
        Jinja and the tokenizer take up to seconds on a long input, so the event loop
        keeps serving meanwhile (as vLLM renders in an executor)."""
        return await asyncio.get_running_loop().run_in_executor(self.render_pool, function, *args)

    async def prepare(
        self,
        request: ChatCompletionRequest,
        *,
        prompt_ids: list[int] | None = None,
        id_prefix: str = "chatcmpl-",
    ) -> Prepared:
        """The search a request asks for, ready to run. ``prompt_ids``: the prompt as the
        client gave it, without the chat template (the legacy completions API; the
        request's one user message then carries its text, for the rewards to read)."""
        request.reject_unsupported()
        # After the refusals: a field the request is refused for is not "ignored".
        log_unknown_fields(request.unknown_fields())
        runtime = self.runtime
        if request.model is not None and request.model != runtime.model_name:
            raise ModelNotFound(
                f"model {request.model!r} is not served here; use {runtime.model_name!r}",
                param="model",
            )
        strategy, serving, reward_options = search_options(request, self.settings)
        reward = (
            runtime.rewards.for_request(reward_options)
            if runtime.rewards is not None
            else runtime.reward
        )
        record = self.recorder is not None if serving.record is None else serving.record
        if record and self.recorder is None:
            raise InvalidRequest(
                "this server does not record searches (start it with --record DIR)",
                param="search.record",
            )
        rules = output_rules(
            request.response_format,
            request.structured_outputs,
            parse_tools(request.tools, request.tool_choice, request.parallel_tool_calls),
        )
        constraint_after = check_strategy(rules, strategy)
        conversation = self.check_size(request)
        if rules is not None and rules.tools is not None:
            conversation = with_tools_prompt(conversation, rules.tools)
            chars = sum(len(m["content"]) for m in conversation)
            check_request_chars(chars, self.settings, what="the messages and tools", param="tools")
        if prompt_ids is None:
            prompt_ids = await self.tokenize(runtime.tokenizer.render_chat, conversation)
        # A record keeps every candidate's per-token logprobs.
        sampling = request.sampling_config(
            self.settings.default_max_tokens, logprobs=strategy.wants_logprobs() or record
        )
        if rules is not None and rules.constraint is not None:
            sampling = dataclasses.replace(sampling, constraint=rules.constraint)
        if sampling.max_tokens > self.settings.max_tokens_limit:
            raise InvalidRequest(
                f"max_tokens must be at most {self.settings.max_tokens_limit}",
                param="max_tokens",
            )
        if len(prompt_ids) + sampling.max_tokens > runtime.max_model_len:
            raise InvalidRequest(
                f"the prompt ({len(prompt_ids)} tokens) plus max_tokens ({sampling.max_tokens}) "
                f"exceeds the model's context length ({runtime.max_model_len})",
                param="max_tokens" if len(prompt_ids) < runtime.max_model_len else "messages",
            )
        # A rubric is re-read by the judge with every response it scores (N6): each
        # scored response counts as more than one reward item.
        item_weight = rubric_weight(request_rubric(reward), sampling.max_tokens)
        limits = SearchLimits(
            tokens=self.settings.max_search_tokens,
            engine_calls=self.settings.max_search_engine_calls,
            reward_items=max(1, self.settings.max_search_reward_items // item_weight),
            kept_chars=self.settings.max_search_kept_chars,
            regex_seconds=self.settings.regex_timeout_s,
        )
        # The search's worst case, from its options, before any engine work: a 400 naming
        # the limit (while running, the same limits stop it as its deadline would).
        try:
            check_worst_case(strategy, sampling.max_tokens, limits)
        except LimitExceeded as exc:
            if exc.limit == "search_reward_items" and item_weight > 1:
                exc.message = (
                    f"{exc.message}; with this rubric each scored response counts as "
                    f"{item_weight} (the judge re-reads it every time): shorten the rubric"
                )
                exc.args = (exc.message,)
            raise
        if sampling.top_logprobs:
            # Every answer-producing engine call returns them, for every candidate.
            worst = strategy.worst_case(sampling.max_tokens).tokens
            check_logprob_entries(worst * sampling.top_logprobs, self.settings, "top_logprobs")
        context = SearchContext(
            generator=runtime.generator,
            reward=reward,
            tokenizer=runtime.tokenizer,
            conversation=conversation,
            prompt_ids=prompt_ids,
            sampling=sampling,
            utilities=runtime.utilities,
            dpo=runtime.dpo,
            reference=runtime.reference,
            prm=process_reward(runtime, strategy, reward_options.prm),
            limits=limits,
            constraint_after=constraint_after,
        )
        return Prepared(
            request=request,
            strategy=strategy,
            serving=serving,
            context=context,
            completion_id=f"{id_prefix}{uuid.uuid4().hex}",
            created=int(time.time()),
            model=runtime.model_name,
            record=record,
            rules=rules,
        )

    # -- run ------------------------------------------------------------------------
    def timeout_s(self, prepared: Prepared) -> float:
        """The request's deadline: the server's, or the request's own if lower."""
        timeout_s = self.settings.request_timeout_s
        if prepared.serving.timeout_s is not None:
            timeout_s = min(timeout_s, prepared.serving.timeout_s)
        return timeout_s

    def remaining_s(self, prepared: Prepared) -> float:
        return self.timeout_s(prepared) - (time.monotonic() - prepared.arrived)

    async def admitted(self, enter: Awaitable[Callable[[], None]], prepared: Prepared) -> Any:
        """``enter`` (an admission slot), within what is left of the request's deadline:
        a request that cannot start in time gets 504 (L1) instead of waiting for a slot
        and then running its whole deadline."""
        try:
            return await asyncio.wait_for(enter, max(self.remaining_s(prepared), 0.0))
        except TimeoutError:
            self.metrics.deadline_hits.labels("error").inc()
            raise DeadlineExceeded(
                f"the search did not start within {self.timeout_s(prepared):g} s: every "
                "slot was busy (it waited in the queue)",
                param="search.timeout_s",
            ) from None

    async def run(self, prepared: Prepared) -> SearchResult:
        start = time.perf_counter()
        # What is left of the deadline, counted from the request's arrival (L1).
        timeout_s = max(self.remaining_s(prepared), 0.001)
        try:
            # Every engine call of this search, in whichever task, carries one key
            # (transport.affinity): a router can keep the search on one replica.
            with affinity.scope(affinity.new_key()):
                result = await run_with_deadline(
                    prepared.strategy,
                    prepared.context,
                    timeout_s,
                    prepared.serving.on_timeout,
                    shown_s=self.timeout_s(prepared),
                )
        except DeadlineExceeded:
            self.metrics.deadline_hits.labels("error").inc()
            raise
        if result.details.get("deadline_hit"):
            self.metrics.deadline_hits.labels("best_so_far").inc()
        if result.details.get("budget_hit"):
            self.metrics.limit_rejections.labels(result.details["budget_limit"]).inc()
        result.budget.phase_seconds["total"] = time.perf_counter() - start
        result = rank_valid(prepared.rules, result)
        if not result.ranked:
            raise EngineUnavailable("the search produced no candidates")
        self.metrics.record_search(prepared.algorithm, result)
        prepared.result = result
        if prepared.record and self.recorder is not None:
            try:
                prepared.record_written = self.recorder.submit(search_record(prepared, result))
            except Exception:
                logger.exception("could not record the search")
        return result

    async def recorded(self, prepared: Prepared) -> None:
        """Wait (a fraction of a millisecond normally) until the search's record is
        written, so an answered request is a recorded one; called after the admission
        slot is given back (M7), so a slow disk delays this answer by at most
        RECORD_WAIT_S and never the next search. Never fails the request."""
        if prepared.record_written is None:
            return
        try:
            await asyncio.wait_for(asyncio.wrap_future(prepared.record_written), RECORD_WAIT_S)
        except TimeoutError:
            logger.warning("the record of %s is not written yet; answering", prepared.completion_id)

    # -- report -----------------------------------------------------------------------
    def report(self, prepared: Prepared, result: SearchResult) -> dict[str, Any]:
        budget = result.budget
        report: dict[str, Any] = {
            "algorithm": prepared.algorithm,
            "candidates_generated": len(result.candidates),
            "generated_tokens": budget.generated_tokens,
            "engine_calls": budget.engine_calls,
            "reward_calls": budget.reward_calls,
            # Null when the algorithm never called the reward model (mbr, plain majority).
            "chosen_reward": result.best.reward if budget.reward_calls else None,
            "chosen_index": index_of(result.candidates, result.best),
            "timings": {k: round(v, 4) for k, v in budget.phase_seconds.items()},
            "details": result.details,
        }
        report.update(reward_report(prepared.context.reward, result.candidates))
        if prepared.serving.return_candidates:
            report["candidates"] = [
                {
                    "index": i,
                    "text": c.text,
                    "reward": c.reward,
                    "finish_reason": finish_reason(c),
                    "tokens": c.completion.num_tokens,
                    # log pi(y|x), when the algorithm asked the engine for logprobs.
                    "logprob": c.completion.cumulative_logprob,
                }
                for i, c in enumerate(result.candidates)
            ]
        return report

    def chosen(self, prepared: Prepared, result: SearchResult) -> list[Candidate]:
        return top_distinct(result.ranked, prepared.request.n)

    def usage(self, prepared: Prepared, chosen: Sequence[Candidate]) -> dict[str, int]:
        prompt = len(prepared.context.prompt_ids)
        completion = sum(c.completion.num_tokens for c in chosen)
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }


def check_request_chars(chars: int, settings: Settings, *, what: str, param: str) -> None:
    """A 400 (limit ``request_chars``) for a request whose text, ``chars`` characters of
    ``what``, is over --max-request-chars: checked before anything tokenizes it."""
    if chars > settings.max_request_chars:
        raise LimitExceeded(
            f"{what} hold {chars} characters; the server accepts at most "
            f"{settings.max_request_chars} (--max-request-chars)",
            limit="request_chars",
            param=param,
        )


def check_logprob_entries(entries: int, settings: Settings, param: str) -> None:
    """A 400 (limit ``logprob_entries``) for a request whose top logprobs could pass
    --max-logprob-entries: what the engine returns and the server holds grows with them."""
    if entries > settings.max_logprob_entries:
        raise LimitExceeded(
            f"{param} asks for up to {entries:,} top logprobs (alternatives per token times "
            f"the tokens they cover); the server allows {settings.max_logprob_entries:,} "
            "per request (--max-logprob-entries). Ask for fewer alternatives, a smaller "
            "search or fewer tokens",
            limit="logprob_entries",
            param=param,
        )


def log_unknown_fields(unknown: Sequence[str]) -> None:
    if unknown:
        # Names are client text: quoted, cut short and few, so no line is forged or huge.
        shown = ", ".join(repr(name[:40]) for name in unknown[:8])
        more = f" and {len(unknown) - 8} more" if len(unknown) > 8 else ""
        logger.info("ignoring unknown request fields: %s%s", shown, more)


def internal_error(exc: Exception) -> AlignserveError:
    logger.error("search failed", exc_info=exc)
    return AlignserveError("internal server error")


def rubric_weight(rubric: str | None, max_tokens: int) -> int:
    """How many reward items one scored response counts as with ``rubric``: one, plus the
    rubric's length (about 4 characters a token) in units of a response's (max_tokens,
    at least 64 tokens), which the judge reads again with every response."""
    if not rubric:
        return 1
    return 1 + math.ceil(len(rubric) / 4 / max(max_tokens, 64))
