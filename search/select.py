"""Selection as pure functions: ranking candidates by reward or any objective, softmax
weights, and the SearchResult a finished search answers with."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from search.context import SearchContext
from search.types import Candidate, SearchResult


def softmax(scores: Sequence[float]) -> list[float]:
    """p(i) ∝ exp(scores[i]), computed stably in log space. Scores of +inf (a product that
    overflowed) share all the mass, as very large finite ones would."""
    top = max(scores)
    if top == math.inf:
        infinite = [s == math.inf for s in scores]
        return [1.0 / sum(infinite) if is_inf else 0.0 for is_inf in infinite]
    if top == -math.inf:
        # Every candidate impossible (e.g. under pi_ref): nothing to prefer, so uniform.
        return [1.0 / len(scores)] * len(scores)
    log_norm = top + math.log(sum(math.exp(s - top) for s in scores))
    return [math.exp(s - log_norm) for s in scores]


def rank_by(candidates: Sequence[Candidate], objective: Sequence[float]) -> list[Candidate]:
    """Candidates by objective, best first; ties keep generation order."""
    order = sorted(range(len(candidates)), key=lambda i: (-objective[i], i))
    return [candidates[i] for i in order]


def rank_candidates(candidates: Sequence[Candidate]) -> list[Candidate]:
    """Best first; ties keep generation order, so the choice is deterministic."""
    return rank_by(candidates, [c.reward for c in candidates])


def top_distinct(ranked: Sequence[Candidate], k: int) -> list[Candidate]:
    """The k best candidates with distinct texts; repeats fill in only if too few are distinct,
    and when a search ranks fewer than k (speculative rejection ranks only the responses it
    finished) the best ones are repeated, so a client always gets the n choices it asked for."""
    distinct: list[Candidate] = []
    repeats: list[Candidate] = []
    seen: set[str] = set()
    for cand in ranked:
        (repeats if cand.text in seen else distinct).append(cand)
        seen.add(cand.text)
    pool = distinct + repeats
    return [pool[i % len(pool)] for i in range(k)] if pool else []


def finish(
    ctx: SearchContext, candidates: list[Candidate], details: dict[str, Any] | None = None
) -> SearchResult:
    """The argmax of the rewards (ties to the earlier candidate) as the answer."""
    return SearchResult(
        ranked=rank_candidates(candidates),
        candidates=candidates,
        budget=ctx.budget,
        details=details or {},
    )
