"""search.answer_groups: math answers grouped by value in a bounded child process (finding
S5 of the 2026-12-07 review), everything else by its string."""

from __future__ import annotations

import logging
import signal
import subprocess
import time
from typing import Any

import pytest

import search.answer_groups as answer_groups
from search.answer_canon import group
from search.answer_groups import (
    KILL_MARGIN_S,
    AnswerGrouper,
    group_answers,
    looks_like_math,
)

# Comparing two such powers ran past 20 s in math-verify, unbounded.
HOSTILE = ["(x+y+z+w)^{40}", "(x+y+z+w+1)^{40}"]


@pytest.mark.parametrize(
    ("answer", "math"),
    [
        ("0.5", True),
        ("\\frac{1}{2}", True),
        ("x^2+2x+1", True),
        ("\\frac{\\pi}{2}", True),
        ("(1, 2)", True),
        ("A", False),  # a choice label: no digit, no command
        ("(A)", False),
        ("5 cm", False),  # a word
        ("\\text{yes}", False),
        ("hello world 2", False),
        ("1" * 101, False),  # past MAX_ANSWER_CHARS
    ],
)
def test_which_answers_are_compared_by_value(answer: str, math: bool) -> None:
    assert looks_like_math(answer) is math


def test_the_grouping_rule_in_process() -> None:
    # Each answer joins the first earlier group it equals; groups are named by index.
    answers = ["0.5", "3", "\\frac{1}{2}", "3.0", "\\sqrt{8}", "2\\sqrt{2}", "\\dfrac12"]
    assert group(answers, 30.0) == ([0, 1, 0, 1, 4, 4, 0], True)


def test_the_timer_stops_a_hostile_comparison_in_process() -> None:
    start = time.perf_counter()
    groups, complete = group([*HOSTILE, "0.5", "1/2"], 0.3)
    assert time.perf_counter() - start < 2.0
    assert (groups, complete) == ([0, 1, 2, 3], False)


async def test_one_half_is_one_answer() -> None:
    grouping = await group_answers(["0.5", None, "\\frac{1}{2}", "yes", "yes", "1/2"])
    assert grouping.names == ["0.5", None, "0.5", "yes", "yes", "0.5"]
    assert grouping.complete


async def test_a_hostile_answer_costs_its_vote_the_budget_and_no_more() -> None:
    await group_answers(["1", "2"])  # the child is started: its start is not the bound's
    start = time.perf_counter()
    grouping = await group_answers([*HOSTILE, "0.5", "1/2"], budget_s=0.5)
    assert time.perf_counter() - start < 0.5 + KILL_MARGIN_S
    assert grouping.names == [*HOSTILE, "0.5", "1/2"]  # exact for what was not compared
    assert not grouping.complete
    # The child survived its timer, and the next vote is served at once.
    assert (await group_answers(["0.5", "\\frac{1}{2}"])).names == ["0.5", "0.5"]


async def test_a_child_that_does_not_answer_is_killed(monkeypatch: pytest.MonkeyPatch) -> None:
    stuck = "print('{\"ready\": true}', flush=True); import time; time.sleep(60)"
    monkeypatch.setattr(answer_groups, "_CHILD", stuck)
    started: list[subprocess.Popen[str]] = []
    popen = subprocess.Popen

    def recorded(*args: Any, **kwargs: Any) -> subprocess.Popen[str]:
        started.append(popen(*args, **kwargs))
        return started[-1]

    monkeypatch.setattr(answer_groups.subprocess, "Popen", recorded)
    grouper = AnswerGrouper()
    start = time.perf_counter()
    assert await grouper.groups(["1", "2"], 0.2) == ([0, 1], False)
    # Its budget, the margin, and a bare Python's start (no sympy in this child).
    assert time.perf_counter() - start < 0.2 + KILL_MARGIN_S + 1.0
    assert len(started) == 1 and started[0].returncode == -signal.SIGKILL
    assert grouper._child is None  # the next vote starts a new one


@pytest.mark.parametrize(
    "reply",
    [
        '{"groups": [0], "complete": true}',  # too few
        '{"groups": [1, 1], "complete": true}',  # a later answer as a group's name
        '{"groups": [0, 2, 2], "complete": true}',
        "not json",
    ],
)
async def test_a_malformed_reply_means_exact_grouping(
    monkeypatch: pytest.MonkeyPatch, reply: str
) -> None:
    child = f"print('{{\"ready\": true}}', flush=True); input(); print({reply!r}, flush=True)"
    monkeypatch.setattr(answer_groups, "_CHILD", child)
    assert await AnswerGrouper().groups(["1", "2"], 5.0) == ([0, 1], False)


async def test_without_math_verify_votes_group_strings_with_one_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(answer_groups, "_CHILD", "raise SystemExit(1)")
    grouper = AnswerGrouper()
    with caplog.at_level(logging.WARNING, logger="search.answer_groups"):
        assert await grouper.groups(["0.5", "1/2"], 5.0) == ([0, 1], False)
        assert await grouper.groups(["0.5", "1/2"], 5.0) == ([0, 1], False)
    assert len([r for r in caplog.records if "grouping is off" in r.getMessage()]) == 1
