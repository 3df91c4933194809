"""KL-regularised Best-of-N (``rbon_kl``).

Paper: Jinnai, Morimura, Ariu, Abe 2024, "Regularized Best-of-N Sampling with Minimum
Bayes Risk Objective for Language Model Alignment" (arXiv 2404.01054), RBoN with the KL
regulariser. The KL divergence from a one-hot distribution on y to pi_ref is
-log pi_ref(y|x), so the regularised objective of one response is

    R(x, y_i) + beta * log pi_ref(y_i | x)

Rule: sample N complete responses in one engine call, score all of them in one reward
call, answer with the argmax of that objective (ties go to the earlier sample).

log pi_ref (option ``logprob``):

- ``"sum"`` (the paper's rule): log pi_ref(y|x), the completion's ``cumulative_logprob``,
  the sum of the sampled tokens' logprobs. vLLM V1 reports raw model logprobs (before
  temperature and penalties), so this is the reference model's own likelihood at no extra
  forward pass. It grows with length: a larger beta favours shorter responses.
- ``"mean"``: the same sum divided by the token count (per-token mean), which removes
  that length bias and keeps beta's scale independent of max_tokens.

Defaults: ``logprob="mean"``, beta = 0.05 (the measurement below). The old default, beta
0.1 on the sum, let log pi_ref decide alone: sampled answers' summed logprobs differ by
tens of nats, while the judge's rewards lie on [0, 1], so the answer was the likeliest
sample whatever its reward. The paper's beta values do not carry over either: the
authors' code (regularized-bon ``mbr/compute_logprob.py``, copied in srbon) takes one
position's logits, ``logits[0, -response_len, :]``, and scores every response token
against that single distribution, which is not log pi_ref(y|x). alignserve's value is
the true sum of the sampled tokens' logprobs. beta = 0 is BoN.

Measurement (``bench/rbon_defaults.py``, results in ``bench/results/rbon_defaults``): the
embedded SmolLM2-135M as policy and judge, MT-Bench first turns, N = 8, 64 tokens,
temperature 1.0; every beta evaluated offline on the same samples. Chosen on lines 0-19:
the largest grid beta whose answer is at or above the median candidate's reward on at
least 95% of prompts. On lines 20-39 (never used for tuning), mean/0.05 answers at or above
the median on 95% of prompts and differs from argmax-reward on 55% (mean reward 0.589;
BoN 0.597, a random sample 0.552). sum/0.0005 scores the same 95% but answers shorter
(46 tokens against 57 for the average candidate); the old default, sum/0.1, reached the
median on 65% (0.560, 42 tokens). At 64 tokens most samples hit the cap, so the two modes
rank alike here; ``mean`` is the default because its beta does not scale with response
length (a summed-logprob beta tuned at 64 tokens is about 4x too strong at 256). These
betas fit the judge's [0, 1] rewards, whose spread within a prompt is a few hundredths;
a reward model on another scale wants beta rescaled.

Report: ``details.logprob`` the mode, ``details.ref_logprobs`` each candidate's log pi_ref
in that mode, ``details.objective`` each candidate's objective.

Ranking: by the objective, best first; ``Candidate.reward`` stays the raw reward.

Budget: one engine call of N samples (with logprobs), one reward call of N responses.

Bound: beta at most MAX_BETA (1e6), far above any tuned value, so beta x log pi_ref and
the reported objective stay finite (JSON has no infinity: an overflow was a 500).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from search.errors import EngineUnavailable
from search.overlap import sample_and_score
from search.strategy import SearchContext, SearchStrategy, rank_by
from search.types import Candidate, SearchResult

LogprobMode = Literal["sum", "mean"]
# Largest beta of the regularised searches (rbon_kl, rbon_wd, srbon): see "Bound" above.
MAX_BETA = 1e6


def normalise_logprob(total: float, num_tokens: int, mode: LogprobMode | str) -> float:
    """A summed sequence logprob as the mode asks: unchanged, or per token. An empty
    completion has logprob 0 either way (max(.., 1) only avoids dividing by zero)."""
    return total / max(num_tokens, 1) if mode == "mean" else total


def ref_logprob(candidate: Candidate, mode: LogprobMode = "sum") -> float:
    """log pi_ref(y|x) of a candidate, summed or per token; the engine must have been
    asked for logprobs."""
    value = candidate.completion.cumulative_logprob
    if value is None:
        # A missing value is an engine that ignored the logprobs request: a server fault,
        # not something the client can fix, so 503 rather than 400.
        raise EngineUnavailable(
            "the engine returned no logprobs for a completion; "
            "KL-regularised search needs log pi_ref(y|x)"
        )
    return normalise_logprob(value, candidate.completion.num_tokens, mode)


class RegularizedBoNKL(SearchStrategy):
    name = "rbon_kl"
    needs_logprobs = True

    beta: float = Field(
        default=0.05,
        ge=0.0,
        le=MAX_BETA,
        strict=True,
        allow_inf_nan=False,
        description="weight of log pi_ref(y|x) against the reward",
    )
    logprob: LogprobMode = Field(
        default="mean", description="log pi_ref(y|x) summed over tokens or per-token mean"
    )

    async def run(self, ctx: SearchContext) -> SearchResult:
        candidates = await sample_and_score(ctx, self.n)
        logprobs = [ref_logprob(c, self.logprob) for c in candidates]
        objective = [c.reward + self.beta * lp for c, lp in zip(candidates, logprobs, strict=True)]
        return SearchResult(
            ranked=rank_by(candidates, objective),
            candidates=candidates,
            budget=ctx.budget,
            details={"logprob": self.logprob, "ref_logprobs": logprobs, "objective": objective},
        )
