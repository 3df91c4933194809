"""TreeBoN: speculative tree search inside Best-of-N (``treebon``).

Paper: Qiu et al., "TreeBoN: Enhancing Inference-Time Alignment with Speculative
Tree-Search and Best-of-N Sampling" (Findings of EMNLP 2025; arXiv 2410.16033). The paper
publishes no code; this follows its algorithm.

Rule: split max_tokens into ``layers`` near-equal segments and sample N root segments in
one engine call. At every further layer score each live partial response, keep the top
N / ``branching`` as parents and sample ``branching`` continuations from each (one engine
request per parent on prompt ids + parent ids, served by the prefix cache). Responses that
finished keep their slots, so the pool stays N and generated tokens never exceed
Best-of-N's N x max_tokens. At the end every response is scored as complete and the answer
is the argmax; those scores overlap the last layer's decoding (search.overlap).

Partial scores (``partial_score``): ``dpo`` is the paper's weighted implicit DPO reward,
sum_k (1/k) (log pi_dpo(y_k | x, y_<k) - log pi_ref(y_k | x, y_<k)), from the prompt
logprobs of ``--dpo-model`` and ``--reference-model`` on the same token ids; ``reward`` is
the reward model on the partial text (the paper's weaker RM-TreeBoN ablation); ``auto``
(default) is ``dpo`` when the server has both scorers, else ``reward``. That fallback is
not the paper's method, so it is never silent: the server logs it once at start-up
(``AUTO_WITHOUT_SCORERS``), and the report's ``details.partial_score`` names the score
used, ``details.partial_score_why`` why.

Options: ``layers`` 2, ``branching`` 2 (must divide N), ``partial_score`` auto. The defaults
are CPU-tuned, not the paper's: each extra layer is one more sequential scoring pass.

Budget: engine calls 1 + one per parent per layer; reward calls one per layer of partial
scores (a DPO pass over both scorers counts as one) plus one per group of complete
responses that finished together. ``worst_case``: N x max_tokens tokens, 1 + (layers - 1)
x N / branching engine calls, layers x N scored responses. ``layers`` at most 64 and at
most max_tokens.

Deviations (docs/algorithms.md): DPO's beta is left out (a positive factor ranks alike);
responses that finish early keep their slots and compete in the final argmax.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator

from search.budget import Work
from search.context import SearchContext, gather_all
from search.errors import EngineUnavailable, InvalidRequest
from search.overlap import Request, score_as_finished
from search.partial import Partial, as_candidates, roots, segment_lengths, top_indices
from search.protocols import TokenScorer
from search.select import finish
from search.strategy import SearchStrategy
from search.types import Completion, SearchResult

# Most layers a search may have: see "Bounds" in the module docstring.
MAX_LAYERS = 64
# What ``auto`` does on a server without both DPO scorers: logged once at start-up.
AUTO_WITHOUT_SCORERS = (
    "TreeBoN's partial_score 'auto' scores partial responses with the reward model (the "
    "paper's weaker RM-TreeBoN ablation): this server has no --dpo-model and "
    "--reference-model for the paper's implicit DPO reward"
)
WHY = {
    ("auto", "dpo"): "auto: the server has --dpo-model and --reference-model",
    ("auto", "reward"): (
        "auto: the server has no --dpo-model and --reference-model, so the reward model "
        "scored the partial responses (RM-TreeBoN, the paper's weaker ablation)"
    ),
    ("dpo", "dpo"): "requested",
    ("reward", "reward"): "requested",
}


def implicit_dpo_reward(dpo: Sequence[float], reference: Sequence[float]) -> float:
    """sum_k (1/k) * (dpo[k-1] - reference[k-1]) over the response's tokens."""
    return math.fsum(
        (d - r) / k for k, (d, r) in enumerate(zip(dpo, reference, strict=True), start=1)
    )


def children_per_parent(slots: int, branching: int) -> list[int]:
    """Children of each parent, best parent first: ``branching`` each, the last parent
    only what is left, so the children fill exactly ``slots``."""
    parents = math.ceil(slots / branching)
    return [min(branching, slots - j * branching) for j in range(parents)]


def children_of(
    parents: Sequence[Partial], max_tokens: int
) -> Callable[[int, int, Completion], Partial]:
    """A segment sampled for request r as the child of ``parents[r]``."""
    return lambda r, _, segment: parents[r].extend(segment, max_tokens)


