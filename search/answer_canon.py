"""The child process that groups a vote's answers by their math value (math-verify), run by
search.answer_groups; nothing here runs in the server's process.

    python -c "from search.answer_canon import main; main()"

It reads one JSON request per line, ``{"answers": [...], "budget_s": 2.0}`` (distinct,
math-looking answer strings in order of first appearance), and answers one line,
``{"groups": [...], "complete": true}``: ``groups[i]`` is the index of the first answer
equal to answer i (i itself when none before it is), so a group is named by its first
spelling, as search-and-learn's ``find_answer_with_largest_sum`` names a canonical group by
its first original answer.

Equality is math-verify's ``verify(first, answer)``: symbolic and numeric (6 decimals), so
"0.5", "\\frac{1}{2}", "\\dfrac12" and "1/2" are one answer, and "2\\sqrt{2}" is
"\\sqrt{8}". An answer joins the first earlier group it equals. Each answer is compared with
one representative per group, not with every member: math-verify's equality is not always
transitive (numeric rounding), and a first-match rule keeps the grouping deterministic.

Why a child, and its bounds. Parsing and comparing LaTeX is sympy work, and short hostile
answers are slow: comparing ``(x+y+z+w)^{40}`` with another such power ran past 20 s here,
``1000000!`` took 11 s. In this process a timer signal works (it needs the main thread):
one interval timer of the request's ``budget_s`` covers all its parsing and comparing, and
when it fires the answers not yet placed stay their own groups (``complete`` false). The
timer's exception is a BaseException, so math-verify's ``except Exception`` cannot swallow
it; math-verify's own timeouts (whole-second ``signal.alarm``, which would reset this
timer) are off. Answers whose value would be an enormous integer (search.math_size) are
never compared, since C-level integer arithmetic ignores signals. The parent kills this
process if it overruns its budget anyway, and its memory is capped here.

Parsed answers and comparisons are memoised (``lru_cache``), like search-and-learn's
``memoized_canonical_form``: a server sees the same few answers again and again.
"""

from __future__ import annotations

import json
import logging
import resource
import signal
import sys
from functools import lru_cache
from typing import Any

from search.math_size import too_big

# Address space the child may grow by past its size after imports.
MEMORY_HEADROOM_MB = 512


@lru_cache(maxsize=4096)
def parsed(answer: str) -> tuple[Any, ...]:
    """math-verify's reading of ``answer`` as a boxed LaTeX answer; () when it reads
    nothing, times out, or would evaluate to an enormous number."""
    from math_verify import parse

    try:
        # Boxed, so a bare LaTeX answer ("\frac{1}{2}") is read as LaTeX, as a gold one is.
        found = parse(f"\\boxed{{{answer}}}", parsing_timeout=None)
    except Exception:  # math-verify raises little, but a vote must never fail on a string
        return ()
    if not found or any(too_big(expr) for expr in found):
        return ()
    return tuple(found)


@lru_cache(maxsize=16384)
def equal(first: str, answer: str) -> bool:
    from math_verify import verify

    try:
        return bool(verify(list(parsed(first)), list(parsed(answer)), timeout_seconds=None))
    except Exception:
        return False


class OutOfTime(BaseException):
    """The request's timer fired (a BaseException: math-verify catches Exception)."""


def _out_of_time(signum: int, frame: object) -> None:
    raise OutOfTime


def group(answers: list[str], budget_s: float) -> tuple[list[int], bool]:
    """Each answer's group (the index of its group's first answer) and whether every
    answer was placed within ``budget_s``."""
    firsts: list[int] = []
    groups: list[int] = []
    signal.signal(signal.SIGALRM, _out_of_time)
    signal.setitimer(signal.ITIMER_REAL, max(budget_s, 0.001))
    try:
        for i, answer in enumerate(answers):
            if not parsed(answer):
                groups.append(i)  # not readable as math: it keeps its own group
                continue
            same = next((j for j in firsts if equal(answers[j], answer)), None)
            if same is None:
                firsts.append(i)
            groups.append(i if same is None else same)
    except OutOfTime:
        pass
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    complete = len(groups) == len(answers)
    return groups + list(range(len(groups), len(answers))), complete


def cap_memory() -> None:
    try:
        with open("/proc/self/statm") as f:
            size = int(f.read().split()[0]) * resource.getpagesize()
        cap = size + MEMORY_HEADROOM_MB * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    except (OSError, ValueError):
        pass


def main() -> None:
    logging.disable(logging.WARNING)  # math-verify logs every unreadable answer
    import math_verify  # noqa: F401  (imported before the memory cap and the first request)

    cap_memory()
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        try:
            groups, complete = group(list(request["answers"]), float(request["budget_s"]))
        except MemoryError:
            groups, complete = list(range(len(request["answers"]))), False
        print(json.dumps({"groups": groups, "complete": complete}), flush=True)
