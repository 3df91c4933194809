"""Step-level beam search with a process reward model (``beam_search``).

Paper: Snell, Lee, Xu, Kumar, "Scaling LLM Test-Time Compute Optimally can be More
Effective than Scaling Model Parameters" (arXiv 2408.03314), as implemented by Hugging
Face's search-and-learn (``src/sal/search/beam_search.py``, ``src/sal/config.py``), which
this follows.

Rule: N = ``n`` beams, M = ``beam_width`` (must divide N). Round 0 samples N first steps
(N / M requests of M from the prompt). Every round, the PRM scores each new step (one call
for the round); the beams that finished (end-of-sequence, a client stop string,
max_tokens) are set aside as completed, in order; of the live ones the N / M with the best
aggregated score are kept (ties to the earlier: search-and-learn's
``np.argsort(scores)[-(n // m):]`` leaves them to numpy's default sort, which is not stable;
ties are common with ``min`` and ``prod``, where siblings share their parent's worst step)
and the N slots are shared among them as
search-and-learn's copies are: M each, or, when fewer than N / M are live, N spread over
them round-robin (the earlier ones an extra). A kept beam's copies are sampled together,
at most M per request. The search stops when N beams have completed, when none is live,
or after ``max_steps`` rounds, the last of which continues every live beam to its end, so
every candidate is complete. The candidates are the first N completed; the answer is the
best aggregated score or, with ``answer_regex``, the PRM-weighted majority
(search.steps.choose).

Defaults: ``beam_width`` 4 (search-and-learn's config) and ``filter_duplicates`` true
(search-and-learn's config defaults it to false; its Llama-3.2-1B beam-search recipe sets
it), the step options of search.steps (delimiter "\\n\\n", ``max_steps`` 40,
aggregation ``last``, ``max_step_tokens`` 256 as a safety bound only).

Where this differs from search-and-learn, and why:

- It stops once N beams have completed. search-and-learn runs on while live beams remain
  (refilling the N slots) but then keeps only its first N completed beams
  (``sort_completed`` false by default): the rounds after the N-th would be thrown away.
- One request of a step stops at ``max_step_tokens`` (256 by default), a safety bound on
  a round's latency; search-and-learn bounds a step only by max_tokens. A step cut there
  is not a step: it is not scored, keeps its beam's score for this round's selection,
  and the next round continues it to its delimiter (``ends``: ``cap``). A step here also
  stops at the request's remaining max_tokens (search-and-learn gives each step all of
  max_tokens, so its responses may run past it).
- Copies of a kept beam are sampled as one request of up to M samples (the prefix cache
  serves the beam once) instead of N requests of one sample each: the same samples, a
  different seed layout.
- The copies' samples are then put in search-and-learn's order, ``(kept * repeats)[:n]``
  (b0, b1, b0, b1: ``interleave``), so the completed beams, the ties and the first N
  completed are search-and-learn's.
- search-and-learn's ``lookahead`` (0 by default since its PR #55; before, 1: a greedy
  look-ahead step per beam that its beam search never scores) is not implemented.
- No fixed system prompt or chat template: the client's conversation as sent.

Streaming: after every selection the common prefix of the completed beams and the kept
ones is committed (every possible answer extends one of them).

Report: ``details.rounds``, per round: ``live`` and ``finished`` among the round's new
beams, ``scores`` (their new steps' PRM scores), ``ends`` (why each new step ended:
``delimiter``, ``eos``, ``stop``, ``max_tokens`` or ``cap``), ``lineage`` (which of the
N first beams each descends from), ``kept`` (the indices of the kept ones among them),
``completed`` so far. With ``answer_regex``: ``votes``, ``answers``, ``weights``, ``winner``.

Deadline and budget: every scored beam is kept for the fallback (search.steps), so a
search cut short answers with its best beam so far, streamed or not.

Budget: phases ``generate`` and ``score_steps``. Per round N new steps and one PRM call of
N (more prefixes in the last round with ``min``/``prod``/``mean``); engine calls N / M in
round 0 and at most ``calls_per_round`` later. ``worst_case``: at most min(max_steps,
max_tokens) rounds, the last one's steps up to max_tokens.

Bounds: ``beam_width`` divides N (so at most N); N itself is bounded by the server's
``--max-live-candidates`` (``peak_candidates`` is N); ``max_steps`` and
``max_step_tokens`` by search.steps.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from pydantic import Field

from search.budget import Work
from search.context import SearchContext
from search.partial import top_indices
from search.step_path import StepPath
from search.steps import (
    WidthSearch,
    choose,
    expand,
    reward_items_bound,
    rounds_bound,
    score_new_steps,
    step_report,
    tokens_bound,
)
from search.types import SearchResult


def copies_per_beam(slots: int, beams: int) -> list[int]:
    """search-and-learn's refill, ``(kept * repeats)[:slots]``: ``slots`` copies spread over
    ``beams`` round-robin, the earlier beams one more when it does not divide."""
    base, extra = divmod(slots, beams)
    return [base + (j < extra) for j in range(beams)]


def requests(
    parents: Sequence[StepPath], copies: Sequence[int], per_call: int
) -> tuple[list[StepPath], list[int]]:
    """Each parent's copies as requests of at most ``per_call`` samples (parents repeated)."""
    out_parents: list[StepPath] = []
    out_counts: list[int] = []
    for parent, count in zip(parents, copies, strict=True):
        while count > 0:
            out_parents.append(parent)
            out_counts.append(min(count, per_call))
            count -= per_call
    return out_parents, out_counts


