"""Majority vote over final answers (``majority``), i.e. self-consistency.

Paper: Wang, Wei, Schuurmans, Le, Chi, Narang, Chowdhery, Zhou 2022, "Self-Consistency
Improves Chain of Thought Reasoning in Language Models" (arXiv 2203.11171).

Rule: sample N complete responses in one engine call and extract each one's final answer.
Every candidate with an answer adds 1 (``weighting="none"``) or a non-negative weight from
its reward (``weighting="reward"``, below) to its answer's tally. The winning answer has
the largest tally, ties going to the answer that appeared first in generation order. The
reply is the highest-reward candidate with the winning answer (the earliest on ties). If
no candidate yields an answer, the reply is the highest-reward candidate (the first,
unweighted).

Extraction: with ``answer_regex`` (exactly one group), the group of its last match;
otherwise the last ``\\boxed{...}`` value (braces balanced), else the last number in the
text. Numbers lose their thousands commas ("1,234.50" -> "1234.50"). Empty answers count
as none. Each candidate's answer is extracted once per search.

Grouping: answers that look like math are grouped by their value with math-verify, as
search-and-learn's ``find_majority_answer`` / ``find_answer_with_largest_sum`` group by
canonical form, so "0.5", "\\frac{1}{2}" and "\\dfrac12" are one answer, and so are "3"
and "3.0"; a group is named by its first spelling. Words and labels ("yes", "(A)") keep
exact grouping. The work runs in a child process under a time bound (search.answer_groups),
past which the answers not yet compared keep exact grouping.

The client's ``answer_regex`` runs on the ``regex`` engine, which honours a timeout, in a
worker thread (the GIL released), so a catastrophically backtracking pattern can neither
freeze the event loop nor run unbounded, and all extractions of one search share one time
budget (the server's ``--regex-timeout-s``, through ``SearchContext.limits``; without
limits ``REGEX_TIMEOUT_S``); past it the search fails with LimitExceeded (400). Compiling
is bounded too (search.regex_check): the option's validation refuses verbose mode and
counted repeats over ``MAX_REGEX_REPEATS`` without compiling, and ``preflight`` compiles
the pattern first in a memory- and time-capped child, after admission.

Reward weights are the verifier's probability that the answer is right, as in the
weighted votes of the references: search-and-learn's weighted best-of-N sums the PRM's
[0, 1] scores per answer; Math-Shepherd and DiVeRSe weigh each vote by the verifier's
probability. They are never negative (a classifier's negative logits used to subtract
votes and could flip the winner). So:
- a reward model with a known range [lo, hi] (``bounds``; the judge's [0, 1]) weighs each
  vote by (R - lo) / (hi - lo): on the judge and the PRMs that is the reward itself;
- an unbounded one (classifier logits, a remote pooling model) by sigmoid(R), the
  probability a one-logit head stands for. Each vote counts at most 1, so a well-rewarded
  minority cannot outvote a consensus of fair rewards: rewards [2, 0, 0, 0] for answers
  [A, B, B, B] weigh A 0.88 and B 1.5, B wins. (Until 2026-12 this was the softmax over
  the N candidates, which sums to 1 and, for logit spreads above about 2, made the vote
  nearly the argmax reward: that example elected A, 0.71 to 0.29.) sigmoid reads 0 as
  even odds, so a reward model whose scores are shifted (a Bradley-Terry model's zero is
  arbitrary) tilts the weights; such a model should be given its ``bounds`` or a
  calibrated offset.
``details.weights`` reports them.

Defaults: ``answer_regex=None``, ``weighting="none"``.

Report: ``details.votes`` is the tally per answer group, ``details.answers`` each
candidate's extracted answer as written (null for none), ``details.groups`` each
candidate's group (the first spelling of its value), ``details.winner`` the winning group,
``details.grouping`` "math" (every math-looking answer compared) or "partial" (the time
bound cut the comparison short).

Ranking: the chosen candidate first, then the rest by their answer's tally (answers in
order of first appearance on ties, candidates without an answer last), then by reward.

Budget: one engine call of N samples. One reward call of N responses only with
``weighting="reward"``; unweighted, the reward model is never called, ``reward_calls``
stays 0 and every ``Candidate.reward`` is 0.0.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections import deque
from collections.abc import Sequence
from typing import Any, Literal

import regex
from pydantic import Field, field_validator

from search.answer_groups import group_answers
from search.context import SearchContext
from search.errors import LimitExceeded
from search.overlap import sample_and_score
from search.regex_check import MAX_REGEX_CHARS, check_answer_regex, refusal
from search.select import rank_candidates
from search.strategy import SearchStrategy
from search.types import Candidate, SearchResult

BOXED = "\\boxed{"
NUMBER = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?")

# Time all answer_regex extractions of one search may take together, when the context
# has no limits (the server passes its --regex-timeout-s in SearchContext.limits).
REGEX_TIMEOUT_S = 0.5


def boxed_value(text: str) -> str | None:
    """Content of the last complete ``\\boxed{...}``; nested braces (\\frac{1}{2}) balance."""
    start, end = text.rfind(BOXED), len(text)
    while start != -1:
        depth, pos = 1, start + len(BOXED)
        while pos < end and depth:
            depth += {"{": 1, "}": -1}.get(text[pos], 0)
            pos += 1
        if depth == 0:
            return text[start + len(BOXED) : pos - 1]
        # Unclosed (a truncated response): an earlier box may still be whole. One still open
        # where this one starts never closes (this one's braces never return to zero), so it
        # is scanned only up to here: linear, where rescanning to the end was quadratic in
        # the number of "\boxed{" in a response.
        start, end = text.rfind(BOXED, 0, start), start
    return None


def default_answer(text: str) -> str | None:
    boxed = boxed_value(text)
    if boxed is not None and boxed.strip():
        value = boxed.strip()
        return value.replace(",", "") if NUMBER.fullmatch(value) else value
    numbers = NUMBER.findall(text)
    return numbers[-1].replace(",", "") if numbers else None


def regex_answer(pattern: regex.Pattern[str], text: str, deadline: float) -> str | None:
    """The group of the last match of ``pattern`` in ``text``, or LimitExceeded when the
    search's regex time runs out (at ``deadline``, ``time.monotonic()``) first."""
    try:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        # The timeout covers the whole iteration; concurrent releases the GIL meanwhile.
        matches = pattern.finditer(text, timeout=remaining, concurrent=True)
        last = deque(matches, maxlen=1)
    except TimeoutError:
        raise LimitExceeded(
            "search.answer_regex took too long to match the responses; use a simpler pattern",
            limit="regex_time",
            param="search.answer_regex",
        ) from None
    # An optional group that did not take part gives None; a blank one counts as none.
    answer = (last[0].group(1) or "").strip() if last else ""
    return answer or None


