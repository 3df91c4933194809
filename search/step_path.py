"""One response built step by step (``StepPath``), for the step searches (search.steps).

Where a step ends, as search-and-learn and its_hub draw it: at the step delimiter (kept in
the step's text), at the end-of-sequence token, at a client stop string (cut off, as in
any completion) or at the request's ``max_tokens``. The searches' per-step token cap
(``max_step_tokens``) is only a safety bound on one engine request, far above a normal
step: a segment cut there is not a step. It stays open (``open``), is neither scored nor
a step boundary for the PRM, and the next round's segment continues it until one of the
ends above; until then the response keeps the scores of its closed steps.

A segment may hold several steps (the last round runs each response to its end with no
delimiter): it is split after every delimiter, so the PRM always sees the steps as the
references' PRMs do (search-and-learn's ``text.replace("\\n\\n", <sep>)``).

``end`` records why the newest segment ended: ``delimiter``, ``eos``, ``stop`` (a client
stop string), ``max_tokens``, ``cap`` (the safety bound) or ``abort``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from search.types import Completion, FinishReason

# How a response's step scores make its score: search-and-learn's ``last``, ``min`` and
# ``prod``, their ``mean``, and reward_hub's ``model`` (the whole response scored as one
# step, its_hub's benchmark default): one score per scoring, the newest counts.
Aggregation = Literal["last", "min", "prod", "mean", "model"]
StepEnd = Literal["delimiter", "eos", "stop", "max_tokens", "cap", "abort"]


def aggregate(scores: Sequence[float], how: Aggregation) -> float:
    """One response's score from its steps' scores; 0.0 for a response with no step."""
    if not scores:
        return 0.0
    if how in ("last", "model"):
        return scores[-1]
    if how == "min":
        return min(scores)
    if how == "prod":
        return math.prod(scores)
    return math.fsum(scores) / len(scores)


def split_steps(text: str, delimiter: str) -> list[str]:
    """``text`` cut after every ``delimiter`` (kept at the end of its step); the pieces
    join into ``text``, and an empty tail is no step."""
    pieces = [piece + delimiter for piece in text.split(delimiter)]
    pieces[-1] = pieces[-1].removesuffix(delimiter)
    return pieces if pieces[-1] else pieces[:-1]


@dataclass(frozen=True)
class StepPath:
    """One response so far: its generated ids, its steps' texts and their PRM scores."""

    token_ids: tuple[int, ...] = ()
    steps: tuple[str, ...] = ()
    # The engine's per-token logprobs and top alternatives, step by step, when the request
    # asked for them (what the answer's logprobs show).
    logprobs: tuple[float, ...] = ()
    top_logprobs: tuple[dict[int, float], ...] = ()
    # The PRM's scores so far: one per step for min/prod/mean, for last and model one per
    # scoring (only the newest counts); ``scored_steps`` steps are covered by them.
    scores: tuple[float, ...] = ()
    scored_steps: int = 0
    # The last step was cut at the safety cap and goes on in the next segment.
    open: bool = False
    # Why the newest segment ended (None before the first).
    end: StepEnd | None = None
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

    @property
    def closed_steps(self) -> int:
        """Steps that have ended (all but an open one)."""
        return len(self.steps) - self.open

    def extend(
        self,
        out: Completion,
        max_tokens: int,
        delimiter: str,
        client_stops: Sequence[str],
        *,
        delimited: bool = True,
    ) -> StepPath:
        """This response followed by the segment ``out`` (generated with stop strings kept;
        ``delimited``: with the delimiter among them)."""
        text = out.text
        token_ids = self.token_ids + out.token_ids
        end: StepEnd
        finish: FinishReason | None = None
        if out.finish_reason == "stop":
            reason = out.stop_reason
            if reason is not None and reason in client_stops:
                # The client's stop string ends the response and is not part of it.
                text = text.removesuffix(reason)
                end, finish = "stop", "stop"
            elif delimited and (
                reason == delimiter
                # An engine that reports no stop_reason (a remote server other than vLLM):
                # a segment that ends with the delimiter stopped there.
                or (reason is None and text.endswith(delimiter))
            ):
                end = "delimiter"
            else:
                end, finish = "eos", "stop"
        elif out.finish_reason == "abort":
            end, finish = "abort", "abort"
        else:
            end = "max_tokens" if len(token_ids) >= max_tokens else "cap"
        if finish is None and len(token_ids) >= max_tokens:
            finish = "length"
        pieces = split_steps(text, delimiter)
        steps = self.steps
        if self.open and pieces:
            steps, pieces = (*steps[:-1], steps[-1] + pieces[0]), pieces[1:]
        return dataclasses.replace(
            self,
            token_ids=token_ids,
            steps=(*steps, *pieces),
            logprobs=self.logprobs + (out.logprobs or ()),
            top_logprobs=self.top_logprobs + (out.top_logprobs or ()),
            open=(self.open or bool(text)) and end == "cap" and finish is None,
            end=end,
            finish_reason=finish,
        )

    def scored(self, scores: Sequence[float], upto: int) -> StepPath:
        """With the new ``scores``, which cover its first ``upto`` steps."""
        return dataclasses.replace(self, scores=(*self.scores, *scores), scored_steps=upto)

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