def interleave(groups: Sequence[Sequence[StepPath]]) -> list[StepPath]:
    """Each kept beam's samples (``groups[j]``, in order) in search-and-learn's order of
    its copies, ``(kept * repeats)[:n]``: every beam's first sample, then every beam's
    second, and so on."""
    rounds = max((len(g) for g in groups), default=0)
    return [g[c] for c in range(rounds) for g in groups if c < len(g)]


def calls_per_round(n: int, width: int) -> int:
    """The most engine requests of a round after the first: N / M kept beams of M copies
    are N / M requests; k < N / M kept ones of about N / k copies take at most
    N / M + k - 1 <= 2 N / M - 2; never more than N (one sample each)."""
    groups = n // width
    return max(groups, min(n, 2 * groups - 2))


class BeamSearch(WidthSearch):
    name = "beam_search"

    filter_duplicates: bool = Field(
        default=True, strict=True, description="keep one of live beams with the same text"
    )

    def worst_case(self, max_tokens: int) -> Work:
        rounds = rounds_bound(self, max_tokens)
        first = self.n // self.beam_width
        return Work(
            tokens=tokens_bound(self, max_tokens, self.n),
            engine_calls=first + (rounds - 1) * calls_per_round(self.n, self.beam_width),
            reward_items=reward_items_bound(self, max_tokens, self.n),
        )

    def select(self, live: Sequence[StepPath]) -> list[int]:
        """Indices of the kept live beams, in their order (search-and-learn prunes the rest
        in place): the N / M best aggregated scores, duplicates of a text dropped first."""
        candidates = list(range(len(live)))
        if self.filter_duplicates:
            first_of: dict[str, int] = {}
            for i, path in enumerate(live):
                first_of.setdefault(path.text, i)
            candidates = list(first_of.values())
        scores = [live[i].score(self.aggregation) for i in candidates]
        best = top_indices(scores, self.n // self.beam_width)
        return sorted(candidates[i] for i in best)

    async def run(self, ctx: SearchContext) -> SearchResult:
        width = self.beam_width
        root = StepPath()
        parents, counts = [root] * (self.n // width), [width] * (self.n // width)
        owners = [0] * len(parents)  # which kept beam each request samples
        completed: list[StepPath] = []
        report: list[dict[str, Any]] = []
        for step in range(self.max_steps):
            to_end = step == self.max_steps - 1
            with ctx.budget.phase("generate"):
                groups = await expand(ctx, self, parents, counts, to_end=to_end)
            per_beam: list[list[StepPath]] = [[] for _ in range(max(owners) + 1)]
            for owner, group in zip(owners, groups, strict=True):
                per_beam[owner] += group
            children = interleave(per_beam)  # search-and-learn's order of the copies
            if step == 0:  # lineage: which of the N first beams each one descends from
                children = [dataclasses.replace(c, lineage=i) for i, c in enumerate(children)]
            with ctx.budget.phase("score_steps"):
                children = await score_new_steps(ctx, children, self.aggregation)
            completed += [c for c in children if c.finished]
            live_at = [i for i, c in enumerate(children) if not c.finished]
            live = [children[i] for i in live_at]
            kept = self.select(live) if len(completed) < self.n else []
            report.append(
                {
                    **step_report(children),
                    "kept": [live_at[i] for i in kept],
                    "completed": len(completed),
                }
            )
            if not kept:
                break
            beams = [live[i] for i in kept]
            ctx.commit_common_prefix([p.text for p in completed + beams])
            copies = copies_per_beam(self.n, len(beams))
            parents, counts = requests(beams, copies, width)
            owners = [j for j, c in enumerate(copies) for _ in range(-(-c // width))]
        return await choose(ctx, self, completed[: self.n], {"rounds": report})
