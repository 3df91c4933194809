"""Minimum-Bayes-risk decoding (``mbr``): the candidates vote for each other.

Papers: Eikema and Aziz 2020, "Is MAP Decoding All You Need? The Inadequacy of the Mode in
Neural Machine Translation" (sampling-based MBR); the ``mbrs`` library of Deguchi,
Sakai, Kamigaito and Watanabe 2024 (arXiv 2408.04167), whose pseudo-references are the
hypotheses themselves, as here.

Rule: sample N complete responses in one engine call; each is a hypothesis and the others
are pseudo-references drawn from the model, so a response's expected utility is

    score_i = (1/(N-1)) sum_{j != i} U(y_i, y_j)

and the answer is the argmax (ties go to the earlier sample): the response most similar
to what the model would otherwise have said. The self-term is left out because it is a
constant that says nothing about agreement. With N = 1 the lone sample is the answer and
the utility is never computed. No reward model: the choice is the model's own consensus.

That is the Monte Carlo estimate of the expected utility (``weights="uniform"``). The
model-based estimate (``weights="logprob"``; Jinnai, Morimura, Honda, Ariu and Abe 2023,
"Model-Based Minimum Bayes Risk Decoding", arXiv 2311.05263, MBMBR) weighs each distinct
sample by the model's probability of it instead of by how often it was drawn:

    score_i = sum_{y in Y} P(y) U(y_i, y),   P(y) = p(y|x) / sum_{y' in Y} p(y'|x)

over the set Y of distinct samples (a response drawn twice counts once: its probability
already says how likely it is), self included: y_i is one of the outcomes the expectation
is over, with its own probability. p(y|x) is exp of the sample's summed token logprobs,
which vLLM reports from the model's raw distribution (before temperature and ε), the
paper's p_model. Differences from the authors' code (CyberAgentAILab/model-based-mbr,
``compute_mbr(matrix, weights=probability)``): it sums over every sample, duplicates
included, with unnormalised probabilities taken after the sampler's truncation (transformers'
processed scores); the paper's estimator, followed here, is over the distinct samples. Its
length-normalised variant (MBMBR_L) is not offered.

Defaults: utility = "embedding" (cosine similarity of all-MiniLM-L6-v2 sentence
embeddings; responses are read up to 256 word pieces, rewards.utility); "chrf" is the
sentence chrF of y_i against y_j, which is not symmetric. weights = "uniform".

Report: ``details.utility`` the utility's name, ``details.weights`` the estimate,
``details.mbr_scores`` each candidate's score_i, and with ``weights="logprob"``
``details.probabilities`` each candidate's P(y) (0 for a repeat of an earlier sample).
Every ``Candidate.reward`` is 0.0: no reward was computed, and the server reports
``chosen_reward`` as null when ``reward_calls`` is 0.

Ranking: by score_i, best first, ties by generation order.

Budget: one engine call of N samples, no reward call; the utility matrix is timed in
phase "utility".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import Field

from search.context import SearchContext
from search.rbon_kl import ref_logprob
from search.rbon_wd import UtilityName, mean_utility
from search.select import rank_by
from search.strategy import SearchStrategy
from search.types import Candidate, SearchResult

Weights = Literal["uniform", "logprob"]


def distinct_probabilities(candidates: Sequence[Candidate]) -> list[float]:
    """P(y) of each candidate over the distinct samples (same token ids and text), from
    the summed logprobs; 0.0 for a repeat of an earlier sample."""
    first: dict[tuple[tuple[int, ...], str], int] = {}
    for i, c in enumerate(candidates):
        first.setdefault((c.completion.token_ids, c.text), i)
    logprobs = {i: ref_logprob(candidates[i]) for i in first.values()}
    top = max(logprobs.values())
    # Shifted by the largest before exp: summed logprobs of long responses underflow.
    mass = {i: math.exp(lp - top) for i, lp in logprobs.items()}
    total = sum(mass.values())
    return [mass[i] / total if i in mass else 0.0 for i in range(len(candidates))]


def model_based_utility(
    matrix: Sequence[Sequence[float]], probabilities: Sequence[float]
) -> list[float]:
    """score_i = sum_j P_j U[i][j] (module docstring)."""
    return [sum(p * u for p, u in zip(probabilities, row, strict=True)) for row in matrix]


class MinimumBayesRisk(SearchStrategy):
    name = "mbr"
    honours_constraints = True

    utility: UtilityName = Field(default="embedding", description="utility between responses")
    weights: Weights = Field(
        default="uniform",
        description="expected utility over the samples as drawn (uniform) or weighted by "
        "the model's probability of each distinct sample (logprob)",
    )

    def wants_logprobs(self) -> bool:
        return self.weights == "logprob"

    async def run(self, ctx: SearchContext) -> SearchResult:
        # Looked up first: a server without this utility fails before spending the engine.
        utility = ctx.utility(self.utility)
        with ctx.budget.phase("generate"):
            completions = await ctx.generate(ctx.prompt_ids, ctx.sampling.max_tokens, self.n)
        candidates = [Candidate(c, 0.0) for c in completions]
        details: dict[str, Any] = {"utility": self.utility, "weights": self.weights}
        probabilities = None
        if self.weights == "logprob":
            probabilities = distinct_probabilities(candidates)
            details["probabilities"] = probabilities
        if len(candidates) == 1:
            scores = [0.0]
        else:
            with ctx.budget.phase("utility"):
                matrix = await utility.matrix([c.text for c in candidates])
            if probabilities is None:
                scores = mean_utility(matrix, exclude_self=True)
            else:
                scores = model_based_utility(matrix, probabilities)
        details["mbr_scores"] = [float(s) for s in scores]
        return SearchResult(
            ranked=rank_by(candidates, scores),
            candidates=candidates,
            budget=ctx.budget,
            details=details,
        )
