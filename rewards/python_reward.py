"""A reward written as a Python function with TRL's reward-function signature, so a
function written for GRPO training scores searches unchanged:
``fn(prompts, completions, **kwargs) -> list[float]``, called with keywords.

``PythonReward.load("MODULE:FUNCTION")`` imports it once, at start-up, from the current
directory (put on ``sys.path`` as ``python -m`` would) or the installed packages, and checks
the signature then, so a typo fails the start rather than the first request. Every failure
is a ``ValueError`` that names the target: no such module, no such function, not callable,
an async function (it runs in a worker thread), a signature that cannot take ``prompts``
and ``completions`` as keywords or that requires other arguments, or the module's own
import error.

Arguments, one entry per response, in TRL's two formats:

- ``fmt="conversational"`` (default): ``prompts`` = the conversation (a list of
  ``{"role", "content"}`` dicts, a copy per response); ``completions`` =
  ``[[{"role": "assistant", "content": text}], ...]``.
- ``fmt="text"`` (TRL's "standard"): ``prompts`` = the last user message's text (what a
  standard dataset's prompt column holds: the question; a function that needs the whole
  conversation takes the conversational format); ``completions`` = the response strings.

``partial=[bool, ...]`` is passed too when the function names ``partial`` or takes
``**kwargs``: tree searches score unfinished responses, and a verifier may want to know.
TRL's other keywords (dataset columns, ``completion_ids``, ``trainer_state``) do not exist
here and are not passed.

The result must be a list or tuple (or anything with ``tolist()``, a numpy array) of
exactly one real, finite number per response. Anything else fails the request with
``RewardUnavailable(reason="bad_value")``, never a default score; that includes ``None``
(TRL's "not applicable", which only means something across several reward functions) and
bools (``True`` is more often a verifier's result that forgot ``float()`` than a chosen
1.0; return ``float(ok)``). NaN and infinities are ``reason="non_finite"``, as for every
reward (rewards.guard.TimedReward). An exception in the function is
``RewardUnavailable(reason="exception")`` naming its type only: its message may hold
whatever the function had at hand (paths, data, other requests' text), so the message and
the traceback go to the server's log, never to the client.

The function runs in one of a few worker threads of its own (``workers``, 4 by default),
never on the event loop nor in its default executor, with ``timeout_s`` per call; past it
the call fails with ``RewardTimeout``. A thread cannot be killed: a call that never
returns keeps its worker busy for good, and once every worker hangs, every call times out
(the message says so). The workers are daemon threads, not a ``ThreadPoolExecutor``,
whose workers are joined at interpreter exit: one hung call would hang the server's
shutdown. Calls may run concurrently, up to ``workers`` at a time: a function that is not
thread-safe needs ``workers=1``.

There is deliberately no ``score_items``: the server's cross-request micro-batcher would
otherwise put several requests' responses in one call, and one request's failure (a bad
value, an exception) must stay its own.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import importlib
import inspect
import logging
import math
import numbers
import os
import queue
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

from rewards.values import as_float
from search.errors import RewardTimeout, RewardUnavailable
from search.protocols import AsyncClosable
from search.types import Message

logger = logging.getLogger(__name__)

FORMATS = ("conversational", "text")
DEFAULT_WORKERS = 4
REQUIRED_KEYWORDS = ("prompts", "completions")

_Job = tuple["concurrent.futures.Future[Any]", Callable[[], Any]]


class _Raised(Exception):
    """The reward function raised ``original``; kept apart from the awaiting task's own
    cancellation and timeout, which must not be reported as the function's fault."""

    def __init__(self, original: BaseException) -> None:
        super().__init__(repr(original))
        self.original = original


