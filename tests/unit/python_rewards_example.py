"""Reward functions with TRL's signature, for tests/unit/test_python_reward.py (loaded as
``tests.unit.python_rewards_example:NAME``)."""

from __future__ import annotations

import threading
from typing import Any

# The keyword arguments of the last call to ``recorder``, and the thread it ran in.
LAST_CALL: dict[str, Any] = {}
LAST_THREAD: list[str] = []
# ``hang`` waits for this (at most HANG_S), so its worker thread ends with the test.
RELEASE = threading.Event()
HANG_S = 10.0
NOT_CALLABLE = 3


def text_of(completion: Any) -> str:
    """A completion in either TRL format: a string, or [{"role": "assistant", ...}]."""
    return completion if isinstance(completion, str) else completion[0]["content"]


def length_reward(prompts: list[Any], completions: list[Any], **kwargs: Any) -> list[float]:
    return [float(len(text_of(c))) for c in completions]


def recorder(prompts: list[Any], completions: list[Any], **kwargs: Any) -> list[float]:
    LAST_CALL.clear()
    LAST_CALL.update(prompts=prompts, completions=completions, **kwargs)
    LAST_THREAD[:] = [threading.current_thread().name]
    return [0.0] * len(completions)


def partial_flag(prompts: list[Any], completions: list[Any], partial: list[bool]) -> list[float]:
    return [0.5 if p else 1.0 for p in partial]


def no_kwargs(prompts: list[Any], completions: list[Any]) -> list[int]:
    # Called with a partial= keyword this would raise TypeError.
    return [1] * len(completions)


def keyword_only(*, prompts: list[Any], completions: list[Any]) -> tuple[float, ...]:
    return tuple(2.0 for _ in completions)


class Array:
    """Stands in for a numpy array or a torch tensor: not a list, but has ``tolist()``."""

    def __init__(self, values: list[float]) -> None:
        self.values = values

    def tolist(self) -> list[float]:
        return list(self.values)


def array_reward(prompts: list[Any], completions: list[Any], **kwargs: Any) -> Array:
    return Array([float(i) for i in range(len(completions))])


def raises(prompts: list[Any], completions: list[Any], **kwargs: Any) -> list[float]:
    raise ValueError("the answer key is missing")


def exits(prompts: list[Any], completions: list[Any], **kwargs: Any) -> list[float]:
    raise SystemExit(3)


def nan_reward(prompts: list[Any], completions: list[Any], **kwargs: Any) -> list[float]:
    return [1.0] + [float("nan")] * (len(completions) - 1)


def inf_reward(prompts: list[Any], completions: list[Any], **kwargs: Any) -> list[float]:
    return [float("inf")] * len(completions)


def one_value(prompts: list[Any], completions: list[Any], **kwargs: Any) -> list[float]:
    return [1.0]


def bools(prompts: list[Any], completions: list[Any], **kwargs: Any) -> list[bool]:
    return [True] * len(completions)


def nones(prompts: list[Any], completions: list[Any], **kwargs: Any) -> list[None]:
    return [None] * len(completions)


def a_float(prompts: list[Any], completions: list[Any], **kwargs: Any) -> float:
    return 1.0


def strings(prompts: list[Any], completions: list[Any], **kwargs: Any) -> list[str]:
    return ["1.0"] * len(completions)


def hang(prompts: list[Any], completions: list[Any], **kwargs: Any) -> list[float]:
    RELEASE.wait(HANG_S)
    return [1.0] * len(completions)


def wrong_names(texts: list[str]) -> list[float]:
    return [0.0] * len(texts)


def positional_only(prompts: list[Any], completions: list[Any], /) -> list[float]:
    return [0.0] * len(completions)


def needs_answer(prompts: list[Any], completions: list[Any], answer: list[str]) -> list[float]:
    return [0.0] * len(completions)


async def async_reward(prompts: list[Any], completions: list[Any], **kwargs: Any) -> list[float]:
    return [0.0] * len(completions)


class Scorer:
    """A callable object, as a reward: its ``__call__`` signature is the one checked."""

    def __call__(self, prompts: list[Any], completions: list[Any], **kwargs: Any) -> list[float]:
        return [3.0] * len(completions)


SCORER = Scorer()