def tally_votes(answers: Sequence[str | None], weights: Sequence[float]) -> dict[str, float]:
    """Answer -> tally, in order of first appearance (the tie-break order)."""
    tally: dict[str, float] = {}
    for answer, weight in zip(answers, weights, strict=True):
        if answer is not None:
            tally[answer] = tally.get(answer, 0.0) + weight
    return tally


def vote_weights(rewards: Sequence[float], bounds: tuple[float, float] | None) -> list[float]:
    """Non-negative vote weights from rewards of any sign and scale (module docstring)."""
    if bounds is not None:
        low, high = bounds
        if high <= low:
            return [1.0] * len(rewards)
        return [min(max((r - low) / (high - low), 0.0), 1.0) for r in rewards]
    return [sigmoid(r) for r in rewards]


def sigmoid(x: float) -> float:
    # Split by sign so exp never overflows.
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


def vote_order(
    answers: Sequence[str | None], tally: dict[str, float], rewards: Sequence[float]
) -> list[int]:
    """Candidate indices in the vote's order; the first is the rule's choice: the largest
    tally, the answer seen first on equal tallies, then within that answer the highest
    reward, the earliest on ties. Candidates without an answer come last, by reward."""
    appearance = {answer: k for k, answer in enumerate(tally)}

    def key(i: int) -> tuple[bool, float, int, float, int]:
        answer = answers[i]
        if answer is None:
            return (True, 0.0, 0, -rewards[i], i)
        return (False, -tally[answer], appearance[answer], -rewards[i], i)

    return sorted(range(len(answers)), key=key)


