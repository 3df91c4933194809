"""Responses built one reasoning step at a time, for the step-level searches (beam_search,
dvts, particle_filtering) and their process reward model (PRM).

A step ends as search-and-learn and its_hub end one (search.step_path): at the delimiter
(``step_delimiter``, default a blank line, as search-and-learn's and Qwen2.5-Math-PRM's
step format), the end-of-sequence token, a client stop string or ``max_tokens``.
``max_step_tokens`` (default 256) is only a safety bound on one engine request: a segment
cut there is no step; it is neither scored nor selected on as one, and the next round
continues it (search.step_path). Each segment is one engine request on prompt ids + the
response's ids so far, so the prefix cache serves everything already computed and no
re-tokenisation moves a token boundary. The request stops at the delimiter or any of the
client's stop strings, and keeps the matched string in its text (vLLM's
``include_stop_str_in_output``), so the steps' texts join into the response exactly. A
client stop string ends the response and is cut off, as in any completion; so does the
end-of-sequence token, and ``max_tokens`` in all.

One imprecision, left alone: vLLM matches stop strings on text, so a delimiter that ends
inside a token (a token "\\n\\n\\n" for the delimiter "\\n\\n") cuts the text there while
the ids keep the whole token; the response text then lacks the token's last characters.

Scores: the PRM scores a response's steps when they close (the PRM is causal, see
search.protocols.ProcessRewardModel), and a response's score aggregates them
(``aggregation``): ``last`` (search-and-learn's default: the newest step's score),
``min``, ``prod``, ``mean`` (every step scored), or ``model`` (reward_hub's, its_hub's
benchmark default: the whole response so far given to the PRM as one step, scored once a
round; the newest counts). A step's inner scores are only asked for when the aggregation
reads them (``min``, ``prod``, ``mean``): ``last`` scores one prefix per response a round.

The last round (``expand(..., to_end=True)``) continues each response to its end: no
delimiter, the rest of max_tokens, as search-and-learn's last iteration "generates to EOS",
so every response a search answers with is complete. Its text is split into its steps
before it is scored (search-and-learn scores ``text.replace("\\n\\n", <sep>)``), so the
PRM never sees a separator inside a step nor several steps as one. A prefix that ends
inside a segment is sent with its ids re-encoded from its text (the judge PRM reads ids).

Every response scored is also kept for the deadline and budget fallback
(search.deadline): finished ones as complete, live ones as partial.

The answer (``choose``): the best aggregated score, or with ``answer_regex`` the
PRM-weighted majority vote of search-and-learn's weighted best-of-N: each response's answer
(extracted as search.majority does, math answers grouped by value as search-and-learn's
``find_answer_with_largest_sum`` groups them by canonical form: search.answer_groups) gets
its score as the weight (search.majority's ``vote_weights``: a bounded PRM's score mapped
to [0, 1], an unbounded one's sigmoid), the answer with the largest sum wins and the reply
is its best-scored response.

Report: each round says why each of its new segments ended (``ends``: ``delimiter``,
``eos``, ``stop``, ``max_tokens``, ``cap`` or ``abort``; None for a response not continued
that round).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from typing import Any, ClassVar

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
from search.step_path import Aggregation, StepPath
from search.strategy import SearchStrategy
from search.types import Candidate, SearchResult

# Most steps a response may take (search-and-learn's num_iterations is 40): each step is a
# sequential round of engine calls and a PRM call.
MAX_STEPS = 256
MAX_DELIMITER_CHARS = 32
# The per-step token cap's default: a safety bound on one engine request, several times a
# normal step (GSM8K's steps run to tens of tokens, MATH's in search-and-learn's format to
# one or two hundred). Not higher: the worst case of N paths x max_steps rounds of capped
# steps must fit the default --max-search-tokens at n 64 and max_tokens 4096.
DEFAULT_MAX_STEP_TOKENS = 256


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
        default=DEFAULT_MAX_STEP_TOKENS,
        ge=1,
        le=4096,
        strict=True,
        description="safety bound: one request of a step stops after this many tokens",
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

    def parallel_samples(self) -> int:
        # Every path starts from the same prompt: greedy decoding would make N copies.
        return self.n

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


def reward_items_bound(search: StepSearch, max_tokens: int, per_round: int) -> int:
    """Prefixes scored for ``per_round`` new segments a round: one each, but an aggregation
    that reads every step scores each step of the last round's run to the end, at most one
    per token."""
    rounds = rounds_bound(search, max_tokens)
    every_step = search.aggregation in ("min", "prod", "mean")
    return per_round * (rounds + (max_tokens - 1 if every_step else 0))


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
    """``counts[i]`` sampled next segments of each ``parents[i]``, one engine request per
    parent, all at once (the engine batches them; the prefix cache serves each parent).
    Parents with a count of 0 get no request. ``to_end``: the search's last round, each
    segment runs to the response's end (no delimiter, the rest of max_tokens)."""
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
    delimiter = search.step_delimiter
    return [
        [
            parent.extend(out, max_tokens, delimiter, client_stops, delimited=not to_end)
            for out in (next(outs) if count > 0 else [])
        ]
        for parent, count in zip(parents, counts, strict=True)
    ]


