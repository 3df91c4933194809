"""Responses built one reasoning step at a time, for the step-level searches (beam_search,
dvts, particle_filtering) and their process reward model (PRM).

A step ends at the delimiter (``step_delimiter``, default a blank line, as
search-and-learn's and Qwen2.5-Math-PRM's step format) or after ``max_step_tokens``.
Each step is one engine request on prompt ids + the response's ids so far, so the prefix
cache serves everything already computed and no re-tokenisation moves a token boundary.
The request stops at the delimiter or any of the client's stop strings, and keeps the
matched string in its text (vLLM's ``include_stop_str_in_output``), so the steps' texts
join into the response exactly. A client stop string ends the response and is cut off, as
in any completion; so does the end-of-sequence token, and ``max_tokens`` in all.

One imprecision, left alone: vLLM matches stop strings on text, so a delimiter that ends
inside a token (a token "\\n\\n\\n" for the delimiter "\\n\\n") cuts the text there while
the ids keep the whole token; the response text then lacks the token's last characters.

Scores: each step gets the PRM's score of it when it is added (the PRM is causal, see
search.protocols.ProcessRewardModel), and a response's score aggregates its steps'
(``aggregation``): ``last`` (search-and-learn's default), ``min``, ``prod`` or ``mean``.

The last round (``expand(..., to_end=True)``) continues each response to its end: no
delimiter, the rest of max_tokens, as search-and-learn's last iteration "generates to EOS",
so every response a search answers with is complete.

The answer (``choose``): the best aggregated score, or with ``answer_regex`` the
PRM-weighted majority vote of search-and-learn's weighted best-of-N: each response's answer
(extracted as search.majority does, math answers grouped by value as search-and-learn's
``find_answer_with_largest_sum`` groups them by canonical form: search.answer_groups) gets
its score as the weight (search.majority's ``vote_weights``: a bounded PRM's score mapped
to [0, 1], an unbounded one's sigmoid), the answer with the largest sum wins and the reply
is its best-scored response.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from pydantic import Field, ValidationInfo, field_validator

from search.answer_groups import group_answers
from search.context import SearchContext, gather_all
from search.majority import (
    REGEX_TIMEOUT_S,
    MajorityVote,
    tally_votes,
    vote_order,
    vote_weights,
)
from search.regex_check import MAX_REGEX_CHARS, check_answer_regex
from search.select import finish
from search.strategy import SearchStrategy
from search.types import Candidate, Completion, FinishReason, SearchResult

Aggregation = Literal["last", "min", "prod", "mean"]
# Most steps a response may take (search-and-learn's num_iterations is 40): each step is a
# sequential round of engine calls and a PRM call.
MAX_STEPS = 256
MAX_DELIMITER_CHARS = 32


def aggregate(scores: Sequence[float], how: Aggregation) -> float:
    """One response's score from its steps' scores; 0.0 for a response with no step."""
    if not scores:
        return 0.0
    if how == "last":
        return scores[-1]
    if how == "min":
        return min(scores)
    if how == "prod":
        return math.prod(scores)
    return math.fsum(scores) / len(scores)


@dataclass(frozen=True)
class StepPath:
    """One response so far: its generated ids, its steps' texts and their PRM scores."""

    token_ids: tuple[int, ...] = ()
    steps: tuple[str, ...] = ()
    # The engine's per-token logprobs and top alternatives, step by step, when the request
    # asked for them (what the answer's logprobs show).
    logprobs: tuple[float, ...] = ()
    top_logprobs: tuple[dict[int, float], ...] = ()
    # One per step scored so far (a new step is unscored until the search's next PRM call).
    scores: tuple[float, ...] = ()
    # None while the response can still be continued.
    finish_reason: FinishReason | None = None
    # Where it descends from (a root index, a subtree): its lineage in reports.
    lineage: int = 0

    @property
    def text(self) -> str:
        return "".join(self.steps)

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    def extend(
        self, out: Completion, max_tokens: int, delimiter: str, client_stops: Sequence[str]
    ) -> StepPath:
        """This response followed by the step ``out`` (generated with stop strings kept)."""
        text = out.text
        finish: FinishReason | None = None
        if out.finish_reason == "stop":
            reason = out.stop_reason
            if reason is not None and reason in client_stops:
                # The client's stop string ends the response and is not part of it.
                text = text.removesuffix(reason)
                finish = "stop"
            elif reason is None or reason != delimiter:
                finish = "stop"  # the end-of-sequence token
        elif out.finish_reason == "abort":
            finish = "abort"
        token_ids = self.token_ids + out.token_ids
        if finish is None and len(token_ids) >= max_tokens:
            finish = "length"
        return dataclasses.replace(
            self,
            token_ids=token_ids,
            steps=(*self.steps, text),
            logprobs=self.logprobs + (out.logprobs or ()),
            top_logprobs=self.top_logprobs + (out.top_logprobs or ()),
            finish_reason=finish,
        )

    def scored(self, score: float) -> StepPath:
        """With its last step's score (each step is scored once, when it is added)."""
        return dataclasses.replace(self, scores=(*self.scores, score))

    def score(self, how: Aggregation) -> float:
        return aggregate(self.scores, how)

    def completion(self) -> Completion:
        has_logprobs = len(self.logprobs) == len(self.token_ids)
        return Completion(
            token_ids=self.token_ids,
            text=self.text,
            finish_reason=self.finish_reason or "length",
            cumulative_logprob=math.fsum(self.logprobs) if has_logprobs else None,
            logprobs=self.logprobs if has_logprobs else None,
            top_logprobs=(
                self.top_logprobs if len(self.top_logprobs) == len(self.token_ids) else None
            ),
        )


