"""Generative judge: the reward is the expected rubric score under the judge model's
next-token probabilities of the score tokens "1".."9", read from one forward pass per
response (max_tokens=1, top-20 logprobs). Nothing is sampled and no text is parsed, so a
small judge model still yields a graded, always-defined reward.

Rewards are normalised to [0, 1]: 0 is a certain "1", 1 a certain "9".

The prompt fits the judge's context. It runs on the served engine, whose context the
policy's prompt plus ``max_tokens`` was checked against; but the judge's prompt is the
rubric, a re-render of the whole conversation and the response, so it can be longer. With
``max_model_len`` known, a prompt over ``max_model_len - 1`` tokens (one token is
generated) is shortened as rewards.fit describes: the oldest turns first (the prompt
says how many were left out), then the middle of the last user turn, the middle of the
system prompt, and the head of the response. One that cannot be shortened enough (a
context smaller than the rubric and about 3,000 characters) fails with
``RewardUnavailable(reason="too_long")``. Without ``max_model_len`` (a remote engine whose
context is not known) the prompt goes as it is.

Two prompt layouts (``layout``):

- ``continuation`` (the default when the caller passes ``token_ids``): the judge continues
  the generation's own context. Its prompt ids are the generation prompt's ids, the
  response's generated ids, then a new user turn asking for the 1-9 rating by the
  criteria and the assistant prefix "Score: " (the template's own turn ids, from
  ``HFChatTokenizer.next_user_turn``; a response that ended with the end-of-turn token
  keeps it, one that was cut is closed with it). The engine's prefix cache holds the
  conversation and the response from the generation, so only the question and the tail of
  the last KV block are computed. It needs the judge to run on the policy's engine with the
  policy's tokenizer, which is the only way this kind is built (rewards.spec). A prompt
  that would not fit the context, or a call without ``token_ids``, uses the separate layout.
  Behind a router over several replicas only the replica that generated holds that prefix:
  on a routed engine (``search.protocols.SearchRouted``, ``--upstream-affinity-header``)
  each search's items go out as a request of their own under that search's key
  (transport.affinity), which the router maps to the same replica; a micro-batch that
  mixes searches is then one request per search, sent together.
- ``separate``: a prompt of the judge's own, the rubric as system message and a re-render of
  the conversation and the response as text (rendered afresh, so nothing is cached but the
  rubric). It can see a shortened conversation; see below.

Failures are 503s without the engine's text: an engine that refuses a judge prompt
(vLLM's "the decoder prompt (length ...) is longer than ...") would otherwise reach the
client as a 400 about a prompt it never sent, with the server's internals in it. The
detail is logged; the client gets ``RewardUnavailable``. The first failure among a call's
responses cancels the others' engine requests.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

from rewards.batcher import ScoreItem
from rewards.fit import Shortened, fit, render_turn
from search.context import gather_all, generate_each
from search.errors import InvalidRequest, RewardUnavailable
from search.protocols import Generator, JudgeTokenizer, SearchRouted
from search.types import Message, SamplingConfig
from transport import affinity

logger = logging.getLogger(__name__)

SCORES = tuple(range(1, 10))
TOP_LOGPROBS = 20  # vLLM's default max_logprobs

RUBRIC = (
    "You are a strict and fair judge of AI assistant answers. Rate how helpful, correct, "
    "relevant and clear the assistant's response is for the user's last message, on a scale "
    "from 1 (useless or wrong) to 9 (excellent). Reply with a single digit."
)
PARTIAL_NOTE = "The response is unfinished; rate how good it is so far and how promising."
SCORE_PREFIX = "Score: "
LAYOUTS = ("continuation", "separate")
# The continuation layout's user turn, (complete, partial) by wording. It is the part of
# the prompt the prefix cache cannot hold, so every token of it is computed for every
# response: 39 tokens instead of the criteria's 17 made the judge's step 1.3-1.4x slower
# here. ``short`` is the default, chosen on ground truth (bench/judge_layouts.py, chosen
# on verifiable prompts 0-23, reported on 100-123 in the README): its complete question
# picked answers as good (truth of its Best-of-8 0.32 and 0.52, against the criteria's
# 0.28 and 0.47) for 7 tokens less per response. Its partial question keeps the criteria
# wording: the short one tried ("Rate your unfinished response from 1 to 9.") ranked
# prefixes against the truth on both sets (Spearman -0.09 and -0.18, the criteria's -0.01).
PARTIAL_QUESTION_NOTE = "It is unfinished: rate it so far and how promising it is."
CRITERIA_QUESTION = "Rate your response for helpfulness, correctness and clarity from 1 to 9."
CRITERIA_PARTIAL = f"{CRITERIA_QUESTION} {PARTIAL_QUESTION_NOTE}"
QUESTIONS = {
    "short": ("Rate your response from 1 to 9.", CRITERIA_PARTIAL),
    "criteria": (CRITERIA_QUESTION, CRITERIA_PARTIAL),
}


def question_text(partial: bool, rubric: str | None, wording: str = "short") -> str:
    """The continuation layout's question; ``rubric`` (client text) replaces the criteria."""
    if rubric is None:
        return QUESTIONS[wording][partial]
    question = (
        "Rate your response from 1 (fails the criteria) to 9 (meets them fully) by "
        f"these criteria:\n{rubric}"
    )
    return f"{question} {PARTIAL_QUESTION_NOTE}" if partial else question


