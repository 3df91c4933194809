"""The Responses API's function tools, function_call / function_call_output items and
text.format over fakes: they convert into chat's tools and response_format, the answer is
function_call output items (streamed and not)."""

from __future__ import annotations

import json
from typing import Any

from search.constraint import OutputConstraint
from search.fakes import TableReward
from tests.unit.conftest import make_runtime, scripted

URL = "/v1/responses"
WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
TOOLS = [{"type": "function", "name": "get_weather", "parameters": WEATHER}]
NAMED = {"type": "function", "name": "get_weather"}
GOOD, BAD = '{"city": "Paris"}', '{"town": 1}'


async def post(serve_app: Any, texts: list[str], **kw: Any) -> tuple[Any, Any]:
    generator = scripted(texts)
    reward = TableReward({GOOD: 0.1, BAD: 0.9})
    body = {"model": "m", "input": "Weather in Paris?", **kw}
    body.setdefault("search", {"algorithm": "bon", "n": len(texts)})
    async with serve_app(make_runtime(generator, reward)) as client:
        r = await client.post(URL, json=body)
    return r, generator


async def test_named_function_answers_a_function_call_item(serve_app: Any) -> None:
    r, generator = await post(serve_app, [BAD, GOOD], tools=TOOLS, tool_choice=NAMED)
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["status"] == "completed"
    (item,) = data["output"]
    assert item["type"] == "function_call"
    assert item["name"] == "get_weather" and item["arguments"] == GOOD
    assert item["call_id"].startswith("call_") and item["id"].startswith("fc_")
    assert data["tools"] == TOOLS and data["tool_choice"] == NAMED
    assert generator.calls[0][1].constraint == OutputConstraint(json=json.dumps(WEATHER))


async def test_streamed_function_call(serve_app: Any) -> None:
    r, _ = await post(serve_app, [GOOD], tools=TOOLS, tool_choice=NAMED, stream=True)
    events = [
        json.loads(event.split("\ndata: ", 1)[1])
        for event in r.text.split("\n\n")
        if event.startswith("event: ")
    ]
    kinds = [e["type"] for e in events]
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert events[4]["arguments"] == GOOD
    assert events[-1]["response"]["output"][0]["type"] == "function_call"
    assert [e["sequence_number"] for e in events] == list(range(len(events)))


async def test_function_call_output_round_trip(serve_app: Any) -> None:
    items = [
        {"role": "user", "content": "Weather in Paris?"},
        {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": GOOD},
        {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
    ]
    r, generator = await post(serve_app, ["It is sunny."], input=items, tools=TOOLS)
    assert r.json()["output"][0]["content"][0]["text"] == "It is sunny."
    prompt = "".join(chr(t) for t in generator.calls[0][0])
    assert (
        '<assistant><tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}' in prompt
    )
    assert "<tool>sunny<assistant>" in prompt


async def test_text_format_json_schema(serve_app: Any) -> None:
    form = {"type": "json_schema", "name": "w", "schema": WEATHER, "strict": True}
    r, generator = await post(serve_app, [BAD, GOOD], text={"format": form})
    assert r.status_code == 200, r.text
    assert r.json()["output"][0]["content"][0]["text"] == GOOD
    assert r.json()["text"]["format"] == form
    assert generator.calls[0][1].constraint == OutputConstraint(json=json.dumps(WEATHER))


async def test_text_format_refusals_name_the_responses_field(serve_app: Any) -> None:
    form = {"type": "json_schema", "name": "w", "schema": {"type": 5}}
    r, _ = await post(serve_app, [GOOD], text={"format": form})
    assert r.json()["error"]["param"] == "text.format.schema"
    r, _ = await post(
        serve_app, [GOOD], text={"format": {"type": "json_object"}}, search={"algorithm": "darwin"}
    )
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "text.format"
    assert "response_format" not in r.json()["error"]["message"]


async def test_vllm_structured_outputs_field(serve_app: Any) -> None:
    r, generator = await post(serve_app, ["no", "yes"], structured_outputs={"choice": ["yes"]})
    assert r.json()["output"][0]["content"][0]["text"] == "yes"
    assert generator.calls[0][1].constraint == OutputConstraint(choice=("yes",))
