"""Committed-prefix streaming with the openai client on the real engine: speculative
rejection sends the text its last survivor has committed to before the search ends (the
first content chunk comes well before the last), and the chunks join to the answer."""

from __future__ import annotations

import time

import openai
import pytest

from tests.e2e.conftest import MODEL, question

pytestmark = pytest.mark.e2e


def stream(client: openai.OpenAI, committed: bool) -> tuple[float, float, str, dict]:
    start = time.perf_counter()
    first = None
    pieces = []
    report = None
    for chunk in client.chat.completions.create(
        model=MODEL,
        messages=question(5),  # type: ignore[arg-type]
        max_tokens=64,
        seed=11,
        stream=True,
        extra_body={
            "search": {
                "algorithm": "spec_rejection",
                "n": 2,
                "n_initial": 4,
                "decision_tokens": 16,
                "return_candidates": True,
                "stream_committed": committed,
            }
        },
    ):
        if chunk.choices and chunk.choices[0].delta.content:
            first = first if first is not None else time.perf_counter() - start
            pieces.append(chunk.choices[0].delta.content)
        if chunk.model_extra and "search" in chunk.model_extra:
            report = chunk.model_extra["search"]
    assert first is not None and report is not None
    return first, time.perf_counter() - start, "".join(pieces), report


def test_spec_rejection_streams_committed_text_before_the_search_ends(
    client: openai.OpenAI,
) -> None:
    first, total, text, report = stream(client, committed=True)
    answer = report["candidates"][report["chosen_index"]]["text"]
    assert text == answer
    # 4 responses, a cut every 16 tokens: one survives after 32 of 64 tokens, unless the
    # answers finish early; the rest of the search runs after its text went out.
    assert report["details"]["rounds"][-1]["kept"] == 1, report["details"]
    print(f"first content after {first:.2f} s of {total:.2f} s")
    assert first < 0.8 * total

    buffered_first, buffered_total, buffered_text, _ = stream(client, committed=False)
    assert buffered_text == text  # same seed, same search, same answer
    assert buffered_first > 0.9 * buffered_total  # everything at the end


def test_beam_search_streams_the_kept_beams_common_prefix_before_it_ends(
    client: openai.OpenAI,
) -> None:
    """One beam kept per round (N / M = 1): after the first round every possible answer
    extends it, so its text goes out while the later rounds still run."""
    start = time.perf_counter()
    first, pieces, report = None, [], None
    for chunk in client.chat.completions.create(
        model=MODEL,
        messages=question(5),  # type: ignore[arg-type]
        max_tokens=64,
        seed=11,
        stream=True,
        extra_body={
            "search": {
                "algorithm": "beam_search",
                "n": 2,
                "beam_width": 2,
                "max_step_tokens": 16,
                "return_candidates": True,
                "stream_committed": True,
            }
        },
    ):
        if chunk.choices and chunk.choices[0].delta.content:
            first = first if first is not None else time.perf_counter() - start
            pieces.append(chunk.choices[0].delta.content)
        if chunk.model_extra and "search" in chunk.model_extra:
            report = chunk.model_extra["search"]
    total = time.perf_counter() - start
    assert first is not None and report is not None
    assert "".join(pieces) == report["candidates"][report["chosen_index"]]["text"]
    rounds = report["details"]["rounds"]
    print(f"first content after {first:.2f} s of {total:.2f} s; {len(rounds)} rounds")
    # Seeded: the first round's two beams are both live, so one is kept and committed.
    assert len(rounds) >= 3 and rounds[0]["finished"] == 0, rounds
    assert first < 0.8 * total
