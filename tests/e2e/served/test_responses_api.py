"""End to end: POST /v1/responses on the server started as the README starts it, driven by
the official openai client's Responses API (``client.responses``) over real HTTP."""

from __future__ import annotations

import openai
import pytest

from tests.conftest import mt_bench_prompts
from tests.e2e.conftest import MODEL

pytestmark = pytest.mark.e2e

MAX_TOKENS = 32


def test_best_of_4_answers_with_its_report(client: openai.OpenAI) -> None:
    r = client.responses.create(
        model=MODEL,
        instructions="Answer in one short paragraph.",
        input=mt_bench_prompts()[0],
        max_output_tokens=MAX_TOKENS,
        extra_body={"search": {"algorithm": "bon", "n": 4, "return_candidates": True}},
    )
    assert r.id.startswith("resp_") and r.object == "response"
    assert r.status in ("completed", "incomplete")
    assert r.output_text.strip(), "no answer text"
    search = r.to_dict()["search"]
    candidates = search["candidates"]
    assert search["algorithm"] == "bon" and len(candidates) == 4
    best = max(candidates, key=lambda c: c["reward"])
    assert r.output_text == best["text"]
    assert search["chosen_reward"] == best["reward"]
    assert r.usage is not None
    assert r.usage.output_tokens == candidates[search["chosen_index"]]["tokens"] <= MAX_TOKENS
    assert r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens
    # The chosen answer hit the limit exactly when the response says it is incomplete.
    cut = candidates[search["chosen_index"]]["finish_reason"] == "length"
    assert (r.status == "incomplete") == cut
    if cut:
        assert r.incomplete_details is not None
        assert r.incomplete_details.reason == "max_output_tokens"


def test_streamed_events_in_order_and_deltas_join_to_the_answer(client: openai.OpenAI) -> None:
    stream = client.responses.create(
        model=MODEL,
        input=[
            {"role": "user", "content": [{"type": "input_text", "text": mt_bench_prompts()[1]}]}
        ],
        max_output_tokens=MAX_TOKENS,
        stream=True,
        extra_body={"search": {"algorithm": "bon", "n": 4}},
    )
    events = list(stream)
    kinds = [e.type for e in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    final = events[-1]
    assert final.type in ("response.completed", "response.incomplete")
    assert kinds[-4:-1] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    pieces = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert len(pieces) > 1, "the answer came in one piece"
    text = "".join(pieces)
    assert text == final.response.output_text
    assert text == events[-4].text  # response.output_text.done
    report = final.response.to_dict()["search"]
    assert report["candidates_generated"] == 4
    assert final.response.usage is not None
    assert final.response.usage.output_tokens <= MAX_TOKENS


def test_the_stream_helper_assembles_the_final_response(client: openai.OpenAI) -> None:
    with client.responses.stream(
        model=MODEL,
        input="What is 2 + 2? Reply with the number only.",
        max_output_tokens=MAX_TOKENS,
        extra_body={"search": {"n": 2}},
    ) as stream:
        events = list(stream)
        text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
        assert text.strip()
        if events[-1].type == "response.completed":
            assert stream.get_final_response().output_text == text
        else:
            # A cut answer ends with response.incomplete, as OpenAI's do; the SDK's helper
            # then has no final response (it takes response.completed only).
            assert events[-1].type == "response.incomplete"
            assert events[-1].response.output_text == text


def test_bad_requests_are_openai_errors(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as stored:
        client.responses.create(model=MODEL, input="hi", previous_response_id="resp_123")
    assert stored.value.param == "previous_response_id"
    with pytest.raises(openai.BadRequestError) as tools:
        client.responses.create(model=MODEL, input="hi", tools=[{"type": "web_search"}])
    assert tools.value.param == "tools.0.type"
    with pytest.raises(openai.BadRequestError) as bad_search:
        client.responses.create(model=MODEL, input="hi", extra_body={"search": {"algorithm": "x"}})
    assert bad_search.value.param == "search.algorithm"
