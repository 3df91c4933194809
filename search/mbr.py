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

Defaults: utility = "embedding" (cosine similarity of all-MiniLM-L6-v2 sentence
embeddings); "chrf" is the sentence chrF of y_i against y_j, which is not symmetric.

Report: ``details.utility`` the utility's name, ``details.mbr_scores`` each candidate's
score_i. Every ``Candidate.reward`` is 0.0: no reward was computed, and the server reports
``chosen_reward`` as null when ``reward_calls`` is 0.

Ranking: by score_i, best first, ties by generation order.

Budget: one engine call of N samples, no reward call; the utility matrix is timed in
phase "utility".
"""

from __future__ import annotations

from pydantic import Field

from search.context import SearchContext
from search.rbon_wd import UtilityName, mean_utility
from search.select import rank_by
from search.strategy import SearchStrategy
from search.types import Candidate, SearchResult


class MinimumBayesRisk(SearchStrategy):
    name = "mbr"
    honours_constraints = True

    utility: UtilityName = Field(default="embedding", description="utility between responses")

    async def run(self, ctx: SearchContext) -> SearchResult:
        # Looked up first: a server without this utility fails before spending the engine.
        utility = ctx.utility(self.utility)
        with ctx.budget.phase("generate"):
            completions = await ctx.generate(ctx.prompt_ids, ctx.sampling.max_tokens, self.n)
        candidates = [Candidate(c, 0.0) for c in completions]
        if len(candidates) == 1:
            scores = [0.0]
        else:
            with ctx.budget.phase("utility"):
                matrix = await utility.matrix([c.text for c in candidates])
            scores = mean_utility(matrix, exclude_self=True)
        return SearchResult(
            ranked=rank_by(candidates, scores),
            candidates=candidates,
            budget=ctx.budget,
            details={"utility": self.utility, "mbr_scores": [float(s) for s in scores]},
        )
