"""Diverse verifier tree search (``dvts``).

Source: Beeching, Tunstall, Rush, "Scaling test-time compute with open models" (Hugging
Face blog, December 2024), implemented in search-and-learn
(``src/sal/search/diverse_verifier_tree_search.py``, ``src/sal/config.py``), which this
follows. It extends the step-level beam search of Snell et al. 2024 (arXiv 2408.03314).

Rule: N = ``n`` split into N / M independent subtrees, M = ``beam_width`` (must divide N).
Every round, each live subtree samples M next steps of its current response (one request
of M), the PRM scores all the new steps in one call, and each subtree keeps only its own
best by aggregated score (ties to the earlier sample): subtrees never compete, so the
final answers stay diverse. A subtree ends when the step it keeps finishes the response
(end-of-sequence, a client stop string, max_tokens). The search ends when every subtree
has, or after ``max_steps`` rounds, the last of which continues every live subtree to its
end. The candidates are, per subtree, its last round's M samples (search-and-learn's N
outputs) that are complete responses; the answer is the best aggregated score or, with
``answer_regex``, the PRM-weighted majority over them (search.steps.choose).

Defaults: ``beam_width`` 4 (search-and-learn's config), the step options of search.steps
(delimiter "\\n\\n", ``max_steps`` 40, aggregation ``last``, ``max_step_tokens`` 256 as a
safety bound only).

Where this differs from search-and-learn, and why:

- Candidates are only the complete ones among a subtree's last M samples. search-and-learn
  returns all M, but a subtree that ends before the last round has siblings that stopped
  at a step delimiter: cut-off responses a server must not answer with. The one a subtree
  keeps is always complete, so every subtree has at least one candidate.
- No look-ahead: search-and-learn's ``lookahead`` (0 by default since its PR #55; with 1,
  each sample is scored after one more greedy step) is not implemented. Its default run
  is this one.
- A subtree is not ended when its text contains "boxed{" (search-and-learn's math-only
  rule): a server's answers need not be boxed; ``answer_regex`` is the way to name one.
- One request of a step stops at ``max_step_tokens`` (256 by default), a safety bound on
  a round's latency; search-and-learn bounds a step only by its max_tokens (2048). A step
  cut there is not a step: it is not scored (the sample keeps its parent's score in its
  subtree's choice) and the next round continues it (``ends``: ``cap``). A step also
  stops at the request's remaining max_tokens.
- No fixed system prompt or chat template: the client's conversation as sent.

Streaming: after each round the common prefix of every live subtree's kept response and
every ended subtree's candidates is committed; subtrees differ from their first step, so
it is usually empty unless N / M is 1.

Report: ``details.rounds``, per round: ``subtrees`` (the live ones, by index), ``scores``
(per live subtree its M new steps' PRM scores), ``ends`` (per live subtree why each of
its M new steps ended: ``delimiter``, ``eos``, ``stop``, ``max_tokens`` or ``cap``),
``kept`` (per live subtree the index of the sample it kept), ``finished`` (subtrees ended so far).

Deadline and budget: every scored sample is kept for the fallback (search.steps), so a
search cut short answers with its best response so far, streamed or not.

Budget: phases ``generate`` and ``score_steps``. Per round at most N / M engine calls
of M samples and one PRM call of at most N prefixes (more in the last round with
``min``/``prod``/``mean``). ``worst_case``: at most
min(max_steps, max_tokens) rounds, the last one's steps up to max_tokens.

Bounds: ``beam_width`` divides N (so at most N); N itself is bounded by the server's
``--max-live-candidates`` (``peak_candidates`` is N, the samples of a round); ``max_steps``
and ``max_step_tokens`` by search.steps.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

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
    tokens_bound,
)
from search.types import SearchResult


def possible_answers(
    kept: Sequence[StepPath], last_round: Sequence[Sequence[StepPath]]
) -> list[str]:
    """Texts every answer still possible extends: a live subtree's kept response, an ended
    subtree's candidates."""
    texts: list[str] = []
    for path, samples in zip(kept, last_round, strict=True):
        texts += [path.text] if not path.finished else [s.text for s in samples if s.finished]
    return texts


class DiverseVerifierTreeSearch(WidthSearch):
    name = "dvts"

    def subtrees(self) -> int:
        return self.n // self.beam_width

    def worst_case(self, max_tokens: int) -> Work:
        rounds = rounds_bound(self, max_tokens)
        return Work(
            tokens=tokens_bound(self, max_tokens, self.n),
            engine_calls=rounds * self.subtrees(),
            reward_items=reward_items_bound(self, max_tokens, self.n),
        )

    async def run(self, ctx: SearchContext) -> SearchResult:
        width = self.beam_width
        kept = [StepPath(lineage=j) for j in range(self.subtrees())]
        # Each subtree's last round of samples: its candidates once it has ended.
        last_round: list[list[StepPath]] = [[] for _ in kept]
        report: list[dict[str, Any]] = []
        for step in range(self.max_steps):
            live = [j for j, path in enumerate(kept) if not path.finished]
            if not live:
                break
            to_end = step == self.max_steps - 1
            with ctx.budget.phase("generate"):
                groups = await expand(
                    ctx, self, [kept[j] for j in live], [width] * len(live), to_end=to_end
                )
            with ctx.budget.phase("score_steps"):
                scored = await score_new_steps(
                    ctx, [c for group in groups for c in group], self.aggregation
                )
            choices: list[int] = []
            scores: list[list[float | None]] = []
            ends: list[list[str | None]] = []
            for k, j in enumerate(live):
                samples = scored[k * width : (k + 1) * width]
                best = top_indices([s.score(self.aggregation) for s in samples], 1)[0]
                kept[j], last_round[j] = samples[best], samples
                choices.append(best)
                scores.append([s.scores[-1] if s.scores else None for s in samples])
                ends.append([s.end for s in samples])
            ended = sum(path.finished for path in kept)
            report.append(
                {
                    "subtrees": live,
                    "scores": scores,
                    "ends": ends,
                    "kept": choices,
                    "finished": ended,
                }
            )
            ctx.commit_common_prefix(possible_answers(kept, last_round))
        candidates = [s for samples in last_round for s in samples if s.finished]
        return await choose(ctx, self, candidates, {"rounds": report})