def render_conversation(conversation: Sequence[Message], omitted: int = 0) -> str:
    """The turns as text; ``omitted`` earlier turns left out are marked after the leading
    system messages."""
    parts = [render_turn(m) for m in conversation]
    if omitted:
        lead = next((i for i, m in enumerate(conversation) if m["role"] != "system"), len(parts))
        parts.insert(lead, f"[... {omitted} earlier turns left out ...]")
    return "\n\n".join(parts)


def rubric_task(rubric: str) -> str:
    """A request's own criteria (search.rubric) in place of RUBRIC; the 1-9 scale and the
    single-digit reply stay the judge's, so the score is read the same way."""
    return (
        "You are a strict and fair judge of AI assistant answers. Judge the assistant's "
        f"response to the user's last message by these criteria:\n{rubric}\n"
        "Rate it from 1 (fails the criteria) to 9 (meets them fully). Reply with a single digit."
    )


def judge_messages(
    conversation: Sequence[Message],
    response: str,
    partial: bool,
    rubric: str | None = None,
    *,
    omitted: int = 0,
) -> list[Message]:
    """The judge's prompt. The criteria come first (the system message), so every request
    with the same rubric shares a cached prefix. ``omitted``: earlier turns left out to
    fit the judge's context (see the module docstring)."""
    task = RUBRIC if rubric is None else rubric_task(rubric)
    if partial:
        task = f"{task} {PARTIAL_NOTE}"
    body = (
        f"Conversation:\n{render_conversation(conversation, omitted)}\n\n"
        f"Assistant's response:\n{response}\n\n"
        "Rate the response from 1 to 9."
    )
    return [{"role": "system", "content": task}, {"role": "user", "content": body}]


def digit_score(probs: Mapping[int, float]) -> float | None:
    """Expected score in [0, 1] from (unnormalised) probabilities of the scores 1..9,
    renormalised over those present; None when they hold no probability."""
    total = sum(probs.values())
    if not (total > 0.0 and math.isfinite(total)):
        return None
    mean = sum(score * p for score, p in probs.items()) / total
    return (mean - SCORES[0]) / (SCORES[-1] - SCORES[0])


def expected_score(top_logprobs: Mapping[int, float], score_token_ids: Sequence[int]) -> float:
    """Expected score in [0, 1] from the score tokens' probabilities, renormalised over
    those present in the top-k. With none present, the midpoint (no information; after the
    "Score: " prefill the digits hold nearly all the mass, so this is rare)."""
    probs = {
        score: math.exp(top_logprobs[tok])
        for score, tok in zip(SCORES, score_token_ids, strict=True)
        if tok in top_logprobs
    }
    score = digit_score(probs)
    return 0.5 if score is None else score


