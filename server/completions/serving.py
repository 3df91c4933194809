"""POST /v1/completions, the legacy OpenAI Completions API, on the serving base
(``server.serving_base``):

    convert   the request becomes a chat request (``CompletionRequest.chat_request``)
              whose one user message is the prompt's text: the rewards read the prompt
    prepare   the prompt's token ids, WITHOUT the chat template (as vLLM's completions
              endpoint: the engine continues the text the client gave); a text prompt is
              tokenized off the event loop, a token-id prompt checked against the
              vocabulary and decoded for the rewards; then ``SearchService.prepare``
    run       every prompt's search at once
    respond   a ``text_completion`` with the ``search`` report

Several prompts (a list of strings or of token-id lists, at most ``MAX_PROMPTS``): one
search per prompt, all run concurrently under the request's ONE admission slot, and
refused (400 naming ``prompt``) when together they would keep more than
--max-live-candidates candidates alive, or when their worst cases together exceed one
search's limits (--max-search-tokens, --max-search-engine-calls,
--max-search-reward-items; ``search.budget.check_request_worst_case``): a request of 16
prompts asks no more of the engine than one search may, and cannot take 16 slots' work
from other clients under its one slot.
Choices are numbered prompt-major (``index = prompt_i * n + j``, as OpenAI), usage is
summed, ``search`` is the list of the reports in prompt order (an object for one
prompt), and the answer's ``id`` is the first search's. ``Completion`` holds the
searches and runs them as the serving base's ``run``. A stream answers one prompt
only (400 naming ``stream``): a stream of several searches would interleave their
chunks and hold its slot for the slowest.

``best_of`` (which vLLM removed): ``best_of: k`` (k > 1) is Best-of-N,
``{"algorithm": "bon", "n": k}``, under the server's reward rather than OpenAI's highest
log probability per token; ``n`` (at most ``best_of``, 400 naming ``best_of`` otherwise,
as OpenAI) of the k are returned, the top distinct ones. ``best_of: 1``, OpenAI's
default that some clients always send, changes nothing. ``best_of`` above 1 with a
``search`` object is a 400 naming ``best_of`` (set ``search.n``): two answers to one
question, and no silent winner.

``logprobs: k`` (0 to 5) gives each choice the chosen answer's per-token logprobs as the
engine computed them (``server.logprobs``). ``echo: true`` puts each prompt before its
answers, and with ``logprobs`` its tokens' logprobs before theirs: the engine scores the
prompt (a ``PromptScorer``) beside the search. With ``max_tokens: 0`` (echo only) nothing
is generated and no search runs: each prompt comes back scored (lm-eval's
loglikelihood requests; lm-eval itself sends ``max_tokens: 1`` at temperature 0, which
is the prompt scored and one greedy token).

Deliberate differences from OpenAI's and vLLM's completions API:

- A non-null ``suffix`` and a non-empty ``logit_bias`` are 400s naming the field; so are
  the chat-only fields ``messages``, ``max_completion_tokens`` and ``top_logprobs``
  (forwarded they would be honoured, ignored they would answer another question), and
  ``echo`` with ``stream``. Other unknown fields are logged and ignored, as chat does
  (vLLM's sampling extensions included); chat's refused extensions (``response_format``,
  ``tools``, ...) are refused here too.
- Without ``max_tokens`` the server's --default-max-tokens applies, not OpenAI's 16.
- Without ``best_of`` or ``search`` the server's default search runs (as in chat);
  ``n`` returns the top ``n`` distinct candidates by reward, not ``n`` samples.
- Streaming works with ``best_of`` or ``n`` above 1 (OpenAI refuses it): the search
  runs, then its answer streams; one prompt per stream. The last finish chunk (the
  last chunk with a choice) carries the ``search`` report, as every JSON answer does.
- A text prompt is encoded without adding the tokenizer's special tokens (vLLM's
  ``add_special_tokens`` default adds a BOS for tokenizers that have one; SmolLM2's adds
  none); special-token strings in the text are parsed as special tokens, as vLLM does.
- At most ``MAX_PROMPTS`` (16) prompts per request, and ``search`` is a list for several.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import weakref
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from search.budget import SearchLimits, check_request_worst_case
from search.errors import InvalidRequest
from search.protocols import PromptScorer, ServedTokenizer, VocabListing
from search.types import Candidate, PromptLogprobs, SearchResult
from search.types import Completion as Answer
from server.completions.protocol import CompletionRequest, Prompt
from server.completions.streaming import completion_stream
from server.logprobs import text_choice_logprobs
from server.protocol import ChatCompletionRequest, ChatMessage
from server.search_service import (
    Prepared,
    SearchService,
    check_logprob_entries,
    check_request_chars,
    finish_reason,
)
from server.serving_base import ServingBase
from server.settings import Settings

logger = logging.getLogger(__name__)


class Completion(ServingBase):
    """One completions request: a search per prompt. The first prompt's ``Prepared``
    stands for the request in the serving base's steps (its algorithm labels the
    metrics); this keeps the rest."""

    def __init__(self, body: CompletionRequest) -> None:
        self.body = body
        self.prepared: list[Prepared] = []
        self.results: list[SearchResult] = []
        # With echo: each prompt's text and, with logprobs, its tokens' logprobs.
        self.echoes: list[Echo] = []

    def convert(self, settings: Settings) -> ChatCompletionRequest:
        self.body.reject_unsupported()
        self.chat = self.body.chat_request()
        self.prompts = self.body.prompts()
        return self.chat

    async def prepare(self, service: SearchService) -> Prepared:
        self.prepared = [
            await prepare_prompt(service, self.body, self.chat, prompt) for prompt in self.prompts
        ]
        # The prompts' searches share the live-candidate limit: a default that would take
        # all of it (speculative rejection's n_initial) gets an equal share.
        share = max(1, service.settings.max_live_candidates // len(self.prepared))
        for p in self.prepared:
            p.strategy.fit_live_limit(share)
        live = sum(p.strategy.peak_candidates() for p in self.prepared)
        if live > service.settings.max_live_candidates:
            raise InvalidRequest(
                f"{len(self.prepared)} prompts' searches keep {live} candidates alive at "
                f"once; the server allows at most {service.settings.max_live_candidates}: "
                "send fewer prompts per request",
                param="prompt",
            )
        # The prompts share one slot, so together they get one search's limits (N4).
        check_request_worst_case(
            [(p.strategy, p.context.sampling.max_tokens) for p in self.prepared],
            self.prepared[0].context.limits or SearchLimits(),
            param="prompt",
        )
        if self.body.echo:
            self.echoes = [
                Echo(await echo_text(service, prompt, p.context.prompt_ids))
                for prompt, p in zip(self.prompts, self.prepared, strict=True)
            ]
            if self.body.logprobs is not None:
                if not isinstance(service.runtime.generator, PromptScorer):
                    raise InvalidRequest(
                        "echo with logprobs needs an engine that scores prompts, and this "
                        "server's does not",
                        param="echo",
                    )
                tokens = sum(len(p.context.prompt_ids) for p in self.prepared)
                check_logprob_entries(tokens * self.body.logprobs, service.settings, "logprobs")
        return self.prepared[0]

    def searches(self, first: Prepared) -> list[Prepared]:
        return self.prepared

    async def run(self, service: SearchService, first: Prepared) -> SearchResult:
        """The searches at once; the first failure cancels the others (aborting their
        engine requests) and is the request's error. Each is counted in the search
        metrics as its own."""
        if len(self.prepared) == 1 and not self.body.echo:
            self.results = [await service.run(first)]
            return self.results[0]
        tasks = [
            asyncio.ensure_future(self.run_prompt(service, prepared, i))
            for i, prepared in enumerate(self.prepared)
        ]
        try:
            self.results = list(await asyncio.gather(*tasks))
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return self.results[0]

    async def run_prompt(self, service: SearchService, prepared: Prepared, i: int) -> SearchResult:
        """One prompt's search; with echo and logprobs, its prompt scored beside it
        (``echoes[i]``). With ``max_tokens: 0`` only the prompt is scored."""
        body = self.body
        if not body.echo or body.logprobs is None:
            return scored_only(prepared) if body.scores_only else await service.run(prepared)
        budget = prepared.context.budget
        scoring = asyncio.ensure_future(score_prompt(service, prepared, body.logprobs))
        search = asyncio.ensure_future(service.run(prepared)) if not body.scores_only else None
        try:
            await asyncio.gather(scoring, *([search] if search else []))
        finally:
            for task in (scoring, search):
                if task is not None:
                    task.cancel()
            await asyncio.gather(scoring, *([search] if search else []), return_exceptions=True)
        self.echoes[i] = dataclasses.replace(self.echoes[i], logprobs=scoring.result())
        budget.engine_calls += 1  # the prompt's scoring, in the report
        return search.result() if search is not None else scored_only(prepared)

    def respond(
        self, service: SearchService, _first: Prepared, _result: SearchResult
    ) -> dict[str, Any]:
        searches = list(zip(self.prepared, self.results, strict=True))
        return completion(service, searches, self.body.logprobs, self.echoes or None)

    def stream(
        self, service: SearchService, prepared: Prepared, on_search_end: Callable[[], None]
    ) -> AsyncIterator[str]:
        return completion_stream(service, prepared, on_search_end)


async def prepare_prompt(
    service: SearchService, body: CompletionRequest, chat: ChatCompletionRequest, prompt: Prompt
) -> Prepared:
    """One prompt's search, ready to run: its ids go to the engine as they are, its text
    is the user message the rewards read. Errors name the completions field."""
    if body.best_of is not None and body.best_of > service.settings.max_n:
        raise InvalidRequest(f"best_of must be at most {service.settings.max_n}", param="best_of")
    runtime = service.runtime
    tokenizer = runtime.tokenizer
    limit = runtime.max_model_len
    # The whole request's text, before tokenizing (what the limit protects).
    check_request_chars(body.text_chars(), service.settings, what="the prompts", param="prompt")
    if isinstance(prompt, str):
        ids = await service.tokenize(tokenizer.encode, prompt)
    else:
        size = await vocab_size(service)
        if size is not None and max(prompt) >= size:
            raise InvalidRequest(
                f"token id {max(prompt)} is outside the vocabulary (0 to {size - 1})",
                param="prompt",
            )
        ids = prompt
    if not ids:
        raise InvalidRequest("the prompt encodes to no tokens", param="prompt")
    if len(ids) >= limit:
        raise InvalidRequest(
            f"the prompt ({len(ids)} tokens) fills the model's context length ({limit})",
            param="prompt",
        )
    text = prompt if isinstance(prompt, str) else await off_loop(service, tokenizer.decode, ids)
    request = chat.model_copy(update={"messages": [ChatMessage(role="user", content=text)]})
    try:
        return await service.prepare(request, prompt_ids=ids, id_prefix="cmpl-")
    except InvalidRequest as exc:
        exc.param = completions_param(exc.param, body)
        raise


def completions_param(param: str | None, body: CompletionRequest) -> str | None:
    """A chat error's field as this request names it: chat's messages are the prompt,
    its top_logprobs are logprobs, and a search the client asked for with best_of is
    best_of (not a search object it never sent)."""
    if param == "messages":
        return "prompt"
    if param == "top_logprobs":
        return "logprobs"
    if param and param.startswith("search") and body.search is None and (body.best_of or 1) > 1:
        return "best_of"
    return param


@dataclass(frozen=True)
class Echo:
    """What ``echo`` puts before a prompt's answers: its text, and with logprobs its
    tokens' logprobs (once the prompt was scored)."""

    text: str
    logprobs: PromptLogprobs | None = None


