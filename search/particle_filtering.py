"""Particle filtering over reasoning steps (``particle_filtering``).

Paper: Puri, Sudalairaj, Xu, Xu, Srivastava, "A Probabilistic Inference Approach to
Inference-Time Scaling of LLMs using Particle-Based Monte Carlo Methods" (arXiv
2502.01618, "Rollout Roulette"). Reference code: the authors' its_hub
(``its_hub/algorithms/particle_gibbs.py``: ``ParticleFiltering`` is particle Gibbs with
one iteration and no reference particle), which this follows.

Rule: N = ``n`` particles (partial responses). Every round, each live particle samples
one next step (one request each) and the PRM scores the new steps in one call. Every
particle, finished ones included, then gets the log-weight logit(s) of its aggregated
score s (its_hub's ``_inv_sigmoid`` of the PRM's aggregated score, clipped to
[1e-7, 1 - 1e-7]; a finished particle keeps its final score), and N particles are drawn
with replacement in proportion to softmax(log-weight / ``resample_temperature``)
(multinomial resampling, its_hub's ``random.choices``): copies of a finished particle stay
finished, so finished particles multiply or vanish like live ones. The rounds go on until
every particle has finished or for ``max_steps`` rounds, the last of which continues every
live particle to its end; the resampling follows every round, the last included. The
candidates are the final N particles (copies included); the answer is the best aggregated
score (its_hub's default ``argmax`` of the log-weights, the same order) or, with
``answer_regex``, the PRM-weighted majority over them (search.steps.choose), where a
particle drawn twice votes twice.

Scores on other scales: a PRM that declares ``bounds`` [lo, hi] has its aggregated score
mapped to (s - lo) / (hi - lo) before the logit; one without bounds (raw logits) is taken
as the log-weight itself.

Seeding: the draws come from a ``random.Random`` seeded with the request's seed, so a seeded
search resamples, as it samples, the same way every time; unseeded, from the system's
entropy.

Defaults: ``resample_temperature`` 1.0 (its_hub has no temperature: 1.0), the step options
of search.steps (delimiter "\\n\\n", ``max_steps`` 40, aggregation ``last``: its_hub's
benchmark default "model" aggregation, the PRM's score of the last step given all before
it).

Where this differs from its_hub, and why:

- ``resample_temperature`` divides the log-weights (an option of this server, 1.0 is
  its_hub's rule): below 1 the resampling is greedier, above 1 it keeps more diversity.
- After ``max_steps`` rounds its_hub stops a particle where it is (an unfinished response);
  here, as in search-and-learn, the last round continues every live particle to its end,
  so every candidate is complete.
- Steps are cut at ``max_step_tokens`` too (its_hub cuts at the delimiter or at its
  ``tokens_per_step``, one or the other).

Streaming: after each resampling the common prefix of the N particles is committed: every
answer descends from one of them.

Report: ``details.rounds``, per round (before its resampling): ``live``, ``finished``,
``scores`` (each particle's newest step score), ``lineage`` (the first particle each
descends from), ``weights`` (the resampling probabilities), ``resampled`` (the particle
index each new slot copies) and ``counts`` (copies of each particle).

Budget: phases ``generate`` and ``score_steps``. Per round at most N engine calls of one
sample and one PRM call of at most N steps. ``worst_case``: at most
min(max_steps, max_tokens) rounds, the last one's steps up to max_tokens.

Bounds: N by the server's ``--max-live-candidates`` (``peak_candidates`` is N);
``resample_temperature`` in [0.01, 100] (it multiplies no work; the bounds keep the
weights finite); ``max_steps`` and ``max_step_tokens`` by search.steps.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Sequence
from typing import Any

from pydantic import Field

from search.budget import Work
from search.protocols import reward_bounds
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
from search.strategy import SearchContext, softmax
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
        bounds = reward_bounds(ctx.prm)
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
                grown = await score_new_steps(ctx, grown)
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
