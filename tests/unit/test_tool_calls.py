"""Function tools on chat over fakes: the tools reach the prompt, required and named
choices decode under the tool's schema, the answer is a tool_calls message (streamed and
not), a call that does not parse or match never wins, and the conversation carries
earlier calls and their results back to the model."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest

from search.constraint import OutputConstraint
from search.fakes import TableReward
from tests.unit.conftest import make_runtime, scripted, sse_data

URL = "/v1/chat/completions"
WEATHER = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
}
TOOLS = [
    {
        "type": "function",
        "function": {"name": "get_weather", "description": "Weather now", "parameters": WEATHER},
    },
    {"type": "function", "function": {"name": "noop"}},
]
USER = [{"role": "user", "content": "Weather in Paris?"}]
REQUIRED_OK = '[{"name": "get_weather", "parameters": {"city": "Paris"}}]'
REQUIRED_BAD = '[{"name": "get_weather", "parameters": {"town": 1}}]'
AUTO_OK = (
    'Sure.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
)
AUTO_CUT = '<tool_call>\n{"name": "get_weather", "argu'
REWARDS = {REQUIRED_OK: 0.1, REQUIRED_BAD: 0.9, AUTO_OK: 0.3, AUTO_CUT: 0.95, "It is sunny.": 0.2}


async def post(serve_app: Any, texts: list[str], **kw: Any) -> tuple[Any, Any, Any]:
    generator = scripted(texts)
    reward = TableReward(REWARDS)
    body = {"model": "m", "messages": USER, "tools": TOOLS, **kw}
    body.setdefault("search", {"algorithm": "bon", "n": len(texts)})
    async with serve_app(make_runtime(generator, reward)) as client:
        r = await client.post(URL, json=body)
    return r, generator, reward


async def test_required_answers_a_valid_call_over_a_better_scored_invalid_one(
    serve_app: Any,
) -> None:
    r, generator, reward = await post(
        serve_app, [REQUIRED_BAD, REQUIRED_OK], tool_choice="required"
    )
    assert r.status_code == 200, r.text
    (choice,) = r.json()["choices"]
    assert choice["finish_reason"] == "tool_calls"
    message = choice["message"]
    assert message["content"] is None
    (call,) = message["tool_calls"]
    assert call["type"] == "function"
    assert call["id"].startswith("call_")
    assert call["function"]["name"] == "get_weather"
    jsonschema.validate(json.loads(call["function"]["arguments"]), WEATHER)
    # The grammar: vLLM's array of {name, parameters} over the tools.
    schema = json.loads(generator.calls[0][1].constraint.json)
    assert schema["type"] == "array" and schema["minItems"] == 1
    assert "maxItems" not in schema
    # The tools are in the prompt and the reward saw the call.
    prompt = "".join(chr(t) for t in generator.calls[0][0])
    assert "<tools>" in prompt and '"get_weather"' in prompt
    assert REQUIRED_BAD in reward.calls[0][0]


async def test_parallel_tool_calls_false_allows_one_call(serve_app: Any) -> None:
    r, generator, _ = await post(
        serve_app, [REQUIRED_OK], tool_choice="required", parallel_tool_calls=False
    )
    assert json.loads(generator.calls[0][1].constraint.json)["maxItems"] == 1
    assert r.json()["choices"][0]["finish_reason"] == "tool_calls"


async def test_named_function_decodes_its_arguments(serve_app: Any) -> None:
    r, generator, _ = await post(
        serve_app,
        ['{"town": 1}', '{"city": "Paris"}'],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    assert generator.calls[0][1].constraint == OutputConstraint(json=json.dumps(WEATHER))
    (call,) = r.json()["choices"][0]["message"]["tool_calls"]
    assert call["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}


async def test_auto_parses_hermes_calls_and_a_cut_call_never_wins(serve_app: Any) -> None:
    r, generator, _ = await post(serve_app, [AUTO_CUT, AUTO_OK, "It is sunny."])
    assert generator.calls[0][1].constraint is None
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Sure."
    assert choice["message"]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert r.json()["search"]["details"]["invalid_candidates"] == 1


async def test_auto_may_answer_text(serve_app: Any) -> None:
    r, _, _ = await post(serve_app, ["It is sunny."])
    choice = r.json()["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": "It is sunny."}
    assert choice["finish_reason"] == "stop"


async def test_tool_choice_none_leaves_the_tools_out(serve_app: Any) -> None:
    r, generator, _ = await post(serve_app, [AUTO_OK], tool_choice="none")
    assert "<tools>" not in "".join(chr(t) for t in generator.calls[0][0])
    assert r.json()["choices"][0]["message"]["content"] == AUTO_OK


async def test_streamed_tool_call(serve_app: Any) -> None:
    r, _, _ = await post(serve_app, [REQUIRED_OK], tool_choice="required", stream=True)
    chunks = [c for c in sse_data(r.text) if c != "[DONE]"]
    calls = [
        c["choices"][0]["delta"]["tool_calls"]
        for c in chunks
        if "tool_calls" in c["choices"][0]["delta"]
    ]
    assert len(calls) == 1
    (call,) = calls[0]
    assert call["index"] == 0 and call["function"]["name"] == "get_weather"
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert not any(c["choices"][0]["delta"].get("content") for c in chunks)


async def test_round_trip_renders_calls_and_results(serve_app: Any) -> None:
    messages = [
        *USER,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21 C"},
    ]
    r, generator, reward = await post(serve_app, ["It is sunny."], messages=messages)
    assert r.json()["choices"][0]["message"]["content"] == "It is sunny."
    prompt = "".join(chr(t) for t in generator.calls[0][0])
    assert (
        '<assistant><tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}' in prompt
    )
    assert "<tool>sunny, 21 C" in prompt
    assert reward.conversations[0][-1] == {"role": "tool", "content": "sunny, 21 C"}


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"tools": [{"type": "retrieval"}]}, "tools.0.type"),
        ({"tools": [{"type": "function", "function": {"name": "a b"}}]}, "tools.0.function.name"),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": 3}}}]},
            "tools.0.function.parameters",
        ),
        ({"tool_choice": "sometimes"}, "tool_choice"),
        ({"tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
        ({"tools": [], "tool_choice": "required"}, "tool_choice"),
        ({"tool_choice": "required", "response_format": {"type": "json_object"}}, "tool_choice"),
        ({"tool_choice": "required", "search": {"algorithm": "dvts"}}, "tool_choice"),
        (
            {
                "messages": [
                    {
                        "role": "assistant",
                        "tool_calls": [{"function": {"name": "f", "arguments": "x"}}],
                    }
                ]
            },
            "messages.0.tool_calls.0.function.arguments",
        ),
        ({"functions": [{"name": "f"}]}, "functions"),
    ],
)
async def test_bad_tools_are_400s_naming_the_field(
    serve_app: Any, fields: dict[str, Any], param: str
) -> None:
    r, generator, _ = await post(serve_app, [REQUIRED_OK], **fields)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param
    assert generator.calls == []