async def echo_text(service: SearchService, prompt: Prompt, ids: Sequence[int]) -> str:
    """The prompt as echo repeats it: the client's text, or its token ids' text with
    special tokens kept (vLLM's)."""
    if isinstance(prompt, str):
        return prompt
    tokenizer = service.runtime.tokenizer
    if isinstance(tokenizer, ServedTokenizer):
        return str(await off_loop(service, tokenizer.detokenize, ids))
    return str(await off_loop(service, tokenizer.decode, ids))


async def score_prompt(service: SearchService, prepared: Prepared, top: int) -> PromptLogprobs:
    """The prompt's own tokens scored by the engine (a PromptScorer: checked when the
    request was prepared)."""
    generator = service.runtime.generator
    assert isinstance(generator, PromptScorer)
    with prepared.context.budget.phase("score_prompt"):
        return await generator.prompt_logprobs(prepared.context.prompt_ids, top)


def scored_only(prepared: Prepared) -> SearchResult:
    """The answer of ``max_tokens: 0`` (echo): no search ran and nothing was generated;
    one empty answer, cut at its length of 0."""
    empty = Answer(token_ids=(), text="", finish_reason="length", logprobs=(), top_logprobs=())
    candidate = Candidate(empty, 0.0)
    budget = prepared.context.budget
    budget.phase_seconds["total"] = sum(budget.phase_seconds.values())
    result = SearchResult(ranked=[candidate], candidates=[candidate], budget=budget)
    prepared.result = result
    return result


