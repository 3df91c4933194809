"""The check every reward passes at the server's boundary (rewards.guard.TimedReward):
exactly one finite real number per response.

A NaN is worse than an error: ``rank_by`` sorts on ``(-reward, i)``, and one NaN breaks
the order of every candidate, not just its own, so the search answers a wrong choice
without a sign; the JSON response then fails to serialise (a 500 after the whole search),
a stream carries ``NaN`` that strict JSON clients reject, the Prometheus sums stay NaN for
good, and recordings and exports carry it into training sets. So a non-finite reward from
any model fails the call with ``RewardUnavailable(reason="non_finite")`` and a wrong
number of rewards with ``reason="bad_value"``; both are counted in
``alignserve_reward_failures_total{reward,reason}``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

from search.errors import RewardUnavailable


def as_float(value: Any) -> float:
    """``float(value)``, with an integer too large for a float as infinite (finding N5:
    a 400-digit integer raised OverflowError, a 500, where it is a non-finite value)."""
    try:
        return float(value)
    except OverflowError:
        return math.inf


def checked_rewards(values: Any, expected: int) -> list[float]:
    """``values`` as floats, when they are ``expected`` finite real numbers."""
    if not isinstance(values, Sequence) or isinstance(values, str) or len(values) != expected:
        count = len(values) if isinstance(values, Sequence) else type(values).__name__
        raise RewardUnavailable(
            f"the reward model returned {count} rewards for {expected} responses",
            reason="bad_value",
        )
    rewards = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise RewardUnavailable(
                f"the reward model returned a {type(value).__name__}, not a number",
                reason="bad_value",
            )
        number = as_float(value)
        if not math.isfinite(number):
            raise RewardUnavailable(
                "the reward model returned a non-finite reward", reason="non_finite"
            )
        rewards.append(number)
    return rewards
