"""N1 (review 2026-12-07): a client's answer_regex is refused before admission without
compiling when its counted repeats are too large however they are spelled, and otherwise
compiled first in a memory- and time-capped child after admission (search.regex_check)."""

from __future__ import annotations

import asyncio
import resource
import time

import pytest

from search.errors import InvalidRequest, LimitExceeded
from search.majority import MajorityVote
from search.regex_check import checked_groups, refusal
from search.registry import parse_strategy


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


@pytest.mark.parametrize(
    "pattern",
    [
        # The review's request: regex ignores the spaces inside the braces in verbose mode.
        "(?x)(a{1 000}){8 000}",
        "(?x)(a{1 #c\n000}){20}",
        "(?ix:(a{1 0 0}){2 0 0})",
        "(?x)(a)",
    ],
)
def test_n1_verbose_mode_repeat_is_refused_without_compiling(pattern: str) -> None:
    start = time.perf_counter()
    with pytest.raises(InvalidRequest) as info:
        parse_strategy({"algorithm": "majority", "answer_regex": pattern})
    assert time.perf_counter() - start < 0.1
    assert info.value.param == "search.answer_regex"
    with pytest.raises(InvalidRequest):
        parse_strategy({"algorithm": "beam_search", "n": 4, "answer_regex": pattern})


def test_n1_spaces_inside_braces_are_counted_anyway() -> None:
    assert refusal("(a{1 000}){2 0}") is not None
    assert refusal("(a{ 1000 , 2000 }){ 6 }") is not None
    assert refusal(r"(\d{1,4})-(?:x{2})") is None


async def test_n1_a_repeat_the_count_misses_compiles_in_a_bounded_child() -> None:
    # Straight to the compile stage, as a spelling the count misses would arrive: in the
    # server's process this pattern would take about 220 MB and 0.2 s with the GIL held.
    before = rss_mb()
    gaps: list[float] = []

    async def ticker() -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0.01)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    tick = asyncio.ensure_future(ticker())
    start = time.perf_counter()
    with pytest.raises(LimitExceeded) as info:
        await checked_groups("(a{1000}){1000}")
    tick.cancel()
    assert time.perf_counter() - start < 6
    assert info.value.limit == "regex_compile"
    assert info.value.param == "search.answer_regex"
    assert max(gaps) < 0.5
    assert rss_mb() - before < 50


@pytest.mark.parametrize(
    ("pattern", "why"),
    [
        ("(", "not a valid regular expression"),
        (r"\d+", "exactly one capturing group, not 0"),
        (r"(a)(b)", "exactly one capturing group, not 2"),
    ],
)
async def test_n1_invalid_patterns_are_refused_by_the_preflight(pattern: str, why: str) -> None:
    strategy = parse_strategy({"algorithm": "majority", "answer_regex": pattern})
    with pytest.raises(InvalidRequest) as info:
        await strategy.preflight()
    assert info.value.param == "search.answer_regex"
    assert why in info.value.message


async def test_n1_a_good_pattern_passes_the_preflight_and_matches() -> None:
    strategy = MajorityVote(answer_regex=r"answer: (\d+)")
    await strategy.preflight()
    assert strategy.extract("so the answer: 42") == "42"