class JudgeReward:
    # Expected scores normalised to [0, 1] (see expected_score).
    bounds = (0.0, 1.0)
    # score() takes each response's token ids (the continuation layout; see the docstring).
    takes_token_ids = True

    def __init__(
        self,
        generator: Generator,
        tokenizer: JudgeTokenizer,
        *,
        max_model_len: int | None = None,
        layout: str = "continuation",
        question: str = "short",
    ) -> None:
        if layout not in LAYOUTS:
            raise ValueError(f"judge layout must be one of {', '.join(LAYOUTS)}, not {layout!r}")
        if question not in QUESTIONS:
            raise ValueError(f"judge question must be one of {', '.join(QUESTIONS)}")
        self._generator = generator
        self._tokenizer = tokenizer
        self.layout = layout
        self.question = question  # the continuation layout's wording (QUESTIONS)
        # One thread of its own (not asyncio's default pool): a few threads that allocate
        # keep a few malloc arenas, and a batch renders fine on one.
        self._render_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="judge-render")
        self._score_ids = [tokenizer.token_id(str(s)) for s in SCORES]
        self._params = SamplingConfig(max_tokens=1, temperature=0.0, top_logprobs=TOP_LOGPROBS)
        # The prompt and the one generated token must fit the engine's context.
        self.max_prompt_tokens = (
            None if max_model_len is None else max_model_len - self._params.max_tokens
        )
        self._score_prefix = tokenizer.encode(SCORE_PREFIX)
        self._warned_layout = False
        # A routed engine (search.protocols.SearchRouted): each search's items go to the
        # replica that generated them, whose prefix cache holds the continuation's context.
        self._per_search = isinstance(generator, SearchRouted) and generator.routes_by_search

    async def score(
        self,
        conversation: Sequence[Message],
        responses: Sequence[str],
        *,
        partial: bool = False,
        rubric: str | None = None,
        token_ids: Sequence[Sequence[int]] | None = None,
    ) -> list[float]:
        """``token_ids``: per response, the generation prompt's ids then the response's."""
        ids = [None] * len(responses) if token_ids is None else [tuple(t) for t in token_ids]
        key = affinity.current()
        items = [
            ScoreItem(conversation, r, partial, rubric, i, key)
            for r, i in zip(responses, ids, strict=True)
        ]
        return await self.score_items(items)

    async def score_items(self, items: Sequence[ScoreItem]) -> list[float]:
        counts: dict[str, int] = {}  # token counts of pieces, shared by a call's items

        def count(text: str) -> int:
            if text not in counts:
                counts[text] = len(self._tokenizer.encode(text))
            return counts[text]

        # Rendering (Jinja and the tokenizer) takes milliseconds per item and up to seconds
        # for a batch of long conversations: a worker thread keeps the event loop serving.
        # The tokenizer is only read (see engines.tokenizer), so threads may share it.
        prompts = await asyncio.get_running_loop().run_in_executor(
            self._render_pool, lambda: [self.prompt(it, count) for it in items]
        )
        # Submitted together (one request to a remote engine), so the engine batches them;
        # on a routed engine, one request per search, each to its search's replica.
        if not self._per_search:
            return await self._judge(prompts)
        groups: dict[str | None, list[int]] = {}
        for index, item in enumerate(items):
            groups.setdefault(item.affinity, []).append(index)
        scored = await gather_all(
            [self._judge_as(key, [prompts[i] for i in group]) for key, group in groups.items()]
        )
        rewards = [0.0] * len(items)
        for group, values in zip(groups.values(), scored, strict=True):
            for index, value in zip(group, values, strict=True):
                rewards[index] = value
        return rewards

    async def _judge_as(self, key: str | None, prompts: list[list[int]]) -> list[float]:
        """``_judge`` under the search key ``key`` (a task of its own: gather_all's)."""
        with affinity.scope(key):
            return await self._judge(prompts)

    def prompt(self, item: ScoreItem, count: Callable[[str], int] | None = None) -> list[int]:
        """The judge prompt's token ids for ``item``: the continuation layout when it
        applies and fits, else the separate one, shortened to fit the context."""
        if self.layout == "continuation" and item.ids is not None:
            ids = self.continuation_prompt(item.ids, item.partial, item.rubric)
            if ids is not None and (
                self.max_prompt_tokens is None or len(ids) <= self.max_prompt_tokens
            ):
                return ids
        return self.separate_prompt(item, count)

    def continuation_prompt(
        self, context: Sequence[int], partial: bool, rubric: str | None
    ) -> list[int] | None:
        """``context`` (the generation prompt's and the response's ids) continued with the
        rating question; None when the chat template cannot be continued this way."""
        try:
            close, open_reply = self._tokenizer.next_user_turn()
        except ValueError as exc:
            if not self._warned_layout:
                self._warned_layout = True
                logger.warning("the judge uses the separate layout: %s", exc)
            return None
        # A response that ended with the end-of-turn token already holds the turn's first id.
        if context and close and context[-1] == close[0]:
            close = close[1:]
        # The rubric is client text: its special-token strings stay text.
        asked = self._tokenizer.encode_plain(question_text(partial, rubric, self.question))
        return [*context, *close, *asked, *open_reply, *self._score_prefix]

    def separate_prompt(
        self, item: ScoreItem, count: Callable[[str], int] | None = None
    ) -> list[int]:
        """The separate layout's prompt ids for ``item``, shortened to fit the context."""

        def render(state: Shortened) -> list[int]:
            messages = judge_messages(
                state.conversation(),
                state.response_text,
                item.partial,
                item.rubric,
                omitted=state.dropped,
            )
            return self._tokenizer.render_with_prefix(messages, SCORE_PREFIX)

        start = Shortened.of(item.conversation, item.response)
        budget = self.max_prompt_tokens
        if budget is None:
            return render(start)
        state, ids, length = fit(
            start, render, len, budget, count or (lambda t: len(self._tokenizer.encode(t)))
        )
        if length > budget:
            logger.warning(
                "a judge prompt of %d tokens cannot be shortened to the judge's %d",
                length,
                budget,
            )
            raise RewardUnavailable("the conversation is too long for the judge", reason="too_long")
        if state.shortened:
            logger.debug(
                "judge prompt shortened to %d tokens: %d turns left out, %d/%d/%d characters "
                "cut from the user turn/system prompt/response",
                length,
                state.dropped,
                state.user_cut,
                state.system_cut,
                state.response_cut,
            )
        return ids

    async def _judge(self, prompts: list[list[int]]) -> list[float]:
        try:
            outs = await generate_each(self._generator, prompts, self._params)
        except InvalidRequest as exc:
            longest = max(len(p) for p in prompts)
            logger.warning("the engine refused judge prompts (longest %d tokens): %s", longest, exc)
            raise RewardUnavailable("the judge could not score a response") from exc
        return [
            expected_score(out.top_logprobs[0] if out.top_logprobs else {}, self._score_ids)
            for out in outs
        ]