class MajorityVote(SearchStrategy):
    name = "majority"
    honours_constraints = True

    answer_regex: str | None = Field(default=None, max_length=MAX_REGEX_CHARS)
    weighting: Literal["none", "reward"] = "none"

    @field_validator("answer_regex")
    @classmethod
    def _one_group(cls, value: str | None) -> str | None:
        # Runs on the event loop before admission: never compiles (search.regex_check);
        # validity and the group count are checked by ``preflight``, after admission.
        why = None if value is None else refusal(value)
        if why is not None:
            raise ValueError(why)
        return value

    async def preflight(self) -> None:
        await check_answer_regex(self.answer_regex)

    def extract(self, text: str) -> str | None:
        return self.answers([text])[0]

    def answers(self, texts: Sequence[str], budget_s: float = REGEX_TIMEOUT_S) -> list[str | None]:
        """Each text's answer; with answer_regex, all of them share ``budget_s``."""
        if self.answer_regex is None:
            return [default_answer(text) for text in texts]
        # Uncached: regex's own cache (500 patterns) would keep every client's pattern.
        pattern = regex.compile(self.answer_regex, cache_pattern=False)
        deadline = time.monotonic() + budget_s
        return [regex_answer(pattern, text, deadline) for text in texts]

    def weights(
        self, candidates: Sequence[Candidate], bounds: tuple[float, float] | None = None
    ) -> list[float]:
        if self.weighting == "none":
            return [1.0] * len(candidates)
        return vote_weights([c.reward for c in candidates], bounds)

    def votes(
        self, candidates: Sequence[Candidate], bounds: tuple[float, float] | None = None
    ) -> dict[str, float]:
        """Answer -> tally, in order of first appearance (the tie-break order), answers
        grouped by exact string (``run`` groups math answers by value first)."""
        answers = self.answers([c.text for c in candidates])
        return tally_votes(answers, self.weights(candidates, bounds))

    async def run(self, ctx: SearchContext) -> SearchResult:
        if self.weighting == "reward":
            candidates = await sample_and_score(ctx, self.n)
        else:
            # Unweighted votes never read a reward, so the reward model is not called.
            with ctx.budget.phase("generate"):
                completions = await ctx.generate(ctx.prompt_ids, ctx.sampling.max_tokens, self.n)
            candidates = [Candidate(c, 0.0) for c in completions]
        texts = [c.text for c in candidates]
        if self.answer_regex is None:
            answers = self.answers(texts)
        else:
            # A client's pattern runs off the loop, which keeps serving while it matches.
            budget_s = REGEX_TIMEOUT_S if ctx.limits is None else ctx.limits.regex_seconds
            answers = await asyncio.to_thread(self.answers, texts, budget_s)
        bounds = ctx.reward.bounds
        grouping = await group_answers(answers)
        groups = grouping.names
        tally = tally_votes(groups, self.weights(candidates, bounds))
        if not tally:
            # No answer anywhere: fall back to the best reward (the first, unweighted).
            ranked = rank_candidates(candidates)
            return SearchResult(
                ranked=ranked, candidates=candidates, budget=ctx.budget, details={"votes": {}}
            )
        order = vote_order(groups, tally, [c.reward for c in candidates])
        details: dict[str, Any] = {
            "votes": tally,
            "answers": answers,
            "groups": groups,
            "winner": groups[order[0]],
            "grouping": "math" if grouping.complete else "partial",
        }
        if self.weighting == "reward":
            details["weights"] = self.weights(candidates, bounds)
        return SearchResult(
            ranked=[candidates[i] for i in order],
            candidates=candidates,
            budget=ctx.budget,
            details=details,
        )
