"""Particle filtering over reasoning steps (``particle_filtering``).

Paper: Puri, Sudalairaj, Xu, Xu, Srivastava, "A Probabilistic Inference Approach to
Inference-Time Scaling of LLMs using Particle-Based Monte Carlo Methods" (arXiv
2502.01618, "Rollout Roulette"). Reference code: the authors' its_hub
(``its_hub/algorithms/particle_gibbs.py``: ``ParticleFiltering`` is particle Gibbs with
one iteration and no reference particle; its PRM is reward_hub's, with the aggregation
its benchmark script defaults to, ``--rm_agg_method model``), which this follows.

Rule: N = ``n`` particles. Every round each live particle samples one next step (one
request each) and the PRM scores the particles whose step closed, in one call. With the
default ``aggregation`` ``model`` (reward_hub's ``AggregationMethod.MODEL``) the PRM is
given the whole response so far as one step (``steps_list = [response]``) and its score
is the particle's score; a finished particle keeps its final score. Every particle,
finished ones included, gets the log-weight logit(s) of its score s (its_hub's
``_inv_sigmoid``, clipped to [1e-7, 1 - 1e-7]; a PRM with ``bounds`` is mapped to [0, 1]
first, one without is taken as the log-weight itself), and N particles are redrawn with
replacement in proportion to softmax(log-weight / ``resample_temperature``) (its_hub's
``random.choices(particles, weights=softmax(log_weights), k=N)``), seeded by the request's
seed. Copies of a finished particle stay finished. Rounds go on until every particle has
finished or for ``max_steps`` rounds, the last continuing every live particle to its end;
the resampling follows every round, the last included. The candidates are the final N
particles (copies included: a particle drawn twice votes twice); the answer is their
best score (its_hub's ``argmax`` of the final log-weights, ties to the first) or, with
``answer_regex``, the PRM-weighted majority (search.steps.choose).

Options: ``resample_temperature`` 1.0 (in [0.01, 100]) and the step options of
search.steps (delimiter "\\n\\n", ``max_steps`` 40, ``max_step_tokens`` 256 as a safety
bound only), with ``aggregation`` defaulting to ``model`` here (``last``, ``min``,
``prod`` and ``mean`` score the steps one by one, as reward_hub's other methods do).

Where this differs from its_hub, and why:

- ``resample_temperature`` divides the log-weights (an option of this server; 1.0, the
  default, is its_hub's rule).
- A particle ends at the end-of-sequence token, a client stop string or max_tokens, and
  after ``max_steps`` rounds the last round continues every live particle to its end, so
  every candidate is complete. its_hub ends a particle only when a step contains its
  ``stop_token`` (``"\\boxed"`` in its benchmark; not applied here: a server's answers
  need not be boxed) or after ``max_steps`` + 1 steps, where it stands.
- A step ends at the delimiter, kept in the text (its_hub's ``step_token`` "\\n\\n";
  it strips the token and joins the steps with it again, the same text); one request of a
  step also stops at ``max_step_tokens``, a safety bound: a step cut there is not scored
  (the particle keeps its score for that round's resampling, the neutral log-weight 0
  before its first) and goes on next round.
  its_hub allows either a step token or ``tokens_per_step``, never both.
- The draws come from a ``random.Random`` seeded with the request's seed (its_hub uses the
  process-wide ``random``): a seeded search resamples the same way every time.
- Sampling is the client's (its_hub's step generation samples at temperature 0.8), and the
  conversation is the client's (its_hub sends the question alone, no system prompt).

Where this differs from the paper: none in the rule beyond the its_hub points above
(the paper's figure resamples by a softmax of the PRM's rewards; its code, followed here,
takes it over their logits, so the odds r / (1 - r) set the proportions). The paper's
PRM is Qwen2.5-Math-PRM-7B and it introduces the model-based aggregation used by default
here; this server's default PRM is the judge (rewards/judge_prm.py, rating the response
so far on [0, 1]): give ``--prm`` a Qwen PRM for the paper's setting.

Streaming: after each resampling the common prefix of the N particles is committed: every
answer descends from one of them.

Report: ``details.rounds``, per round (before its resampling): ``live``, ``finished``,
``scores`` (each particle's newest score), ``ends`` (why each particle's new step ended:
``delimiter``, ``eos``, ``stop``, ``max_tokens`` or ``cap``; None for a finished particle,
not continued), ``lineage`` (the first particle each descends from), ``weights`` (the
resampling probabilities), ``resampled`` (the particle index each new slot copies) and
``counts`` (copies of each particle).

Deadline and budget: every scored particle is kept for the fallback (search.steps), so a
search cut short answers with its best particle so far, streamed or not.

Budget: phases ``generate`` and ``score_steps``; per round at most N engine calls of one
sample and one PRM call of at most N prefixes (more in the last round with ``min``,
``prod`` or ``mean``); at most min(max_steps, max_tokens) rounds.

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
from search.context import SearchContext
from search.select import softmax
from search.step_path import Aggregation, StepPath
from search.steps import (
    StepSearch,
    choose,
    expand,
    reward_items_bound,
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

    # its_hub's benchmark default (reward_hub's "model"): the response as one step.
    aggregation: Aggregation = "model"

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
            reward_items=reward_items_bound(self, max_tokens, self.n),
        )

    def weights(
        self, particles: Sequence[StepPath], bounds: tuple[float, float] | None
    ) -> list[float]:
        """Resampling probabilities: softmax of the log-weights over the temperature. A
        particle with no score yet (its first step cut at the safety cap, still open) has
        the neutral log-weight 0, where a score of 0 would all but rule it out."""
        logs = [
            log_weight(p.score(self.aggregation), bounds) if p.scores else 0.0 for p in particles
        ]
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
                    **step_report(grown, [c > 0 for c in counts]),
                    "weights": probabilities,
                    "resampled": drawn,
                    "counts": [copies[i] for i in range(len(grown))],
                }
            )
            particles = [grown[i] for i in drawn]
            ctx.commit_common_prefix([p.text for p in particles])
        return await choose(ctx, self, particles, {"rounds": report})