class _DaemonPool:
    """A few daemon worker threads taking jobs in order (see the module docstring)."""

    def __init__(self, workers: int, name: str) -> None:
        self.workers = workers
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._busy = 0
        self._lock = threading.Lock()
        for i in range(workers):
            threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True).start()

    @property
    def busy(self) -> int:
        with self._lock:
            return self._busy

    def submit(self, fn: Callable[[], Any]) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._jobs.put((future, fn))
        return future

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            future, fn = job
            if not future.set_running_or_notify_cancel():
                continue  # its caller timed out or was cancelled while it waited
            with self._lock:
                self._busy += 1
            try:
                result = fn()
            except BaseException as exc:  # SystemExit in user code must not end the server
                future.set_exception(_Raised(exc))
            else:
                future.set_result(result)
            finally:
                with self._lock:
                    self._busy -= 1

    def shutdown(self) -> None:
        """Idle workers exit; a busy one exits after its call returns."""
        for _ in range(self.workers):
            self._jobs.put(None)


def import_target(target: str) -> Callable[..., Any]:
    """The object named by ``MODULE:FUNCTION`` (the function part may be dotted)."""
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(
            f"python reward {target!r}: use MODULE:FUNCTION, e.g. my_rewards:length_reward"
        )
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)  # as `python -m` does, so a file beside the user is found
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        # The module itself (or a parent package) is missing, or the module imports
        # something that is: the second is the module's own error.
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise ValueError(
                f"python reward {target}: {exc} (looked up in the current directory "
                f"{cwd} and the installed packages)"
            ) from exc
        raise ValueError(
            f"python reward {target}: importing {module_name} raised ModuleNotFoundError: {exc}"
        ) from exc
    except Exception as exc:
        raise ValueError(
            f"python reward {target}: importing {module_name} raised {type(exc).__name__}: {exc}"
        ) from exc
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(
                f"python reward {target}: module {module_name} has no {attr!r}"
            ) from None
    if not callable(obj):
        raise ValueError(
            f"python reward {target}: {attr} is a {type(obj).__name__}, not a function"
        )
    fn: Callable[..., Any] = obj
    return fn


def takes_partial(fn: Callable[..., Any], name: str) -> bool:
    """Check that ``fn`` can be called as TRL calls a reward function; True when it can
    also take ``partial``."""
    # An object whose __call__ is async counts too.
    call = getattr(fn, "__call__", None)  # noqa: B004
    if inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(call):
        raise ValueError(
            f"python reward {name}: an async function; give a plain one (it runs in a "
            "worker thread)"
        )
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"python reward {name}: cannot read its signature: {exc}") from exc
    params = list(signature.parameters.values())
    var_keyword = any(p.kind is p.VAR_KEYWORD for p in params)
    keywords = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    missing = [k for k in REQUIRED_KEYWORDS if k not in keywords and not var_keyword]
    if missing:
        raise ValueError(
            f"python reward {name}: its signature {signature} does not take "
            f"{' and '.join(missing)} as keyword arguments (TRL's reward function "
            "signature: fn(prompts, completions, **kwargs))"
        )
    partial = var_keyword or "partial" in keywords
    given = {*REQUIRED_KEYWORDS, *(("partial",) if partial else ())}
    required = [
        p.name
        for p in params
        if p.default is p.empty
        and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        and p.name not in given
    ]
    if required:
        raise ValueError(
            f"python reward {name}: its signature {signature} requires {', '.join(required)}; "
            "only prompts, completions and partial are passed"
        )
    return partial


def last_user_text(conversation: Sequence[Message]) -> str:
    return next((m["content"] for m in reversed(conversation) if m["role"] == "user"), "")


