"""rewards.math_truth: which answers match a gold answer, that odd or hostile text is wrong
and quick, and that it works off the main thread without touching the process's alarm."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from rewards.math_truth import MAX_CHARS, is_correct


@pytest.mark.parametrize(
    "response",
    [
        "42",
        "42.0",
        "\\boxed{42}",
        "The answer is $42$",
        "Tom has 30 + 12 = 42 apples. So the answer is 42.",
        "First 6 * 7 = 42. \\boxed{42}",
        "\\[ \\boxed{42} \\]",
        "\\boxed{\\frac{84}{2}}",
    ],
)
def test_equivalent_answers_count(response: str) -> None:
    assert is_correct(response, "42")


@pytest.mark.parametrize(
    ("response", "gold"),
    [("\\boxed{0.5}", "\\frac{1}{2}"), ("$\\frac{1}{2}$", "0.5"), ("\\boxed{-3}", "-3")],
)
def test_latex_and_decimal_golds(response: str, gold: str) -> None:
    assert is_correct(response, gold)


@pytest.mark.parametrize(
    "response",
    ["41", "\\boxed{43}", "The answer is $4.2$", "He has 42 apples and eats 2, so \\boxed{40}"],
)
def test_wrong_answers_do_not_count(response: str) -> None:
    assert not is_correct(response, "42")


@pytest.mark.parametrize(
    "response", ["", "   ", "no number here", "\\boxed{", "}}}{{{\\frac", "$$$$", "\x00\x01"]
)
def test_garbage_is_wrong_not_an_error(response: str) -> None:
    assert not is_correct(response, "42")


def test_an_unreadable_gold_is_an_error() -> None:
    with pytest.raises(ValueError, match="gold answer"):
        is_correct("42", "")


def test_long_text_is_bounded_to_its_end() -> None:
    # A runaway generation: only the last MAX_CHARS characters are read, quickly.
    filler = "and then some more words 7 " * 20_000
    start = time.perf_counter()
    assert is_correct(filler + "So the answer is \\boxed{42}.", "42")
    assert not is_correct("\\boxed{42} " + "x" * (2 * MAX_CHARS), "42")
    assert time.perf_counter() - start < 5


@pytest.mark.parametrize(
    "response",
    [
        "\\boxed{10^{10^{10}}}",
        "9**9**9**9",
        "\\boxed{(10^{1000})^{1000}}",
        "\\boxed{10^{5 \\cdot 100000}}",
        "\\boxed{99999!}",
        "\\boxed{(99999+1)!}",
    ],
)
def test_numbers_too_big_to_evaluate_are_refused_quickly(response: str) -> None:
    # Exact big-integer powers run in C, beyond any timeout: they must never be evaluated.
    start = time.perf_counter()
    assert not is_correct(response, "12")
    assert time.perf_counter() - start < 2


def test_modest_powers_and_factorials_still_count() -> None:
    assert is_correct("\\boxed{2^{10}}", "1024")
    assert is_correct("\\boxed{5!}", "120")


def test_works_in_worker_threads() -> None:
    # math-verify's default signal timeouts raise outside the main thread.
    cases = [("\\boxed{12}", "12", True), ("13", "12", False), ("$7$", "7", True)] * 4
    with ThreadPoolExecutor(max_workers=4) as pool:
        got = list(pool.map(lambda c: is_correct(c[0], c[1]), cases))
    assert got == [expected for _, _, expected in cases]
    assert threading.current_thread() is threading.main_thread()


async def test_works_through_asyncio_to_thread() -> None:
    assert await asyncio.to_thread(is_correct, "The answer is $42$", "42")


def test_leaves_the_process_alarm_alone() -> None:
    # In the main thread math-verify's own timeouts would replace SIGALRM's handler and
    # cancel a pending alarm (a test runner's timeout, say).
    previous = signal.getsignal(signal.SIGALRM)

    def handler(signum: int, frame: object) -> None:
        raise AssertionError("the alarm went off")

    signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, 100.0)
    try:
        assert is_correct("\\boxed{42}", "42")
        assert signal.getsignal(signal.SIGALRM) is handler
        assert signal.getitimer(signal.ITIMER_REAL)[0] > 0
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