async def off_loop(service: SearchService, function: Callable[..., Any], *args: Any) -> Any:
    """In the render thread, where the tokenizer's other calls run (see ``tokenize``)."""
    return await asyncio.get_running_loop().run_in_executor(service.render_pool, function, *args)


# Vocabulary sizes by tokenizer: ``vocab()`` copies a 50,000-entry dict (20 ms), once.
VOCAB_SIZES: weakref.WeakKeyDictionary[object, int] = weakref.WeakKeyDictionary()


async def vocab_size(service: SearchService) -> int | None:
    """One past the tokenizer's largest id (added tokens included), from ``vocab()``;
    None for a tokenizer that does not list its vocabulary (the unit tests' fakes)."""
    tokenizer = service.runtime.tokenizer
    if tokenizer not in VOCAB_SIZES:
        if not isinstance(tokenizer, VocabListing):
            return None
        listed: dict[str, int] = await off_loop(service, tokenizer.vocab)
        VOCAB_SIZES[tokenizer] = max(listed.values()) + 1
    return VOCAB_SIZES[tokenizer]


def completion(
    service: SearchService,
    searches: Sequence[tuple[Prepared, SearchResult]],
    logprobs: int | None = None,
    echoes: Sequence[Echo] | None = None,
) -> dict[str, Any]:
    """A ``text_completion``: each prompt's top ``n`` distinct candidates, prompt-major;
    with ``logprobs`` (k) their tokens' logprobs, with ``echoes`` each prompt before its
    answers."""
    first = searches[0][0]
    choices: list[dict[str, Any]] = []
    usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    for i, (prepared, result) in enumerate(searches):
        chosen = service.chosen(prepared, result)
        echo = None if echoes is None else echoes[i]
        for j, cand in enumerate(chosen):
            choices.append(
                {
                    "index": i * prepared.request.n + j,
                    "text": cand.text if echo is None else echo.text + cand.text,
                    "logprobs": text_choice_logprobs(
                        prepared, cand, logprobs, None if echo is None else echo.logprobs
                    ),
                    "finish_reason": finish_reason(cand),
                }
            )
        for key, value in service.usage(prepared, chosen).items():
            usage[key] += value
    reports = [service.report(prepared, result) for prepared, result in searches]
    return {
        "id": first.completion_id,
        "object": "text_completion",
        "created": first.created,
        "model": first.model,
        "choices": choices,
        "usage": usage,
        "search": reports[0] if len(reports) == 1 else reports,
    }
