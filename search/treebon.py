"""TreeBoN: speculative tree search inside Best-of-N (``treebon``).

Paper: Qiu, Lu, Zeng, Guo, Geng, Zhu, Juan, Yang, Wang, Huang, Wu, Wang 2024, "TreeBoN:
Enhancing Inference-Time Alignment with Speculative Tree-Search and Best-of-N Sampling"
(arXiv 2410.16033). The paper publishes no code; this follows its algorithm.

Rule: split max_tokens into ``layers`` near-equal segments. Sample N root segments in one
engine call. At every further layer, score each live partial response, keep the top
N / ``branching`` as parents and sample ``branching`` continuations of the next segment
from each (one engine request per parent on prompt ids + parent ids, so the prefix cache
serves the parent). Responses that finished stay in the pool as they are and keep their
slots, so the live slots shrink by one per finished response; the parents are then the
top ceil(slots / branching) live ones and the last parent gets only the children left.
The pool therefore stays N responses and every layer generates at most N segments:
generated tokens never exceed Best-of-N's N x max_tokens. At the end every response is
scored as complete with the full reward and the answer is the argmax.

Partial scores (``partial_score``):
- ``reward``: the reward model on the partial text (the default without a reference).
- ``dpo``: the paper's weighted implicit DPO reward, sum over the response's tokens k of
  (1/k) * (log pi(y_k | x, y_<k) - log pi_ref(y_k | x, y_<k)), with log pi the policy's
  sampled-token logprobs (raw model logprobs from vLLM) and log pi_ref the reference
  engine's prompt logprobs on the same token ids. Needs ``--reference-model``.
- ``auto`` (default): ``dpo`` when the server has a reference model, else ``reward``.

Defaults: layers = 2 and branching = 2 (two parents at the server's default N=4); N must
be divisible by branching. The paper splits responses into a few equal segments; each
extra layer costs one more sequential partial-scoring pass. Measured on the 2-core CPU
engine (MT-Bench, 64 tokens): 2 layers take 1.21-1.25x Best-of-N's wall time, 4 layers
1.43-1.54x, for the same tokens. Set ``layers`` higher where scoring is cheap (GPU).

Streaming: after each layer's selection the common prefix of the parents and the
finished responses is committed (the answer descends from one of them), so a stream can
send it early; with different roots that prefix is usually empty.

Report: ``details.layers`` lists per layer the segment length, the live and finished
counts, the parents' lineages (root indices) and the partial scores.

Budget: engine calls 1 + one per parent per layer; reward calls one per layer of partial
scores (a reference-model pass counts as one) and one final call of N complete responses.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator

from search.errors import EngineUnavailable, InvalidRequest
from search.partial import Partial, as_candidates, roots, segment_lengths, top_indices
from search.protocols import ReferenceModel
from search.strategy import SearchContext, SearchStrategy, finish, gather_all
from search.types import SearchResult


def implicit_dpo_reward(policy: Sequence[float], reference: Sequence[float]) -> float:
    """sum_k (1/k) * (policy[k-1] - reference[k-1]) over the response's tokens."""
    return math.fsum(
        (p - r) / k for k, (p, r) in enumerate(zip(policy, reference, strict=True), start=1)
    )


def children_per_parent(slots: int, branching: int) -> list[int]:
    """Children of each parent, best parent first: ``branching`` each, the last parent
    only what is left, so the children fill exactly ``slots``."""
    parents = math.ceil(slots / branching)
    return [min(branching, slots - j * branching) for j in range(parents)]


async def reference_logprobs(
    reference: ReferenceModel, prompt_ids: Sequence[int], partial: Partial
) -> list[float]:
    """log pi_ref of each of the partial's tokens, given the prompt and the tokens before."""
    values = await reference.token_logprobs([*prompt_ids, *partial.token_ids])
    tail = values[len(values) - partial.num_tokens :]
    if len(tail) != partial.num_tokens or any(v is None for v in tail):
        raise EngineUnavailable("the reference model returned no logprob for a response token")
    return [float(v) for v in tail if v is not None]


class TreeBoN(SearchStrategy):
    name = "treebon"
    # The DPO partial score reads the sampled tokens' logprobs.
    needs_logprobs = True

    layers: int = Field(default=2, ge=1, strict=True, description="segments per response")
    branching: int = Field(default=2, ge=1, strict=True, description="children per parent")
    partial_score: Literal["auto", "reward", "dpo"] = "auto"

    @field_validator("branching")
    @classmethod
    def _divides_n(cls, branching: int, info: ValidationInfo) -> int:
        n = info.data.get("n")
        if n is not None and n % branching:
            raise ValueError(f"must divide n ({n}) so the parents fill the N slots")
        return branching

    def scorer(self, ctx: SearchContext) -> Literal["reward", "dpo"]:
        if self.partial_score == "dpo" and ctx.reference is None:
            raise InvalidRequest(
                "partial_score 'dpo' needs a reference model; this server has none "
                "(start it with --reference-model)",
                param="search.partial_score",
            )
        if self.partial_score == "auto":
            return "dpo" if ctx.reference is not None else "reward"
        return self.partial_score

    async def partial_scores(
        self, ctx: SearchContext, live: Sequence[Partial], scorer: str
    ) -> list[float]:
        if scorer == "reward":
            return await ctx.score([p.text for p in live], partial=True)
        reference = ctx.reference
        assert reference is not None  # scorer() checked it
        ref = await gather_all([reference_logprobs(reference, ctx.prompt_ids, p) for p in live])
        ctx.budget.count_scoring(len(live))
        return [implicit_dpo_reward(p.logprobs, r) for p, r in zip(live, ref, strict=True)]

    async def run(self, ctx: SearchContext) -> SearchResult:
        max_tokens = ctx.sampling.max_tokens
        if self.layers > max_tokens:
            raise InvalidRequest(
                f"search.layers ({self.layers}) cannot exceed max_tokens ({max_tokens})",
                param="search.layers",
            )
        scorer = self.scorer(ctx)
        lengths = segment_lengths(max_tokens, self.layers)
        with ctx.budget.phase("generate"):
            pool = roots(await ctx.generate(ctx.prompt_ids, lengths[0], self.n), max_tokens)
        report: list[dict[str, Any]] = []
        for length in lengths[1:]:
            live = [p for p in pool if not p.finished]
            if not live:
                break
            done = [p for p in pool if p.finished]
            with ctx.budget.phase("score_partial"):
                scores = await self.partial_scores(ctx, live, scorer)
            counts = children_per_parent(len(live), self.branching)
            parents = [live[i] for i in top_indices(scores, len(counts))]
            # The answer descends from a parent or is a finished response.
            ctx.commit_common_prefix([p.text for p in done + parents])
            with ctx.budget.phase("generate"):
                segments = await gather_all(
                    [
                        ctx.generate([*ctx.prompt_ids, *parent.token_ids], length, count)
                        for parent, count in zip(parents, counts, strict=True)
                    ]
                )
            children = [
                parent.extend(segment, max_tokens)
                for parent, group in zip(parents, segments, strict=True)
                for segment in group
            ]
            report.append(
                {
                    "segment_tokens": length,
                    "live": len(live),
                    "finished": len(done),
                    "parents": [p.root for p in parents],
                    "partial_scores": scores,
                }
            )
            pool = done + children
        with ctx.budget.phase("score"):
            rewards = await ctx.score([p.text for p in pool], partial=False)
        details = {"partial_score": scorer, "layers": report}
        return finish(ctx, as_candidates(pool, rewards), details)