class StepSearch(SearchStrategy):
    """Options shared by the step-level searches (validated like every strategy's)."""

    scores_steps: ClassVar[bool] = True
    step_delimiter: str = Field(
        default="\n\n",
        min_length=1,
        max_length=MAX_DELIMITER_CHARS,
        description="text that ends a step",
    )
    max_step_tokens: int = Field(
        default=64, ge=1, le=4096, strict=True, description="a step is cut after this many"
    )
    max_steps: int = Field(
        default=40, ge=1, le=MAX_STEPS, strict=True, description="rounds of expansion at most"
    )
    aggregation: Aggregation = "last"
    answer_regex: str | None = Field(
        default=None,
        max_length=MAX_REGEX_CHARS,
        description="vote on the answer this pattern's one group captures (weighted majority)",
    )

    @field_validator("answer_regex")
    @classmethod
    def _one_group(cls, value: str | None) -> str | None:
        # The same checks as majority's option (search.regex_check).
        return MajorityVote._one_group(value)

    async def preflight(self) -> None:
        await check_answer_regex(self.answer_regex)

    def step_tokens(self, max_tokens: int) -> int:
        return min(self.max_step_tokens, max_tokens)


def rounds_bound(search: StepSearch, max_tokens: int) -> int:
    """The most rounds a search runs: max_steps, and no more than max_tokens (a live step
    has at least one token, so a response is at max_tokens after that many)."""
    return min(search.max_steps, max_tokens)


def tokens_bound(search: StepSearch, max_tokens: int, per_round: int) -> int:
    """Tokens of ``per_round`` new steps a round: of at most max_step_tokens, but the last
    round's run to the end (``expand(..., to_end=True)``), up to max_tokens."""
    rounds = rounds_bound(search, max_tokens)
    return per_round * ((rounds - 1) * search.step_tokens(max_tokens) + max_tokens)


class WidthSearch(StepSearch):
    """A step search whose N responses are sampled M = ``beam_width`` at a time from each
    of N / M parents (beam_search's kept beams, dvts's subtrees)."""

    beam_width: int = Field(
        default=4,
        ge=1,
        strict=True,
        # Checked against n even when left out: the default 4 does not divide every n.
        validate_default=True,
        description="M: steps sampled per kept beam or subtree",
    )

    @field_validator("beam_width")
    @classmethod
    def _divides_n(cls, width: int, info: ValidationInfo) -> int:
        n = info.data.get("n")
        if n is not None and n % width:
            raise ValueError(f"must divide n ({n}) into groups of beam_width samples")
        return width

    def samples_per_call(self) -> int:
        return self.beam_width


