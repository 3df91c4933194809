"""Particle filtering over reasoning steps (``particle_filtering``).

Paper: Puri, Sudalairaj, Xu, Xu, Srivastava, "A Probabilistic Inference Approach to
Inference-Time Scaling of LLMs using Particle-Based Monte Carlo Methods" (arXiv
2502.01618). Reference code: the authors' its_hub (``ParticleFiltering`` is particle
Gibbs with one iteration and no reference particle), which this follows.

Rule: N = ``n`` particles. Every round each live particle samples one next step (one
request each) and the PRM scores the new steps in one call. Every particle, finished ones
included, gets the log-weight logit(s) of its aggregated score s (clipped to
[1e-7, 1 - 1e-7]; a PRM with ``bounds`` is mapped to [0, 1] first, one without is taken as
the log-weight itself), and N particles are redrawn with replacement in proportion to
softmax(log-weight / ``resample_temperature``), seeded by the request's seed. Rounds go on
until every particle has finished or for ``max_steps`` rounds, the last continuing every
live particle to its end. The answer is the best aggregated score or, with
``answer_regex``, the PRM-weighted majority (search.steps.choose).

Options: ``resample_temperature`` 1.0 (in [0.01, 100]) and the step options of
search.steps (delimiter "\\n\\n", ``max_steps`` 40, aggregation ``last``).

Deviations from its_hub: ``resample_temperature`` is this server's (1.0 is its_hub's rule);
the last round continues every live particle to its end (its_hub stops an unfinished one
where it is); steps are also cut at ``max_step_tokens``.

Budget: phases ``generate`` and ``score_steps``; per round at most N engine calls of one
sample and one PRM call of at most N steps; at most min(max_steps, max_tokens) rounds.
``details.rounds`` is described in docs/algorithms.md.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Sequence
from typing import Any

from pydantic import Field

from search.budget import Work
from search.context import SearchContext
from search.select import softmax
from search.steps import (
    StepPath,
    StepSearch,
    choose,
    expand,
    rounds_bound,
    score_new_steps,
    step_report,
    tokens_bound,
)
from search.types import SearchResult

# its_hub's clip before the logit, so a score of 0 or 1 has a finite weight.
CLIP = 1e-7


def log_weight(score: float, bounds: tuple[float, float] | None) -> float:
    """logit of the score mapped to [0, 1] (its_hub's _inv_sigmoid), or the raw score of a
    PRM without bounds."""
    if bounds is None:
        return score
    low, high = bounds
    unit = (score - low) / (high - low) if high > low else 0.5
    unit = min(max(unit, CLIP), 1.0 - CLIP)
    return math.log(unit / (1.0 - unit))


def resample(probabilities: Sequence[float], k: int, rng: random.Random) -> list[int]:
    """k indices drawn with replacement in proportion to ``probabilities`` (multinomial)."""
    return rng.choices(range(len(probabilities)), weights=probabilities, k=k)


class ParticleFiltering(StepSearch):
    name = "particle_filtering"

    resample_temperature: float = Field(
        default=1.0,
        ge=0.01,
        le=100.0,
        strict=True,
        allow_inf_nan=False,
        description="log-weights are divided by it before the softmax",
    )

    def samples_per_call(self) -> int:
        return 1

    def worst_case(self, max_tokens: int) -> Work:
        rounds = rounds_bound(self, max_tokens)
        return Work(
            tokens=tokens_bound(self, max_tokens, self.n),
            engine_calls=rounds * self.n,
            reward_items=rounds * self.n,
        )

    def weights(
        self, particles: Sequence[StepPath], bounds: tuple[float, float] | None
    ) -> list[float]:
        """Resampling probabilities: softmax of the log-weights over the temperature."""
        logs = [log_weight(p.score(self.aggregation), bounds) for p in particles]
        return softmax([w / self.resample_temperature for w in logs])

    async def run(self, ctx: SearchContext) -> SearchResult:
        particles = [StepPath(lineage=i) for i in range(self.n)]
        rng = random.Random(ctx.sampling.seed)
        bounds = None if ctx.prm is None else ctx.prm.bounds
        report: list[dict[str, Any]] = []
        for step in range(self.max_steps):
            if all(p.finished for p in particles):
                break
            counts = [0 if p.finished else 1 for p in particles]
            to_end = step == self.max_steps - 1
            with ctx.budget.phase("generate"):
                groups = await expand(ctx, self, particles, counts, to_end=to_end)
            grown = [group[0] if group else p for p, group in zip(particles, groups, strict=True)]
            with ctx.budget.phase("score_steps"):
                grown = await score_new_steps(ctx, grown, self.aggregation)
            probabilities = self.weights(grown, bounds)
            drawn = resample(probabilities, self.n, rng)
            copies = Counter(drawn)
            report.append(
                {
                    **step_report(grown),
                    "weights": probabilities,
                    "resampled": drawn,
                    "counts": [copies[i] for i in range(len(grown))],
                }
            )
            particles = [grown[i] for i in drawn]
            ctx.commit_common_prefix([p.text for p in particles])
        return await choose(ctx, self, particles, {"rounds": report})