async def response_logprobs(
    scorer: TokenScorer, prompt_ids: Sequence[int], partial: Partial
) -> list[float]:
    """log p of each of the partial's tokens under ``scorer``, given the prompt and the
    tokens before it."""
    values = await scorer.token_logprobs([*prompt_ids, *partial.token_ids])
    tail = values[len(values) - partial.num_tokens :]
    if len(tail) != partial.num_tokens or any(v is None for v in tail):
        raise EngineUnavailable("a DPO scoring model returned no logprob for a response token")
    return [float(v) for v in tail if v is not None]


class TreeBoN(SearchStrategy):
    name = "treebon"
    continues_constraints = True

    layers: int = Field(
        default=2, ge=1, le=MAX_LAYERS, strict=True, description="segments per response"
    )
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
        has_scorers = ctx.dpo is not None and ctx.reference is not None
        if self.partial_score == "dpo" and not has_scorers:
            raise InvalidRequest(
                "partial_score 'dpo' needs a DPO model and its reference model; this server "
                "has not got both (start it with --dpo-model and --reference-model)",
                param="search.partial_score",
            )
        if self.partial_score == "auto":
            return "dpo" if has_scorers else "reward"
        return self.partial_score

    async def partial_scores(
        self, ctx: SearchContext, live: Sequence[Partial], scorer: str
    ) -> list[float]:
        if scorer == "reward":
            return await ctx.score_generated(live, partial=True)
        dpo, reference = ctx.dpo, ctx.reference
        assert dpo is not None and reference is not None  # scorer() checked them
        # Both scorers, every live response, all at once: the requests batch in each engine.
        with ctx.spending(Work(reward_items=len(live))):
            logprobs = await gather_all(
                [response_logprobs(m, ctx.prompt_ids, p) for m in (dpo, reference) for p in live]
            )
            ctx.budget.count_scoring(len(live))
        pairs = zip(logprobs[: len(live)], logprobs[len(live) :], strict=True)
        return [implicit_dpo_reward(d, r) for d, r in pairs]

    def check_layers(self, max_tokens: int) -> None:
        if self.layers > max_tokens:
            raise InvalidRequest(
                f"search.layers ({self.layers}) cannot exceed max_tokens ({max_tokens})",
                param="search.layers",
            )

    def worst_case(self, max_tokens: int) -> Work:
        """N responses of max_tokens; every layer after the first continues N / branching
        parents and scores at most N live responses, then N are scored as complete."""
        self.check_layers(max_tokens)
        parents = math.ceil(self.n / self.branching)
        return Work(
            tokens=self.n * max_tokens,
            engine_calls=1 + (self.layers - 1) * parents,
            reward_items=self.layers * self.n,
        )

    async def run(self, ctx: SearchContext) -> SearchResult:
        max_tokens = ctx.sampling.max_tokens
        self.check_layers(max_tokens)
        scorer = self.scorer(ctx)
        lengths = segment_lengths(max_tokens, self.layers)
        with ctx.budget.phase("generate"):
            pool = roots(await ctx.generate(ctx.prompt_ids, lengths[0], self.n), max_tokens)
        report: list[dict[str, Any]] = []
        rewards: list[float] | None = None  # set when the last layer scored as it finished
        for layer, length in enumerate(lengths[1:], start=2):
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
            requests = [
                Request([*ctx.prompt_ids, *parent.token_ids], length, count)
                for parent, count in zip(parents, counts, strict=True)
            ]
            grow = children_of(parents, max_tokens)
            if layer == len(lengths):
                # Every child of the last layer is complete: each is scored as soon as it
                # finishes, and the responses finished before meanwhile.
                scored, grown = await score_as_finished(ctx, requests, grow, done)
                children = [s.response for group in grown for s in group]
                rewards = [s.reward for s in scored] + [s.reward for g in grown for s in g]
            else:
                with ctx.budget.phase("generate"):
                    segments = await gather_all(
                        [ctx.generate(q.prompt_ids, q.max_tokens, q.n) for q in requests]
                    )
                children = [
                    grow(r, i, segment)
                    for r, group in enumerate(segments)
                    for i, segment in enumerate(group)
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
        if rewards is None:
            with ctx.budget.phase("score"):
                rewards = await ctx.score_generated(pool, partial=False)
        details = {
            "partial_score": scorer,
            "partial_score_why": WHY[self.partial_score, scorer],
            "layers": report,
        }
        return finish(ctx, as_candidates(pool, rewards), details)
