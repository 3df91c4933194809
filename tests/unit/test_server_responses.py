"""POST /v1/responses over fakes: the response object, the conversion of instructions and
input into the conversation the search sees, the typed event stream, the 400s for what
alignserve cannot honour, and the official openai client parsing all of it.

The default runtime (conftest) generates ["one", "three", "three", "seven"] with rewards
one 0.1, three 0.8, seven 0.5; the CharTokenizer prompt for [user: "hi"] is 19 tokens.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import httpx
import openai
import pytest

from search.errors import EngineUnavailable, ShuttingDown
from search.fakes import CharTokenizer, PromptTableGenerator, TableReward, completion_of
from search.types import Completion, SamplingConfig
from server.app import create_app
from server.settings import Settings
from tests.unit.conftest import make_runtime, openai_client

URL = "/v1/responses"
USER = [{"role": "user", "content": "hi"}]
LIFECYCLE = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
]
CLOSING = [
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
]


def body(**kw: Any) -> dict[str, Any]:
    return {"model": "m", "input": "hi", **kw}


def typed_events(text: str) -> list[dict[str, Any]]:
    """The events of a Responses stream: each an ``event:`` line and a ``data:`` line
    whose JSON repeats the type; keep-alive comments are skipped."""
    assert text.endswith("\n\n"), text[-50:]
    events = []
    for block in text.split("\n\n"):
        if not block or block.startswith(":"):
            continue
        head, data = block.split("\n")
        payload = json.loads(data.removeprefix("data: "))
        assert head == f"event: {payload['type']}"
        events.append(payload)
    return events


def kinds(events: Sequence[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


def deltas(events: Sequence[dict[str, Any]]) -> list[str]:
    return [e["delta"] for e in events if e["type"] == "response.output_text.delta"]


async def test_answers_with_the_highest_reward(serve_app: Any) -> None:
    async with serve_app() as client:
        r = await client.post(URL, json=body())
    assert r.status_code == 200
    data = r.json()
    assert data["id"].startswith("resp_")
    assert data["object"] == "response"
    assert data["status"] == "completed"
    assert data["model"] == "m"
    assert isinstance(data["created_at"], int)
    assert data["output"] == [
        {
            "id": "msg_" + data["id"].removeprefix("resp_"),
            "type": "message",
            "role": "assistant",
            "status": "completed",
            "content": [
                {"type": "output_text", "text": "three", "annotations": [], "logprobs": []}
            ],
        }
    ]
    assert data["usage"] == {
        "input_tokens": 19,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": 5,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 24,
    }
    assert data["store"] is False
    assert data["error"] is None and data["incomplete_details"] is None
    assert data["tools"] == [] and data["tool_choice"] == "auto"
    assert data["metadata"] == {}


async def test_search_report_is_chats(serve_app: Any) -> None:
    search = {"algorithm": "bon", "n": 4, "return_candidates": True}
    async with serve_app() as client:
        chat = await client.post("/v1/chat/completions", json={"messages": USER, "search": search})
        r = await client.post(URL, json=body(search=search))
    report, expected = r.json()["search"], chat.json()["search"]
    assert set(report.pop("timings")) == set(expected.pop("timings"))
    assert report == expected
    assert report["chosen_reward"] == 0.8 and len(report["candidates"]) == 4


async def test_instructions_and_input_items_become_the_conversation(
    serve_app: Any, runtime_of: Any, script: Any
) -> None:
    gen, reward = script(), TableReward({"three": 1.0})
    items = [
        {"role": "developer", "content": "Be terse."},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "2+2?"}]},
        # An earlier response's output item, passed back as it came.
        {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "status": "completed",
            "content": [{"type": "output_text", "text": "4", "annotations": []}],
        },
        {
            "role": "user",
            "content": [
                {"type": "input_text", "text": "and "},
                {"type": "input_text", "text": "3+3?"},
            ],
        },
    ]
    async with serve_app(runtime_of(gen, reward)) as client:
        r = await client.post(URL, json=body(instructions="Answer in digits.", input=items))
    assert r.status_code == 200
    conversation = [
        {"role": "system", "content": "Answer in digits."},
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "and 3+3?"},
    ]
    assert reward.conversations == [conversation]
    assert gen.calls[0][0] == CharTokenizer().render_chat(conversation)
    assert r.json()["instructions"] == "Answer in digits."
    assert r.json()["usage"]["input_tokens"] == len(CharTokenizer().render_chat(conversation))


async def test_string_input_is_one_user_message(serve_app: Any, runtime_of: Any) -> None:
    reward = TableReward({"three": 1.0})
    async with serve_app(runtime_of(reward=reward)) as client:
        await client.post(URL, json=body(input="What is 2+2?"))
    assert reward.conversations == [[{"role": "user", "content": "What is 2+2?"}]]


async def test_sampling_fields_reach_the_generator_and_are_echoed(
    serve_app: Any, runtime_of: Any, script: Any
) -> None:
    gen = script()
    fields = {"max_output_tokens": 7, "temperature": 0.3, "top_p": 0.9, "top_k": 5}
    async with serve_app(runtime_of(gen), Settings(default_max_tokens=33)) as client:
        r = await client.post(URL, json=body(**fields, search={"n": 2}))
        plain = await client.post(URL, json=body())
    sampling = SamplingConfig(max_tokens=7, temperature=0.3, top_p=0.9, top_k=5)
    assert [(c[1], c[2]) for c in gen.calls] == [(sampling, 2), (SamplingConfig(max_tokens=33), 4)]
    data = r.json()
    assert (data["max_output_tokens"], data["temperature"], data["top_p"]) == (7, 0.3, 0.9)
    # Unset, they echo what the engine used.
    assert (plain.json()["temperature"], plain.json()["top_p"]) == (1.0, 1.0)
    assert plain.json()["max_output_tokens"] is None


async def test_accepted_defaults_and_echoed_fields(serve_app: Any) -> None:
    fields = {
        "tools": [],
        "tool_choice": "none",
        "text": {"format": {"type": "text"}, "verbosity": "medium"},
        "reasoning": None,
        "include": [],
        "background": False,
        "store": True,
        "parallel_tool_calls": False,
        "truncation": "disabled",
        "metadata": {"ticket": "42"},
        "user": "u1",
        "stream_options": {"include_obfuscation": False},
    }
    async with serve_app() as client:
        r = await client.post(URL, json=body(**fields))
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["store"] is False, "nothing is stored, whatever the request says"
    assert data["metadata"] == {"ticket": "42"}
    assert data["user"] == "u1"
    assert data["tool_choice"] == "none" and data["parallel_tool_calls"] is False


class LengthGenerator:
    """Every sample hits max_tokens."""

    async def generate(
        self, prompt_ids: Sequence[int], params: SamplingConfig, n: int = 1
    ) -> list[Completion]:
        return [completion_of("abcdefgh"[: params.max_tokens], "length") for _ in range(n)]


async def test_incomplete_when_the_answer_hits_max_output_tokens(
    serve_app: Any, runtime_of: Any
) -> None:
    async with serve_app(runtime_of(LengthGenerator())) as client:
        r = await client.post(URL, json=body(max_output_tokens=3))
        streamed = await client.post(URL, json=body(max_output_tokens=3, stream=True))
    data = r.json()
    assert data["status"] == "incomplete"
    assert data["incomplete_details"] == {"reason": "max_output_tokens"}
    assert data["output"][0]["status"] == "incomplete"
    assert data["output"][0]["content"][0]["text"] == "abc"
    events = typed_events(streamed.text)
    assert kinds(events)[-1] == "response.incomplete"
    assert events[-1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    assert events[-2]["item"]["status"] == "incomplete"


# -- streaming ---------------------------------------------------------------------------


async def test_stream_events_in_order_and_deltas_join_to_the_answer(serve_app: Any) -> None:
    async with serve_app() as client:
        plain = (await client.post(URL, json=body())).json()
        r = await client.post(URL, json=body(stream=True))
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    assert r.headers["x-accel-buffering"] == "no"  # nginx passes each event on
    assert "[DONE]" not in r.text
    events = typed_events(r.text)
    # One delta per token (CharTokenizer: per character).
    expected = [*LIFECYCLE, *["response.output_text.delta"] * 5, *CLOSING, "response.completed"]
    assert kinds(events) == expected
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert deltas(events) == list("three")
    assert "".join(deltas(events)) == plain["output"][0]["content"][0]["text"]
    created, final = events[0]["response"], events[-1]["response"]
    assert created["status"] == "in_progress" and created["output"] == []
    assert created["usage"] is None and "search" not in created
    assert created["id"] == final["id"]
    item_id = final["output"][0]["id"]
    assert all(e["item_id"] == item_id for e in events if "item_id" in e)
    assert events[2]["item"] == {
        "id": item_id,
        "type": "message",
        "role": "assistant",
        "status": "in_progress",
        "content": [],
    }
    assert events[-4]["text"] == "three"
    assert events[-3]["part"]["text"] == "three"
    assert events[-2]["item"] == final["output"][0]
    assert final["status"] == "completed"
    assert final["usage"] == plain["usage"]
    assert final["search"]["chosen_reward"] == 0.8


async def test_stream_sends_committed_text_while_the_search_runs(serve_app: Any) -> None:
    # spec_rejection over 6 tokens, a decision every 2: once "dd33" alone survives its
    # text is final and goes out as one delta, then "dd3344" adds "44"; the final pass
    # sends nothing twice.
    table = {
        "<user>hi<assistant>": ["aaXXXX", "bbYYYY", "ccWWWW", "ddZZZZ"],
        "<user>hi<assistant>bb": ["11XX"],
        "<user>hi<assistant>dd": ["33XX"],
        "<user>hi<assistant>dd33": ["44XX"],
    }
    rewards = {"bb": 0.9, "dd": 0.8, "bb11": 0.2, "dd33": 0.7, "dd3344": 0.5}
    runtime = make_runtime(PromptTableGenerator(table), TableReward(rewards))
    search = {"algorithm": "spec_rejection", "n": 2, "n_initial": 4, "decision_tokens": 2}
    async with serve_app(runtime) as client:
        r = await client.post(URL, json=body(stream=True, max_output_tokens=6, search=search))
    events = typed_events(r.text)
    assert kinds(events)[:4] == LIFECYCLE
    assert deltas(events) == ["dd33", "44"]
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == "dd3344"


async def test_stream_keepalive_while_searching(
    serve_app: Any, runtime_of: Any, script: Any
) -> None:
    gen = script(delay_s=0.15)
    async with serve_app(runtime_of(gen), Settings(keepalive_s=0.04)) as client:
        r = await client.post(URL, json=body(stream=True))
    blocks = [b for b in r.text.split("\n\n") if b]
    # The response is announced at once; keep-alives fill the search; then the answer.
    assert blocks[0].startswith("event: response.created\n")
    assert blocks[1].startswith("event: response.in_progress\n")
    assert blocks[2] == ": keep-alive"
    assert "".join(deltas(typed_events(r.text))) == "three"


class DownGenerator:
    async def generate(
        self, prompt_ids: Sequence[int], params: SamplingConfig, n: int = 1
    ) -> list[Completion]:
        raise EngineUnavailable("engine is down")


async def test_a_failed_search_ends_the_stream_with_response_failed(
    serve_app: Any, runtime_of: Any
) -> None:
    async with serve_app(runtime_of(DownGenerator())) as client:
        r = await client.post(URL, json=body(stream=True))
        metrics = (await client.get("/metrics")).text
    assert r.status_code == 200
    events = typed_events(r.text)
    assert kinds(events) == ["response.created", "response.in_progress", "response.failed"]
    failed = events[-1]["response"]
    assert failed["status"] == "failed"
    assert failed["error"] == {
        "code": "server_error",
        "message": "engine is down",
        "type": "service_unavailable",
        "param": None,
    }
    assert failed["output"] == [] and failed["usage"] is None
    assert 'alignserve_requests_total{algorithm="bon",api="responses",status="503"} 1.0' in metrics


async def test_a_failed_search_without_stream_is_a_json_error(
    serve_app: Any, runtime_of: Any
) -> None:
    async with serve_app(runtime_of(DownGenerator())) as client:
        r = await client.post(URL, json=body())
    assert r.status_code == 503
    assert r.json()["error"]["message"] == "engine is down"


@asynccontextmanager
async def app_client(
    settings: Settings | None = None,
) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    app = create_app(settings or Settings(), runtime=make_runtime())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        yield app, client


async def test_n7_a_stream_refused_while_queued_is_a_503_not_a_200() -> None:
    async with app_client() as (app, client):
        admission = app.state.admission

        async def draining() -> Any:
            # Draining began between the early check and the stream's wait for a slot.
            raise admission.refuse("shutting_down", "the server is shutting down", ShuttingDown)

        admission.enter = draining
        r = await client.post(URL, json=body(stream=True))
        chat = await client.post(
            "/v1/chat/completions",
            json={"messages": [{"role": "user", "content": "hi"}], "stream": True},
        )
    # The refusal is the status, before any header of a stream: what clients retry on.
    for reply in (r, chat):
        assert reply.status_code == 503, reply.text
        assert reply.headers["content-type"].startswith("application/json")
        assert reply.json()["error"]["message"] == "the server is shutting down"


# -- refusals ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"previous_response_id": "resp_1"}, "previous_response_id"),
        ({"tools": [{"type": "web_search"}]}, "tools.0.type"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"text": {"format": {"type": "xml"}}}, "text.format.type"),
        ({"text": {"verbosity": "low"}}, "text.verbosity"),
        ({"reasoning": {"effort": "high"}}, "reasoning"),
        ({"include": ["message.output_text.logprobs"]}, "include"),
        ({"background": True}, "background"),
        ({"conversation": "conv_1"}, "conversation"),
        ({"prompt": {"id": "pmpt_1"}}, "prompt"),
        ({"truncation": "auto"}, "truncation"),
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"max_tokens": 5}, "max_tokens"),
        ({"messages": USER}, "messages"),
        ({"stop": "x"}, "stop"),
        ({"input": ""}, "input"),
        ({"input": []}, "input"),
        ({"input": 5}, "input"),
        ({"input": ["hi"]}, "input.0"),
        (
            {"input": [{"type": "function_call_output", "call_id": "c", "output": 5}]},
            "input.0.output",
        ),
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input.0.type"),
        ({"input": [{"role": "tool", "content": "x"}]}, "input.0.role"),
        ({"input": [{"role": "user", "content": 5}]}, "input.0.content"),
        (
            {
                "input": [
                    {"role": "user", "content": "a"},
                    {"role": "user", "content": [{"type": "input_image", "image_url": "x"}]},
                ]
            },
            "input.1.content.0.type",
        ),
        (
            {"input": [{"role": "user", "content": [{"type": "input_text"}]}]},
            "input.0.content.0.text",
        ),
        ({"metadata": {str(i): "v" for i in range(17)}}, "metadata"),
        ({"max_output_tokens": 0}, "max_output_tokens"),
        ({"temperature": "0.5"}, "temperature"),
    ],
)
async def test_refusals_name_the_field(
    serve_app: Any, runtime_of: Any, script: Any, fields: dict[str, Any], param: str
) -> None:
    gen = script()
    async with serve_app(runtime_of(gen)) as client:
        r = await client.post(URL, json=body(**fields))
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param
    assert r.json()["error"]["type"] == "invalid_request_error"
    assert gen.calls == [], "nothing ran"


async def test_previous_response_id_says_nothing_is_stored(serve_app: Any) -> None:
    async with serve_app() as client:
        r = await client.post(URL, json=body(previous_response_id="resp_1", stream=True))
    assert r.status_code == 400
    assert "stores no responses" in r.json()["error"]["message"]


async def test_input_items_are_bounded_before_conversion(serve_app: Any) -> None:
    items = [{"role": "user", "content": "hi"}] * 3
    async with serve_app(settings=Settings(max_messages=2)) as client:
        r = await client.post(URL, json=body(input=items))
        # Two items fit; with instructions the conversation is three messages, which
        # chat's own bound refuses, naming the field as this API has it.
        with_instructions = await client.post(URL, json=body(input=items[:2], instructions="x"))
        metrics = (await client.get("/metrics")).text
    assert r.status_code == 400 and r.json()["error"]["param"] == "input"
    assert "at most 2" in r.json()["error"]["message"]
    assert with_instructions.status_code == 400
    assert with_instructions.json()["error"]["param"] == "input"
    assert 'alignserve_limit_rejections_total{limit="messages"} 2.0' in metrics


async def test_chat_errors_name_the_responses_field(serve_app: Any) -> None:
    async with serve_app(settings=Settings(max_tokens_limit=10)) as client:
        r = await client.post(URL, json=body(max_output_tokens=11))
        model = await client.post(URL, json=body(model="other"))
    error = r.json()["error"]
    assert r.status_code == 400 and error["param"] == "max_output_tokens"
    assert error["message"] == "max_output_tokens must be at most 10"
    assert model.status_code == 404 and model.json()["error"]["param"] == "model"


async def test_unknown_fields_are_ignored(serve_app: Any) -> None:
    async with serve_app() as client:
        r = await client.post(URL, json=body(some_future_field=1))
    assert r.status_code == 200


# -- the official client -----------------------------------------------------------------


async def test_the_openai_client_parses_responses_and_their_streams() -> None:
    async with openai_client() as client:
        r = await client.responses.create(
            model="m", input="hi", instructions="Be terse.", extra_body={"search": {"n": 4}}
        )
        assert r.output_text == "three" and r.status == "completed"
        assert r.usage is not None and r.usage.output_tokens == 5
        assert r.model_extra is not None and r.model_extra["search"]["chosen_reward"] == 0.8

        stream = await client.responses.create(model="m", input="hi", stream=True)
        events = [event async for event in stream]
        assert [e.type for e in events][:4] == LIFECYCLE
        assert events[-1].type == "response.completed"
        text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
        assert text == events[-1].response.output_text == "three"

        async with client.responses.stream(model="m", input=USER) as helper:
            async for _ in helper:
                pass
            final = await helper.get_final_response()
        assert final.output_text == "three"

        with pytest.raises(openai.BadRequestError) as refused:
            await client.responses.create(model="m", input="hi", previous_response_id="resp_1")
        assert refused.value.param == "previous_response_id"