def prefixes_to_score(path: StepPath, how: Aggregation) -> list[int]:
    """The step counts of ``path``'s prefixes the PRM scores now: none while no step
    closed since its last scoring; the newest closed step for ``last`` and ``model``;
    every newly closed step for the aggregations that read them all."""
    closed = path.closed_steps
    if closed <= path.scored_steps:
        return []
    if how in ("last", "model"):
        return [closed]
    return list(range(path.scored_steps + 1, closed + 1))


async def score_new_steps(
    ctx: SearchContext, paths: Sequence[StepPath], how: Aggregation = "last"
) -> list[StepPath]:
    """``paths`` with their newly closed steps scored (``prefixes_to_score``), in one PRM
    call for all of them. With ``model`` each prefix goes to the PRM as one step.

    Each newly scored response is kept (``ctx.keep_scored``, with its ``how`` aggregate:
    the score the search would choose it by) for the deadline and budget fallback:
    without them a step search cut by its deadline had scored nothing the server could
    answer with (finding N2). Finished responses are kept as complete, live ones as
    partial, so a complete one is preferred."""
    items: list[tuple[int, int]] = []  # (path, prefix step count)
    for i, path in enumerate(paths):
        items += [(i, k) for k in prefixes_to_score(path, how)]
    steps: list[tuple[str, ...]] = []
    ids: list[tuple[int, ...]] = []
    for i, k in items:
        path = paths[i]
        prefix = path.steps[:k]
        steps.append(("".join(prefix),) if how == "model" else prefix)
        whole = k == len(path.steps)
        ids.append(path.token_ids if whole else tuple(ctx.tokenizer.encode("".join(prefix))))
    scores = await ctx.score_last_steps(steps, ids)
    new: dict[int, list[float]] = {}
    for (i, _), score in zip(items, scores, strict=True):
        new.setdefault(i, []).append(score)
    done = list(paths)
    for i, got in new.items():
        done[i] = paths[i].scored(got, paths[i].closed_steps)
    ctx.keep_scored([(done[i].text, done[i].score(how), not done[i].finished) for i in new])
    return done


def as_candidates(paths: Sequence[StepPath], how: Aggregation) -> list[Candidate]:
    """Each response as a candidate whose reward is its aggregated step score."""
    return [Candidate(p.completion(), p.score(how)) for p in paths]


def step_report(
    paths: Sequence[StepPath], extended: Sequence[bool] | None = None
) -> dict[str, object]:
    """A round's state for ``details``: live and finished counts, the newest step scores,
    and why each new segment ended (None for a path ``extended`` says was not continued
    this round)."""
    grown = [True] * len(paths) if extended is None else extended
    return {
        "live": sum(not p.finished for p in paths),
        "finished": sum(p.finished for p in paths),
        "scores": [p.scores[-1] if p.scores else None for p in paths],
        "ends": [p.end if new else None for p, new in zip(paths, grown, strict=True)],
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