async def expand(
    ctx: SearchContext,
    search: StepSearch,
    parents: Sequence[StepPath],
    counts: Sequence[int],
    *,
    to_end: bool = False,
) -> list[list[StepPath]]:
    """``counts[i]`` sampled next steps of each ``parents[i]``, one engine request per parent,
    all at once (the engine batches them; the prefix cache serves each parent). Parents
    with a count of 0 get no request. ``to_end``: the search's last round, each step runs
    to the response's end (no delimiter, the rest of max_tokens)."""
    max_tokens = ctx.sampling.max_tokens
    client_stops = ctx.sampling.stop
    stops = client_stops if to_end else (*client_stops, search.step_delimiter)
    sampling = dataclasses.replace(ctx.sampling, stop=stops, include_stop=True)
    step_cap = max_tokens if to_end else search.max_step_tokens
    jobs = [
        ctx.generate(
            [*ctx.prompt_ids, *parent.token_ids],
            min(step_cap, max_tokens - parent.num_tokens),
            count,
            sampling=sampling,
        )
        for parent, count in zip(parents, counts, strict=True)
        if count > 0
    ]
    outs = iter(await gather_all(jobs))
    return [
        [
            parent.extend(out, max_tokens, search.step_delimiter, client_stops)
            for out in (next(outs) if count > 0 else [])
        ]
        for parent, count in zip(parents, counts, strict=True)
    ]


async def score_new_steps(
    ctx: SearchContext, paths: Sequence[StepPath], how: Aggregation = "last"
) -> list[StepPath]:
    """``paths`` with their newest step scored, in one PRM call for those that need it.

    Each newly scored response is kept (``ctx.keep_scored``, with its ``how`` aggregate:
    the score the search would choose it by) for the deadline fallback: without them a
    step search cut by its deadline had scored nothing the server could answer with, so
    a search of tiny steps held its slot to the deadline and then answered 504 with
    nothing (finding N2). Finished responses are kept as complete, live ones as partial,
    so a complete one is preferred."""
    todo = [i for i, p in enumerate(paths) if len(p.scores) < len(p.steps)]
    scores = await ctx.score_last_steps(
        [paths[i].steps for i in todo], [paths[i].token_ids for i in todo]
    )
    done = list(paths)
    for i, score in zip(todo, scores, strict=True):
        done[i] = paths[i].scored(score)
    ctx.keep_scored([(done[i].text, done[i].score(how), not done[i].finished) for i in todo])
    return done


def as_candidates(paths: Sequence[StepPath], how: Aggregation) -> list[Candidate]:
    """Each response as a candidate whose reward is its aggregated step score."""
    return [Candidate(p.completion(), p.score(how)) for p in paths]


def step_report(paths: Sequence[StepPath]) -> dict[str, object]:
    """A round's state for ``details``: live and finished counts and the step scores."""
    return {
        "live": sum(not p.finished for p in paths),
        "finished": sum(p.finished for p in paths),
        "scores": [p.scores[-1] if p.scores else None for p in paths],
        "lineage": [p.lineage for p in paths],
    }


async def choose(
    ctx: SearchContext, search: StepSearch, paths: Sequence[StepPath], details: dict[str, Any]
) -> SearchResult:
    """The search's answer among complete responses ``paths``: the best aggregated score
    (ties to the earlier), or with ``answer_regex`` the PRM-weighted majority (module
    docstring); ``details`` gains the votes then."""
    candidates = as_candidates(paths, search.aggregation)
    if search.answer_regex is None:
        return finish(ctx, candidates, details)
    voter = MajorityVote(answer_regex=search.answer_regex)
    budget_s = REGEX_TIMEOUT_S if ctx.limits is None else ctx.limits.regex_seconds
    # A client's pattern runs off the loop (search.majority), which keeps serving meanwhile.
    texts = [c.text for c in candidates]
    answers = await asyncio.to_thread(voter.answers, texts, budget_s)
    bounds = None if ctx.prm is None else ctx.prm.bounds
    weights = vote_weights([c.reward for c in candidates], bounds)
    grouping = await group_answers(answers)
    groups = grouping.names
    tally = tally_votes(groups, weights)
    order = vote_order(groups, tally, [c.reward for c in candidates])
    winner = groups[order[0]] if tally else None
    votes = {
        "votes": tally,
        "answers": answers,
        "groups": groups,
        "weights": weights,
        "winner": winner,
        "grouping": "math" if grouping.complete else "partial",
    }
    return SearchResult(
        ranked=[candidates[i] for i in order],
        candidates=candidates,
        budget=ctx.budget,
        details={**details, **votes},
    )
