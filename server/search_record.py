"""One finished search as a training record (``--record``; read back by
``alignserve export``), and the candidate facts the answers share with it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rewards.choice import RequestReward
from search.types import Candidate, SearchResult

if TYPE_CHECKING:
    from server.search_service import Prepared


def search_record(prepared: Prepared, result: SearchResult) -> dict[str, Any]:
    """One search as training data (see server.recording and ``alignserve export``)."""
    budget = result.budget
    reward = prepared.context.reward
    return {
        "id": prepared.completion_id,
        "created": prepared.created,
        "model": prepared.model,
        "algorithm": prepared.algorithm,
        "options": prepared.strategy.model_dump(),
        # The request's reward choice ({name: weight}); null: the server's default reward.
        "reward": reward.weights if isinstance(reward, RequestReward) else None,
        # What the judge was told to prefer, when the request said (provenance, M7/M8).
        "rubric": request_rubric(reward),
        "conversation": [dict(m) for m in prepared.context.conversation],
        "candidates": [
            {
                "text": c.text,
                "token_ids": list(c.completion.token_ids),
                "logprobs": None if c.completion.logprobs is None else list(c.completion.logprobs),
                "reward": c.reward,
                "finish_reason": finish_reason(c),
            }
            for c in result.candidates
        ],
        "chosen_index": index_of(result.candidates, result.best),
        # False when no reward model was called (mbr, plain majority): rewards are 0 then.
        "rewarded": budget.reward_calls > 0,
        "deadline_hit": bool(result.details.get("deadline_hit")),
        "generated_tokens": budget.generated_tokens,
    }


def finish_reason(candidate: Candidate) -> str:
    return "length" if candidate.completion.finish_reason == "length" else "stop"


def index_of(candidates: Sequence[Candidate], target: Candidate) -> int:
    return next(i for i, c in enumerate(candidates) if c is target)


def request_rubric(reward: object) -> str | None:
    """The rubric the request gave its judge components, if any."""
    if not isinstance(reward, RequestReward):
        return None
    return next((c.rubric for c in reward.components if c.rubric is not None), None)