class PythonReward(AsyncClosable):
    """A TRL-style reward function as a reward model (see the module docstring)."""

    # A function's range is unknown.
    bounds = None
    # Scores the texts; token ids are not read.
    takes_token_ids = False

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        timeout_s: float = 30.0,
        fmt: str = "conversational",
        workers: int = DEFAULT_WORKERS,
    ) -> None:
        self.name: str = name or str(getattr(fn, "__qualname__", repr(fn)))
        if fmt not in FORMATS:
            raise ValueError(f"python reward {self.name}: format {fmt!r}: use one of {FORMATS}")
        if not timeout_s > 0:
            raise ValueError(f"python reward {self.name}: timeout_s must be > 0")
        if workers < 1:
            raise ValueError(f"python reward {self.name}: workers must be at least 1")
        self.fn = fn
        self.timeout_s = timeout_s
        self.fmt = fmt
        self._takes_partial = takes_partial(fn, self.name)
        self._pool = _DaemonPool(workers, name=f"python-reward-{self.name}")

    @classmethod
    def load(
        cls,
        target: str,
        *,
        timeout_s: float = 30.0,
        fmt: str = "conversational",
        workers: int = DEFAULT_WORKERS,
    ) -> PythonReward:
        """Import ``MODULE:FUNCTION`` and check it; every failure is a ValueError."""
        fn = import_target(target)
        return cls(fn, name=target, timeout_s=timeout_s, fmt=fmt, workers=workers)

    def arguments(
        self, conversation: Sequence[Message], responses: Sequence[str], partial: bool
    ) -> dict[str, Any]:
        """The keyword arguments of one call, in this reward's format."""
        prompts: list[Any]
        completions: list[Any]
        if self.fmt == "conversational":
            # Copies: a function that edits its arguments must not edit the search's state.
            prompts = [[dict(m) for m in conversation] for _ in responses]
            completions = [[{"role": "assistant", "content": r}] for r in responses]
        else:
            prompts = [last_user_text(conversation)] * len(responses)
            completions = list(responses)
        kwargs: dict[str, Any] = {"prompts": prompts, "completions": completions}
        if self._takes_partial:
            kwargs["partial"] = [partial] * len(responses)
        return kwargs

    async def score(
        self,
        conversation: Sequence[Message],
        responses: Sequence[str],
        *,
        partial: bool = False,
        rubric: str | None = None,
        token_ids: Sequence[Sequence[int]] | None = None,
    ) -> list[float]:
        if not responses:
            return []
        kwargs = self.arguments(conversation, responses, partial)
        future = asyncio.wrap_future(self._pool.submit(lambda: self.fn(**kwargs)))
        try:
            # On timeout wait_for cancels the future: a call still queued never runs.
            result = await asyncio.wait_for(future, self.timeout_s)
        except TimeoutError:
            raise RewardTimeout(self._timeout_message()) from None
        except _Raised as raised:
            exc = raised.original
            logger.warning("python reward %s raised", self.name, exc_info=exc)
            raise RewardUnavailable(
                f"python reward {self.name} raised {type(exc).__name__} (see the server log)",
                reason="exception",
            ) from exc
        return self._check(result, len(responses))

    def _timeout_message(self) -> str:
        message = f"python reward {self.name} did not return within {self.timeout_s:g} s"
        if self._pool.busy >= self._pool.workers:
            message += (
                f"; all {self._pool.workers} of its worker threads are busy (a call that "
                "never returns keeps its thread)"
            )
        return message

    def _check(self, result: Any, n: int) -> list[float]:
        if not isinstance(result, list | tuple) and callable(getattr(result, "tolist", None)):
            result = result.tolist()  # numpy arrays, torch tensors
        if not isinstance(result, list | tuple):
            raise self._bad_value(f"returned a {type(result).__name__}, not a list of floats")
        if len(result) != n:
            raise self._bad_value(f"returned {len(result)} values for {n} responses")
        values = []
        for i, value in enumerate(result):
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                shown = repr(value)
                shown = shown if len(shown) <= 40 else shown[:40] + "..."
                raise self._bad_value(
                    f"value {i} is {shown} ({type(value).__name__}), not a real number"
                )
            number = as_float(value)
            if not math.isfinite(number):
                raise RewardUnavailable(
                    f"python reward {self.name} value {i} is {number}", reason="non_finite"
                )
            values.append(number)
        return values

    def _bad_value(self, detail: str) -> RewardUnavailable:
        return RewardUnavailable(f"python reward {self.name} {detail}", reason="bad_value")

    async def aclose(self) -> None:
        self._pool.shutdown()
