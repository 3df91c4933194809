"""The base of the reward wrappers (the guard's TimedReward and TimedPRM, MicroBatcher):
what a wrapper declares of the model it wraps, it takes from that model."""

from __future__ import annotations

from search.protocols import Bounds, ProcessRewardModel, RewardModel, Wrapping


class ForwardingWrapper(Wrapping):
    """A wrapper's scores have the wrapped model's range, and it reads token ids when the
    wrapped model does: ``bounds`` and ``takes_token_ids`` come from ``inner``."""

    inner: RewardModel | ProcessRewardModel

    @property
    def bounds(self) -> Bounds | None:
        return self.inner.bounds

    @property
    def takes_token_ids(self) -> bool:
        return self.inner.takes_token_ids
