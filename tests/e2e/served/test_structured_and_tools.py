"""End to end: structured outputs and function tools through the official openai client,
against the server as the README starts it (the package's ``served`` server): the SDK's
``parse`` with a pydantic model (Best-of-N and TreeBoN), ``json_schema`` with ``strict``,
and a tool-call round trip on chat and on the Responses API."""

from __future__ import annotations

import json

import jsonschema
import openai
import pydantic
import pytest

from tests.e2e.conftest import MODEL

pytestmark = pytest.mark.e2e

BON = {"search": {"algorithm": "bon", "n": 4}}
BON2 = {"search": {"algorithm": "bon", "n": 2}}
WEATHER = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 20}},
    "required": ["city"],
    "additionalProperties": False,
}
CHAT_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather now in a city",
            "parameters": WEATHER,
        },
    }
]
ASK_WEATHER = [{"role": "user", "content": "What is the weather in Paris?"}]


class Person(pydantic.BaseModel):
    name: str = pydantic.Field(max_length=12)
    age: int


def test_parse_returns_a_pydantic_object_under_best_of_n(client: openai.OpenAI) -> None:
    completion = client.chat.completions.parse(
        model=MODEL,
        messages=[{"role": "user", "content": "Invent a person: name and age, as JSON."}],
        response_format=Person,
        max_tokens=40,
        extra_body=BON,
    )
    assert isinstance(completion.choices[0].message.parsed, Person)
    report = completion.model_extra["search"]
    assert report["algorithm"] == "bon" and report["candidates_generated"] == 4


def test_json_schema_strict(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Which city is the capital of France?"}],
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "place", "schema": WEATHER, "strict": True},
        },
        max_tokens=32,
        extra_body=BON2,
    )
    jsonschema.validate(json.loads(r.choices[0].message.content), WEATHER)


def test_parse_under_treebon(client: openai.OpenAI) -> None:
    """TreeBoN continues partial responses: each segment decodes under the grammar for
    the rest of the object (server.continuation)."""
    completion = client.chat.completions.parse(
        model=MODEL,
        messages=[{"role": "user", "content": "Invent a person: name and age, as JSON."}],
        response_format=Person,
        # Segments of 8 tokens: no object with both keys fits in one (it takes 9 or
        # more), so the answer was continued under the grammar at least once.
        max_tokens=32,
        extra_body={"search": {"algorithm": "treebon", "n": 2, "layers": 4}},
    )
    assert isinstance(completion.choices[0].message.parsed, Person)
    report = completion.model_extra["search"]
    assert report["algorithm"] == "treebon" and report["engine_calls"] >= 2


def test_a_step_search_refuses_a_grammar_by_name(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.parse(
            model=MODEL,
            messages=ASK_WEATHER,
            response_format=Person,
            max_tokens=16,
            extra_body={"search": {"algorithm": "dvts"}},
        )
    assert info.value.body["param"] == "response_format"


@pytest.mark.parametrize(
    "tool_choice", ["required", {"type": "function", "function": {"name": "get_weather"}}]
)
def test_chat_tool_round_trip(client: openai.OpenAI, tool_choice: object) -> None:
    r = client.chat.completions.create(
        model=MODEL,
        messages=ASK_WEATHER,
        tools=CHAT_TOOLS,
        tool_choice=tool_choice,
        # An array of one call, indented as the model likes: ~35 tokens.
        max_tokens=96,
        extra_body=BON2,
    )
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls[:1]
    assert call.function.name == "get_weather"
    jsonschema.validate(json.loads(call.function.arguments), WEATHER)
    answer = client.chat.completions.create(
        model=MODEL,
        messages=[
            *ASK_WEATHER,
            choice.message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": "Sunny, 21 degrees."},
        ],
        tools=CHAT_TOOLS,
        tool_choice="none",
        max_tokens=24,
        extra_body=BON2,
    )
    assert answer.choices[0].message.content
    assert answer.choices[0].finish_reason in ("stop", "length")


def test_responses_function_call_round_trip(client: openai.OpenAI) -> None:
    tools = [{"type": "function", "name": "get_weather", "parameters": WEATHER, "strict": True}]
    first = client.responses.create(
        model=MODEL,
        input="What is the weather in Paris?",
        tools=tools,
        tool_choice="required",
        max_output_tokens=96,
        extra_body=BON2,
    )
    calls = [item for item in first.output if item.type == "function_call"]
    assert calls and calls[0].name == "get_weather", first.model_dump_json()[:2000]
    jsonschema.validate(json.loads(calls[0].arguments), WEATHER)
    second = client.responses.create(
        model=MODEL,
        input=[
            {"role": "user", "content": "What is the weather in Paris?"},
            calls[0].model_dump(exclude_none=True),
            {"type": "function_call_output", "call_id": calls[0].call_id, "output": "Sunny."},
        ],
        tools=tools,
        tool_choice="none",
        max_output_tokens=24,
        extra_body=BON2,
    )
    assert second.output_text
