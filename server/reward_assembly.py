"""The reward set an app scores with: every reward model and process reward model of a
loaded runtime, assembled for serving in one place (``assemble_rewards``).

- A reward model that can score mixed items (``rewards.batcher.ItemScorer``) is
  micro-batched across requests (--reward-max-batch-size, --reward-max-wait-ms).
- Every call is guarded (``rewards.guard``: --reward-timeout-s, one finite number per
  response), its latency, batch sizes and failures labelled with the model's name
  (``prm:NAME`` for a process reward model).
- A judge PRM's judge is wrapped as a reward is, so its calls batch with other
  requests'.

The models themselves are built at load (``server.runtime``, from the settings' parsed
specs); they are wrapped per app, since each app has its own metrics and a runtime can
serve several (benchmarks and tests do).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from rewards.batcher import ItemScorer, MicroBatcher
from rewards.choice import RewardSet
from rewards.guard import TimedPRM, TimedReward
from rewards.judge_prm import JudgePRM
from search.protocols import ProcessRewardModel, RewardModel
from server.metrics import ServerMetrics
from server.runtime import Runtime
from server.settings import Settings


def assemble_rewards(loaded: Runtime, settings: Settings, metrics: ServerMetrics) -> Runtime:
    """A copy of ``loaded`` whose rewards and PRMs are batched and guarded as the module
    says; the batchers' closers join its own. ``loaded`` stays unwrapped, so it can serve
    another app. A runtime without named rewards (built by hand, in tests) has its one
    reward named by the settings' default."""
    closers = list(loaded.closers)
    wrap = RewardWrapper(settings, metrics, closers)
    named = loaded.rewards
    if named is None:
        specs, default = settings.reward_specs
        named = RewardSet({default: loaded.reward}, specs, default)
    models = {name: wrap(name, model) for name, model in named.models.items()}
    rewards = RewardSet(models, list(named.specs.values()), named.default)
    return dataclasses.replace(
        loaded,
        reward=rewards.default_model or loaded.reward,
        rewards=rewards,
        prms=wrap.prms(loaded.prms),
        closers=closers,
    )


@dataclasses.dataclass
class RewardWrapper:
    settings: Settings
    metrics: ServerMetrics
    closers: list[Callable[[], Any]]

    def __call__(self, name: str, reward: RewardModel) -> RewardModel:
        """Micro-batched across requests when it can score mixed items, and bounded by
        --reward-timeout-s with its latency and errors labelled by its name."""
        batched = isinstance(reward, ItemScorer)
        if isinstance(reward, ItemScorer):
            batcher = MicroBatcher(
                reward,
                max_batch_size=self.settings.reward_max_batch_size,
                max_wait_ms=self.settings.reward_max_wait_ms,
                observe=self.metrics.batch_observer(name),
            )
            reward = batcher
            self.closers.append(batcher.aclose)
        return TimedReward(
            reward,
            self.metrics.reward_observers(name),
            batched=batched,
            timeout_s=self.settings.reward_timeout_s,
        )

    def prms(self, prms: Mapping[str, ProcessRewardModel]) -> dict[str, ProcessRewardModel]:
        wrapped: dict[str, ProcessRewardModel] = {}
        for name, prm in prms.items():
            label = f"prm:{name}"
            if isinstance(prm, JudgePRM):
                # The judge's calls batch with other requests' as the judge reward's do.
                wrapped[name] = JudgePRM(self(label, prm.judge))
            else:
                wrapped[name] = TimedPRM(
                    prm,
                    self.metrics.reward_observers(label),
                    timeout_s=self.settings.reward_timeout_s,
                )
        return wrapped
