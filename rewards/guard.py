"""The reward boundary: every reward model and process reward model the server scores with
is wrapped here, so each call is bounded by a timeout (then ``RewardTimeout``, 504, and a
batched caller's items are withdrawn) and answers one finite number per response, else
fails with ``RewardUnavailable`` (reason ``non_finite`` or ``bad_value``; see
rewards.values).

What a call took and why it failed go to observer callbacks (``RewardObservers``), so this
module knows nothing of the server: server.metrics supplies callbacks that feed its
Prometheus series.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from rewards.values import checked_rewards
from rewards.wrapper import ForwardingWrapper
from search.errors import RewardTimeout, RewardUnavailable
from search.protocols import ProcessRewardModel, RewardModel
from search.types import Message

T = TypeVar("T")


def _ignore(_: object) -> None:
    return None


@dataclass(frozen=True)
class RewardObservers:
    """Who hears about each guarded call: its duration in seconds, its size (responses
    scored) when nothing batches across calls, and a failure's reason (``timeout``,
    ``error``, or a ``RewardUnavailable`` reason). Unset ones ignore what they are told."""

    on_duration: Callable[[float], None] = _ignore
    on_size: Callable[[int], None] = _ignore
    on_failure: Callable[[str], None] = _ignore


class _Guard:
    """The bound on one wrapped model's calls, and what it reports of them."""

    def __init__(self, observers: RewardObservers | None, timeout_s: float, batched: bool):
        self.observers = observers or RewardObservers()
        self.timeout_s = timeout_s
        self.batched = batched

    async def bounded(self, call: Awaitable[T], size: int, what: str) -> T:
        """Await ``call`` (a call on ``size`` responses) within ``timeout_s``, reporting its
        latency, its size as a batch (unless batched elsewhere) and any failure's reason."""
        start = time.perf_counter()
        try:
            return await asyncio.wait_for(call, self.timeout_s)
        except TimeoutError:
            self.observers.on_failure("timeout")
            raise RewardTimeout(f"{what} did not answer within {self.timeout_s:g} s") from None
        except RewardTimeout:
            self.observers.on_failure("timeout")
            raise
        except RewardUnavailable as exc:
            self.observers.on_failure(exc.reason)
            raise
        except Exception:
            self.observers.on_failure("error")
            raise
        finally:
            self.observers.on_duration(time.perf_counter() - start)
            if not self.batched:
                self.observers.on_size(size)


class TimedReward(ForwardingWrapper):
    """Wraps a reward model to bound each call by ``timeout_s`` and to report its latency,
    and the call's size as a batch when nothing batches across calls (``batched=False``).
    What it returns is one finite number per response (see the module docstring)."""

    def __init__(
        self,
        inner: RewardModel,
        observers: RewardObservers | None = None,
        *,
        batched: bool = False,
        timeout_s: float = 120.0,
    ) -> None:
        self.inner: RewardModel = inner
        self._guard = _Guard(observers, timeout_s, batched)

    async def score(
        self,
        conversation: Sequence[Message],
        responses: Sequence[str],
        *,
        partial: bool = False,
        rubric: str | None = None,
        token_ids: Sequence[Sequence[int]] | None = None,
    ) -> list[float]:
        async def checked() -> list[float]:
            rewards = await self.inner.score(
                conversation, responses, partial=partial, rubric=rubric, token_ids=token_ids
            )
            return checked_rewards(rewards, len(responses))

        return await self._guard.bounded(checked(), len(responses), "the reward model")


class TimedPRM(ForwardingWrapper):
    """A process reward model bounded by ``timeout_s`` (then 504) and timed, reported to
    ``observers`` as TimedReward's calls are."""

    def __init__(
        self,
        inner: ProcessRewardModel,
        observers: RewardObservers | None = None,
        *,
        timeout_s: float = 120.0,
    ) -> None:
        self.inner: ProcessRewardModel = inner
        self._guard = _Guard(observers, timeout_s, batched=False)

    async def score_last_steps(
        self,
        conversation: Sequence[Message],
        steps: Sequence[Sequence[str]],
        *,
        token_ids: Sequence[Sequence[int]] | None = None,
    ) -> list[float]:
        call = self.inner.score_last_steps(conversation, steps, token_ids=token_ids)
        return list(await self._guard.bounded(call, len(steps), "the process reward model"))
