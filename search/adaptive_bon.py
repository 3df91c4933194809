"""Adaptive Best-of-N (``adaptive_bon``): spend samples only while the reward tail says
more can pay.

Attribution: inspired by the tail-extrapolation idea of TEA / Prefix-TEA (Li, Qian, Mou
2026, arXiv 2605.10716), which are training-time estimators of the best-of-N policy
gradient; this test-time stopping rule and its estimators (``search.tail``) are
alignserve's own, not TEA's (no moment-cancellation debiasing).

Rule: sample ``round_size`` responses (one engine call) and score them (one reward call);
after each round fit a model of the reward distribution to all rewards so far
(``estimator``: ``normal`` or ``gpd``, see ``search.tail``) and predict the expected
gain of the next round over the best reward seen, E[max(best, max of r new)] - best.
Stop when that gain is below ``min_gain``, or when ``n`` responses (the budget, N_max)
have been drawn. The answer is the argmax over everything drawn, as in Best-of-N.

The first round is at least the estimator's minimum sample (2 for normal, 4 for gpd).

Defaults: round_size 4, min_gain 0.01 (reward units: 1% of the judge's [0, 1] range),
estimator normal. ``estimator: "max"`` (the naive max-of-m, which predicts no gain and so
stops after the first round) is offered because it predicts best-of-N best in the tail
check (docs/benchmarks); it is round_size-sample Best-of-N. Predictions are clipped to the reward
model's known range when it has one (``bounds``: the judge's [0, 1]).

``normal`` is the default because it erred less than ``gpd`` in the tail check
(docs/benchmarks); ``gpd`` is the choice for rewards with a hard bound and enough
samples to see it.

``n`` is N_max (like every algorithm's n, the server's ``--default-n`` when the request
gives none; ask for 16 or more to leave room to adapt).

``details``: per round the samples so far, the best reward, the fitted parameters, the
predicted gain of the next round and the predicted best-of-N_max; ``stopped`` says why
(``gain_below_min`` or ``budget_spent``).

Budget: one engine call and one reward call per round; at most N_max responses, so at
most N_max x max_tokens tokens and 1 + ceil((N_max - first round) / round_size) rounds
(``worst_case``). No option multiplies work beyond n: a round is never larger than the
responses left.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import Field

from search.budget import Work
from search.context import SearchContext
from search.overlap import sample_and_score
from search.select import finish
from search.strategy import SearchStrategy
from search.tail import MIN_SAMPLES, EstimatorName, fit
from search.types import Candidate, SearchResult


class AdaptiveBoN(SearchStrategy):
    name = "adaptive_bon"
    honours_constraints = True

    round_size: int = Field(default=4, ge=1, strict=True)
    min_gain: float = Field(default=0.01, ge=0)
    estimator: EstimatorName = "normal"

    def first_round(self) -> int:
        return max(self.round_size, MIN_SAMPLES[self.estimator])

    def samples_per_call(self) -> int:
        return min(self.n, max(self.first_round(), self.round_size))

    def worst_case(self, max_tokens: int) -> Work:
        first = min(self.n, self.first_round())
        rounds = 1 + math.ceil((self.n - first) / self.round_size)
        return Work(tokens=self.n * max_tokens, engine_calls=rounds, reward_items=self.n)

    async def run(self, ctx: SearchContext) -> SearchResult:
        candidates: list[Candidate] = []
        rounds: list[dict[str, Any]] = []
        stopped = "budget_spent"
        first = self.first_round()
        bounds = ctx.reward.bounds
        while len(candidates) < self.n:
            size = min(first if not candidates else self.round_size, self.n - len(candidates))
            candidates += await sample_and_score(ctx, size)
            rewards = [c.reward for c in candidates]
            best = max(rewards)
            report: dict[str, Any] = {"samples": len(candidates), "best": best}
            rounds.append(report)
            left = self.n - len(candidates)
            if left == 0 or len(candidates) < MIN_SAMPLES[self.estimator]:
                continue
            with ctx.budget.phase("estimate"):
                tail = fit(rewards, self.estimator, bounds)
                gain = tail.expected_gain(best, min(self.round_size, left))
                report.update(
                    params=tail.params,
                    expected_gain_next_round=gain,
                    expected_best_of_n=tail.expected_best_of(self.n),
                )
            if gain < self.min_gain:
                stopped = "gain_below_min"
                break
        details = {"rounds": rounds, "stopped": stopped, "estimator": self.estimator}
        return finish(ctx, candidates, details)
