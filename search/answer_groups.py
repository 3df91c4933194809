"""Which extracted answers are the same answer: votes group math answers by their value
(math-verify), as search-and-learn groups them by canonical form (finding S5 of the
2026-12-07 review), and every other answer by its exact string.

    names = (await group_answers(["0.5", "\\frac{1}{2}", "3"])).names
    # ["0.5", "0.5", "3"]: a group is named by its first spelling

Which answers are math. Only answers that look like math are compared: at most
``MAX_ANSWER_CHARS`` characters, with a digit or a LaTeX command, and no word (two letters
in a row outside a LaTeX command name). math-verify reads any text as a formula ("hello
world" is a product of letters, equal to "world hello"), so words, units and labels
("yes", "(A)", "5 cm") keep exact grouping. Differs from search-and-learn, which
canonicalises every answer (with sympy, falling back to a stripped string).

The bound. math-verify's parsing and comparison are sympy work, and short hostile answers
take seconds to minutes (search.answer_canon), so none of it runs in the server's process:
a child process (search.answer_canon) does it, started on first use and kept, one request
at a time, from a thread of its own, so the event loop never waits on it. A vote gets
``GROUPING_BUDGET_S`` (waiting for the child included); the child stops comparing at the
budget, and is killed ``KILL_MARGIN_S`` after it if it has not answered (the next vote
starts a new one; a start, about 1.2 s, is not counted in the budget and may take up to
``START_TIMEOUT_S``). Whatever was not compared
keeps exact grouping, and the vote reports ``complete`` false. A server without
math-verify (or a child that cannot start) votes by exact strings, with one warning.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO

logger = logging.getLogger(__name__)

# Longer answers are sentences or working, not a final value: exact grouping.
MAX_ANSWER_CHARS = 100
# What one vote may spend on grouping, waiting for the child included.
GROUPING_BUDGET_S = 2.0
# How long past the budget an unanswering child lives before it is killed.
KILL_MARGIN_S = 1.0
# Starting the child (Python, sympy and math-verify: about 1.2 s on an idle 2-core machine).
START_TIMEOUT_S = 30.0

_COMMAND = re.compile(r"\\[A-Za-z]+")
_WORD = re.compile(r"[^\W\d_]{2,}")
_CHILD = "from search.answer_canon import main; main()"
_ROOT = str(Path(__file__).resolve().parents[1])


def looks_like_math(answer: str) -> bool:
    """Whether ``answer`` is compared by value (module docstring) rather than as a string."""
    if len(answer) > MAX_ANSWER_CHARS:
        return False
    if not ("\\" in answer or any(ch.isdigit() for ch in answer)):
        return False
    return _WORD.search(_COMMAND.sub(" ", answer)) is None


@dataclass(frozen=True)
class Grouping:
    """``names[i]``: answer i's group, the first spelling of its value (None for no
    answer); ``complete``: every math-looking answer was compared within the bound."""

    names: list[str | None]
    complete: bool


class AnswerGrouper:
    """The child process and the one request it serves at a time (module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # Its own thread: votes waiting for the child queue here, not in the loop's default
        # executor, which the server's other blocking work (tokenizing) shares.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="answer-groups")
        self._child: subprocess.Popen[str] | None = None
        # The token of the request the child is serving, so a caller that gave up kills
        # the child only while it is still serving that caller.
        self._serving: object | None = None
        self._warned = False

    async def groups(self, answers: Sequence[str], budget_s: float) -> tuple[list[int], bool]:
        """Each answer's group index (its group's first answer) and whether all were
        compared; every answer its own group when the child fails or overruns."""
        token = object()
        deadline = time.monotonic() + budget_s
        loop = asyncio.get_running_loop()
        exchange = loop.run_in_executor(
            self._executor, self._exchange, list(answers), budget_s, deadline, token
        )
        try:
            # The thread kills an overrunning child itself; this is the bound's backstop.
            found = await asyncio.wait_for(
                exchange, budget_s + KILL_MARGIN_S + START_TIMEOUT_S + 1.0
            )
        except TimeoutError:
            found = None
            self._kill_if_serving(token)
        if found is None:
            return list(range(len(answers))), False
        return found

    def _kill_if_serving(self, token: object) -> None:
        child = self._child
        if self._serving is token and child is not None:
            logger.warning("math answer grouping overran its time; restarting its process")
            child.kill()

    def _exchange(
        self, answers: list[str], budget_s: float, deadline: float, token: object
    ) -> tuple[list[int], bool] | None:
        with self._lock:
            if time.monotonic() >= deadline:
                return None  # the wait for another vote's grouping used the budget
            self._serving = token
            try:
                started = time.monotonic()
                child = self._running_child(token)
                if child is None:
                    return None
                deadline += time.monotonic() - started  # a start is not the vote's time
                remaining = deadline - time.monotonic()
                request = {"answers": answers, "budget_s": max(remaining, 0.0)}
                killer = threading.Timer(remaining + KILL_MARGIN_S, self._kill_if_serving, (token,))
                killer.start()
                try:
                    line = _send(child, json.dumps(request))
                finally:
                    killer.cancel()
            finally:
                self._serving = None
            found = _read_groups(line, len(answers))
            if found is None:
                self._stop_child()
            return found

    def _running_child(self, token: object) -> subprocess.Popen[str] | None:
        if self._child is not None and self._child.poll() is None:
            return self._child
        path = os.pathsep.join(filter(None, [_ROOT, os.environ.get("PYTHONPATH")]))
        try:
            child = subprocess.Popen(
                [sys.executable, "-c", _CHILD],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
                env={**os.environ, "PYTHONPATH": path},
            )
        except OSError as exc:
            self._warn(f"cannot start its process ({exc})")
            return None
        self._child = child
        killer = threading.Timer(START_TIMEOUT_S, self._kill_if_serving, (token,))
        killer.start()
        try:
            ready = _readline(child.stdout)
        finally:
            killer.cancel()
        if ready != '{"ready": true}':
            self._warn("its process did not start (is math-verify installed?)")
            self._stop_child()
            return None
        return child

    def _stop_child(self) -> None:
        child, self._child = self._child, None
        if child is not None:
            child.kill()
            child.wait()

    def _warn(self, why: str) -> None:
        if not self._warned:
            self._warned = True
            logger.warning("math answer grouping is off, votes group exact strings: %s", why)


def _readline(stream: IO[str] | None) -> str:
    return "" if stream is None else stream.readline().strip()


def _send(child: subprocess.Popen[str], request: str) -> str:
    """The child's reply line to ``request``; "" when it died (or was killed)."""
    try:
        assert child.stdin is not None
        child.stdin.write(request + "\n")
        child.stdin.flush()
    except (BrokenPipeError, OSError):
        return ""
    return _readline(child.stdout)


def _read_groups(line: str, count: int) -> tuple[list[int], bool] | None:
    """The reply's groups when it is well formed: one per answer, each naming itself or
    an earlier answer that names itself."""
    try:
        reply = json.loads(line)
        groups = [int(g) for g in reply["groups"]]
        complete = bool(reply["complete"])
    except (ValueError, KeyError, TypeError):
        return None
    if len(groups) != count or any(not 0 <= g <= i or groups[g] != g for i, g in enumerate(groups)):
        return None
    return groups, complete


GROUPER = AnswerGrouper()


async def group_answers(
    answers: Sequence[str | None], budget_s: float = GROUPING_BUDGET_S
) -> Grouping:
    """Each answer's group name: math-looking answers by value, the rest by string."""
    names = list(answers)
    distinct = list(dict.fromkeys(a for a in names if a is not None and looks_like_math(a)))
    if len(distinct) < 2:
        return Grouping(names, True)
    groups, complete = await GROUPER.groups(distinct, budget_s)
    rename = {answer: distinct[g] for answer, g in zip(distinct, groups, strict=True)}
    return Grouping([rename.get(a, a) if a is not None else None for a in names], complete)
