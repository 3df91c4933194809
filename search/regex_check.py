"""A client's ``answer_regex``: what is refused before admission, and the bounded compile
after it (finding N1 of the 2026-12-07 review).

Why two stages. ``regex`` unrolls counted repeats when it compiles, with no timeout and
holding the GIL: ``(a{1000}){1000}`` costs about 220 MB and 0.2 s, and the cost is the
product of the counts. So:

1. ``refusal`` runs in the request's validation, on the event loop, and must stay cheap: it
   never compiles. It refuses verbose mode (``(?x)``, in any inline flag group), because
   there ``regex`` ignores whitespace and ``#`` comments even inside braces, so
   ``(?x)(a{1 000}){8 000}`` is a counted repeat of 8 million that a textual count does
   not see (an answer format of at most 256 characters has no use for verbose mode), and
   it caps the product of the counted repeats, read with whitespace inside the braces
   ignored all the same (belt and braces: the product over-counts repeats that are not
   nested, which only a format with several long counted runs would notice).
2. ``checked_groups`` runs in the search, after admission: it compiles the pattern first in
   a child process whose address space is capped (``MAX_COMPILE_MB`` over its size before
   compiling) and which is killed after ``COMPILE_TIMEOUT_S``, and refuses the pattern if
   the compile failed, ran out of either, or grew the child by more than the cap. A
   spelling of a large repeat that the count of stage 1 misses therefore costs the server
   one short-lived child, never the event loop nor the server's memory. Only a pattern
   that compiled within the bound is then compiled in the server (in a worker thread,
   uncached: ``cache_pattern=False``, so ``regex``'s 500-pattern cache keeps nothing).

Verdicts are kept for the last ``VERDICTS_KEPT`` distinct patterns, so a client that sends
the same format every time pays for the child once.
"""

from __future__ import annotations

import asyncio
import math
import re
import sys
from collections import OrderedDict

from search.errors import InvalidRequest, LimitExceeded

MAX_REGEX_CHARS = 256
# Product of all counted repeats ({m}, {m,n}). 10,000 compiles in milliseconds.
MAX_REGEX_REPEATS = 10_000
# A counted repeat as regex reads it, whitespace inside the braces included.
COUNTED_REPEAT = re.compile(r"\{\s*(\d[\d\s]*)?\s*(?:,\s*(\d[\d\s]*)?\s*)?\}")
# An inline flag group that turns verbose mode on (or names it at all): (?x), (?ix:...).
VERBOSE_FLAG = re.compile(r"\(\?[A-Za-z0-9^-]*x")
# The compile bound in the child: memory it may grow by, time it may take (its start
# included: about 0.1 s idle, more on a loaded machine).
MAX_COMPILE_MB = 32
COMPILE_TIMEOUT_S = 5.0
VERDICTS_KEPT = 256

# The child: caps its own address space, compiles the pattern read from stdin, and
# prints "ok <groups> <growth in KB>" or "error <message>".
_CHILD = """
import resource, sys
pattern = sys.stdin.read()
try:
    with open("/proc/self/statm") as f:
        size = int(f.read().split()[0]) * resource.getpagesize()
    cap = size + LIMIT_MB * 2**20 + 64 * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
except (OSError, ValueError):
    pass
import regex
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    compiled = regex.compile(pattern, cache_pattern=False)
except regex.error as exc:
    print("error", str(exc).replace(chr(10), " ")[:200])
    sys.exit(0)
except MemoryError:
    print("memory")
    sys.exit(0)
grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
print("ok", compiled.groups, grown)
"""

_verdicts: OrderedDict[str, int | str] = OrderedDict()


def refusal(pattern: str) -> str | None:
    """Why ``pattern`` is refused before it is ever compiled, or None (module docstring)."""
    if VERBOSE_FLAG.search(pattern):
        return "must not turn on verbose mode (x)"
    counts = [
        max(int(re.sub(r"\s", "", high or low or "0")), 1)
        for low, high in COUNTED_REPEAT.findall(pattern)
    ]
    if math.prod(counts) > MAX_REGEX_REPEATS:
        return f"its counted repeats multiply to more than {MAX_REGEX_REPEATS}"
    return None


def _too_big() -> LimitExceeded:
    return LimitExceeded(
        f"search.answer_regex needs more than {MAX_COMPILE_MB} MB or "
        f"{COMPILE_TIMEOUT_S:g} s to compile; use a simpler pattern",
        limit="regex_compile",
        param="search.answer_regex",
    )


async def _verdict(pattern: str) -> int | str:
    """The pattern's group count when it compiles within the bound, else why not (a
    regex.error's text); LimitExceeded when it does not fit the bound."""
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-I",
        "-c",
        _CHILD.replace("LIMIT_MB", str(MAX_COMPILE_MB)),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        out, _ = await asyncio.wait_for(
            child.communicate(pattern.encode("utf-8", "surrogatepass")), COMPILE_TIMEOUT_S
        )
    except TimeoutError:
        raise _too_big() from None
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
    words = out.decode("utf-8", "replace").split(maxsplit=1)
    if words[:1] == ["error"]:
        return words[1] if len(words) > 1 else "invalid"
    if words[:1] != ["ok"]:
        # Killed, out of memory, or anything else a bounded child dies of.
        raise _too_big()
    groups, grown_kb = (int(w) for w in words[1].split())
    if grown_kb > MAX_COMPILE_MB * 1024:
        raise _too_big()
    return groups


async def checked_groups(pattern: str) -> int:
    """``pattern``'s number of capturing groups, after a compile under a memory and time
    bound off the server's process; InvalidRequest (400) when it is not a valid regular
    expression, LimitExceeded when it does not compile within the bound."""
    verdict = _verdicts.get(pattern)
    if verdict is None:
        verdict = await _verdict(pattern)
        _verdicts[pattern] = verdict
        while len(_verdicts) > VERDICTS_KEPT:
            _verdicts.popitem(last=False)
    else:
        _verdicts.move_to_end(pattern)
    if isinstance(verdict, str):
        raise InvalidRequest(
            f"search.answer_regex is not a valid regular expression: {verdict[:80]}",
            param="search.answer_regex",
        )
    return verdict


async def check_answer_regex(pattern: str | None) -> None:
    """Refuse (400) a pattern that is invalid, too big to compile, or has other than
    exactly one capturing group; a search calls it before it generates anything."""
    if pattern is None:
        return
    groups = await checked_groups(pattern)
    if groups != 1:
        raise InvalidRequest(
            f"search.answer_regex must have exactly one capturing group, not {groups}",
            param="search.answer_regex",
        )
