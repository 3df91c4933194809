"""Responses built segment by segment, for the searches that score prefixes.

A ``Partial`` is the token ids generated so far for one response. Continuing it is a new
engine request on prompt ids + its ids, so the engine's prefix cache serves everything
already computed and no re-tokenisation can move a token boundary. Its text is the
concatenation of the segments' texts as the engine decoded them (the engine decodes a
continuation with the preceding ids as context, and a stop string is already cut off).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from search.types import Candidate, Completion, FinishReason


@dataclass(frozen=True)
class Partial:
    token_ids: tuple[int, ...] = ()
    text: str = ""
    # The engine's, segment by segment: each token's logprob and, when the request asked
    # for them, its top alternatives (what the answer's logprobs show).
    logprobs: tuple[float, ...] = ()
    top_logprobs: tuple[dict[int, float], ...] = ()
    # None while the response can still be continued.
    finish_reason: FinishReason | None = None
    # Which root (first segment) this response descends from: its lineage in reports.
    root: int = 0

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    def extend(self, segment: Completion, max_tokens: int) -> Partial:
        """This response followed by ``segment``; finished when the engine stopped it or
        the response reached the request's ``max_tokens``."""
        token_ids = self.token_ids + segment.token_ids
        finish: FinishReason | None = None
        if segment.finish_reason != "length":
            finish = segment.finish_reason
        elif len(token_ids) >= max_tokens:
            finish = "length"
        return Partial(
            token_ids=token_ids,
            text=self.text + segment.text,
            logprobs=self.logprobs + (segment.logprobs or ()),
            top_logprobs=self.top_logprobs + (segment.top_logprobs or ()),
            finish_reason=finish,
            root=self.root,
        )

    def completion(self) -> Completion:
        """The response as one completion (a live one counts as cut at ``length``)."""
        has_logprobs = len(self.logprobs) == len(self.token_ids)
        has_top = len(self.top_logprobs) == len(self.token_ids)
        return Completion(
            token_ids=self.token_ids,
            text=self.text,
            finish_reason=self.finish_reason or "length",
            cumulative_logprob=math.fsum(self.logprobs) if has_logprobs else None,
            logprobs=self.logprobs if has_logprobs else None,
            top_logprobs=self.top_logprobs if has_top else None,
        )


def root(index: int, completion: Completion, max_tokens: int) -> Partial:
    """A first segment: the start of lineage ``index``."""
    return Partial(root=index).extend(completion, max_tokens)


def roots(completions: Sequence[Completion], max_tokens: int) -> list[Partial]:
    """First segments, one lineage each."""
    return [root(i, c, max_tokens) for i, c in enumerate(completions)]


def as_candidates(partials: Sequence[Partial], rewards: Sequence[float]) -> list[Candidate]:
    return [Candidate(p.completion(), r) for p, r in zip(partials, rewards, strict=True)]


def top_indices(scores: Sequence[float], k: int) -> list[int]:
    """Indices of the k highest scores, best first; ties keep the earlier index."""
    return sorted(range(len(scores)), key=lambda i: (-scores[i], i))[:k]


def segment_lengths(max_tokens: int, parts: int) -> list[int]:
    """max_tokens split into ``parts`` near-equal segments (the first ones a token longer),
    so a response of all segments is never longer than max_tokens."""
    base, extra = divmod(max_tokens, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]
