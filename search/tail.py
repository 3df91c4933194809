"""Reward-tail extrapolation: from the m rewards seen so far, what would more samples buy?

The idea: the statistics of Best-of-N depend only on the upper tail of the reward
distribution, so a model of that tail fitted to m << N samples predicts them. It is
inspired by the tail-extrapolation view of TEA / Prefix-TEA (Li, Qian, Mou 2026, arXiv
2605.10716), but those are training-time estimators of the best-of-N policy gradient
with moment-cancellation debiasing; nothing here is TEA's estimator. Every estimator
here is a fitted quantile function Q(p), and

    E[max of N draws]              = integral_0^1 Q(t^(1/N)) dt           (t = F(X_max))
    E[max(b, max of r new draws)]  = integral_0^1 max(b, Q(t^(1/r))) dt

(the second minus b is the expected gain of r more samples over a current best b). Both
integrals use the midpoint rule on GRID points, which never evaluates Q at 1 (where an
unbounded tail is infinite but integrable).

Estimators (``estimator`` option):

- ``normal``: rewards ~ Normal(mean, sd), sd with Bessel's correction. The classic
  order-statistics model; it has no upper bound, so it keeps promising a little gain.
- ``gpd`` (peaks over threshold, extreme value theory): below the threshold u the
  empirical distribution; above it a generalized Pareto distribution fitted to the
  exceedances, the values strictly above u = the (k+1)-th largest reward with
  k = max(3, ceil(m/2)), by probability-weighted moments (Hosking & Wallis 1987, robust
  with a handful of points). Rewards tied with u are not exceedances: a coarse judge
  repeats values, and zero excesses would push the fitted shape to a heavy tail
  ([0.5, 0.5, 0.5, 0.625] once gave xi = 0.5 and a predicted gain three times the
  normal model's). With fewer than two exceedances there is no tail to fit and the
  empirical distribution stands alone (no gain above the best). Its shape xi < 0 finds
  a bounded tail, as a judge's [0, 1] reward has, and then the predicted gain vanishes
  near the bound. xi is clipped to [-1, 0.5] (below -1 the fit is degenerate; above 0.5
  the mean-excess is too noisy to trust with few points).
- ``max``: the naive prediction that more samples cannot help: E[best of N] is the best
  seen, the gain of another round is 0. In the tail check it predicts best-of-16 with the
  lowest error of the three (README), though it is biased low by construction; as a
  stopping rule it stops after the first round.

``bounds`` (the reward's known range, e.g. the judge's [0, 1]) clips every quantile, so
no prediction leaves the range the reward can take. With all rewards equal, every
estimator predicts no gain at all.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

GRID = 2000
XI_RANGE = (-1.0, 0.5)
EstimatorName = Literal["normal", "gpd", "max"]
# The extrapolating estimators; ``max`` is the naive baseline (tail_check reports it apart).
ESTIMATORS: tuple[EstimatorName, ...] = ("normal", "gpd")
MIN_SAMPLES: dict[str, int] = {"normal": 2, "gpd": 4, "max": 1}
Bounds = tuple[float, float] | None


@dataclass(frozen=True)
class TailFit:
    """A fitted reward distribution, as its quantile function, and its parameters."""

    quantile: Callable[[float], float]
    params: dict[str, float]

    def expected_best_of(self, n: int) -> float:
        return midpoint_mean(lambda t: self.quantile(t ** (1.0 / n)))

    def expected_gain(self, best: float, r: int) -> float:
        """E[max(best, max of r new draws)] - best: never negative."""
        return midpoint_mean(lambda t: max(best, self.quantile(t ** (1.0 / r)))) - best


def midpoint_mean(f: Callable[[float], float]) -> float:
    return sum(f((i + 0.5) / GRID) for i in range(GRID)) / GRID


def fit(rewards: Sequence[float], estimator: EstimatorName, bounds: Bounds = None) -> TailFit:
    if len(rewards) < MIN_SAMPLES[estimator]:
        raise ValueError(f"{estimator} needs at least {MIN_SAMPLES[estimator]} rewards")
    if estimator == "max":
        best = max(rewards)
        tail = TailFit(lambda p: best, {"best": best})
    else:
        tail = fit_normal(rewards) if estimator == "normal" else fit_gpd(rewards)
    return tail if bounds is None else clipped(tail, bounds)


def clipped(tail: TailFit, bounds: tuple[float, float]) -> TailFit:
    """The fit with its quantiles kept inside the reward's range: a normal model of a
    [0, 1] judge would otherwise promise best-of-N rewards above 1."""
    low, high = bounds
    return TailFit(lambda p: min(max(tail.quantile(p), low), high), tail.params)


def fit_normal(rewards: Sequence[float]) -> TailFit:
    mean = statistics.fmean(rewards)
    sd = statistics.stdev(rewards)
    standard = statistics.NormalDist()

    def quantile(p: float) -> float:
        return mean + sd * standard.inv_cdf(min(max(p, 1e-12), 1 - 1e-12))

    return TailFit(quantile, {"mean": mean, "sd": sd})


def empirical_quantile(ordered: Sequence[float], p: float) -> float:
    """Linear interpolation between the order statistics at plotting positions i/(m-1)."""
    position = p * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (position - low) * (ordered[high] - ordered[low])


def gpd_pwm(excesses: Sequence[float]) -> tuple[float, float]:
    """(xi, scale) of a generalized Pareto distribution by probability-weighted moments:
    with a0 = E[Y] and a1 = E[Y (1 - F(Y))], xi = -(4 a1 - a0) / (a0 - 2 a1); the scale
    then matches the mean, E[Y] = scale / (1 - xi), also after xi is clipped."""
    ys = sorted(excesses)
    k = len(ys)
    a0 = statistics.fmean(ys)
    a1 = sum((1 - (i + 1 - 0.35) / k) * y for i, y in enumerate(ys)) / k
    denominator = a0 - 2 * a1
    if a0 <= 0 or denominator <= 0:  # no spread above the threshold
        return 0.0, 0.0
    xi = -(4 * a1 - a0) / denominator
    xi = min(max(xi, XI_RANGE[0]), XI_RANGE[1])
    scale = a0 * (1 - xi)  # E[Y] = scale / (1 - xi), consistent with the clipped xi
    return xi, scale


def fit_gpd(rewards: Sequence[float]) -> TailFit:
    ordered = sorted(rewards)
    m = len(ordered)
    k = max(3, math.ceil(m / 2))
    threshold = ordered[m - k - 1]  # m >= 4 gives m > k: the body has at least one point
    # Exceedances are strictly above the threshold (see the module docstring on ties).
    excesses = [x - threshold for x in ordered[m - k :] if x > threshold]
    k = len(excesses)
    xi, scale = gpd_pwm(excesses) if k >= 2 else (0.0, 0.0)
    tail_mass = k / m  # P(X > threshold)
    body_top = 1 - tail_mass

    def quantile(p: float) -> float:
        if scale == 0.0:  # nothing to extrapolate: the rewards seen, as they are
            return empirical_quantile(ordered, p)
        if p <= body_top:
            return empirical_quantile(ordered, p / body_top * (m - k - 1) / (m - 1))
        exceed = (1 - p) / tail_mass  # P(X > x | X > threshold)
        if abs(xi) < 1e-9:
            return threshold + scale * -math.log(exceed)
        # float ** float is typed Any (a negative base gives a complex); exceed is in (0, 1].
        return threshold + scale / xi * (float(exceed**-xi) - 1)

    params = {"xi": xi, "scale": scale, "threshold": threshold, "tail_mass": tail_mass}
    if xi < 0:
        params["upper_bound"] = threshold - scale / xi
    return TailFit(quantile, params)
