"""Structured outputs over fakes: the grammar reaches every sample (SamplingConfig.constraint),
the searches that cannot keep it refuse it by name, and a candidate that does not parse
or match the schema never wins over one that does, whatever its reward."""

from __future__ import annotations

import json
from typing import Any

import httpx2
import openai
import pydantic
import pytest

from engines.remote import completion_body
from search.constraint import OutputConstraint
from search.fakes import TableReward
from search.types import SamplingConfig
from server.app import create_app
from server.settings import Settings
from tests.unit.conftest import USER, make_runtime, scripted

URL = "/v1/chat/completions"
SCHEMA = {
    "type": "object",
    "properties": {"a": {"type": "integer"}},
    "required": ["a"],
    "additionalProperties": False,
}
# The best reward goes to text that does not parse, then to JSON that breaks the schema.
VALID, WRONG, BROKEN = '{"a": 1}', '{"a": "x"}', "not json"
LONG = '{"a": 11}'
REWARDS = {VALID: 0.2, WRONG: 0.9, BROKEN: 1.0, '{"a": 2}': 0.1, LONG: 5.0}


def json_schema_format(schema: dict[str, Any] = SCHEMA, **kw: Any) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "thing", "schema": schema, **kw}}


def runtime(texts: list[str]) -> Any:
    generator = scripted(texts)
    return generator, make_runtime(generator, TableReward(REWARDS))


async def post(serve_app: Any, texts: list[str], **kw: Any) -> tuple[httpx2.Response, Any]:
    generator, rt = runtime(texts)
    async with serve_app(rt) as client:
        r = await client.post(URL, json={"model": "m", "messages": USER, **kw})
    return r, generator


async def test_json_schema_reaches_every_sample_and_an_invalid_candidate_never_wins(
    serve_app: Any,
) -> None:
    r, generator = await post(
        serve_app,
        [BROKEN, WRONG, VALID, '{"a": 2}'],
        response_format=json_schema_format(strict=True),
        search={"algorithm": "bon", "n": 4},
    )
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["choices"][0]["message"]["content"] == VALID
    assert data["choices"][0]["finish_reason"] == "stop"
    assert data["search"]["details"]["invalid_candidates"] == 2
    ((_, params, n),) = generator.calls
    assert n == 4
    assert params.constraint == OutputConstraint(json=json.dumps(SCHEMA))


async def test_json_object_constrains_and_ranks_objects_first(serve_app: Any) -> None:
    r, generator = await post(
        serve_app,
        [BROKEN, "[1]", VALID, WRONG],
        response_format={"type": "json_object"},
        search={"algorithm": "bon", "n": 4},
    )
    assert r.status_code == 200, r.text
    # WRONG is an object (no schema to break) with the best reward among the objects.
    assert r.json()["choices"][0]["message"]["content"] == WRONG
    assert generator.calls[0][1].constraint == OutputConstraint(json_object=True)


async def test_a_cut_candidate_never_wins(serve_app: Any) -> None:
    # max_tokens 8 cuts the 9-character object: "length", and invalid however it scores.
    r, _ = await post(
        serve_app,
        [LONG, VALID],
        max_tokens=8,
        response_format=json_schema_format(),
        search={"algorithm": "bon", "n": 2},
    )
    assert r.json()["choices"][0]["message"]["content"] == VALID


async def test_all_invalid_answers_the_best_with_its_finish_reason(serve_app: Any) -> None:
    r, _ = await post(
        serve_app,
        ['{"a": 11}', '{"a": 12}'],
        max_tokens=5,
        response_format=json_schema_format(),
        search={"algorithm": "bon", "n": 2},
    )
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "length"
    assert r.json()["search"]["details"]["invalid_candidates"] == 2


async def test_vllm_structured_outputs_field(serve_app: Any) -> None:
    r, generator = await post(
        serve_app,
        ["yes", "no"],
        structured_outputs={"choice": ["yes", "no"]},
        search={"algorithm": "bon", "n": 2},
    )
    assert r.status_code == 200, r.text
    assert generator.calls[0][1].constraint == OutputConstraint(choice=("yes", "no"))
    r, generator = await post(
        serve_app,
        ["ab", "ba"],
        structured_outputs={"regex": "a+b", "disable_any_whitespace": False},
        search={"algorithm": "bon", "n": 2},
    )
    assert r.json()["choices"][0]["message"]["content"] == "ab"
    assert generator.calls[0][1].constraint == OutputConstraint(regex="a+b")


@pytest.mark.parametrize("algorithm", ["darwin", "spec_rejection", "beam_search", "dvts"])
async def test_searches_that_cannot_keep_a_grammar_refuse_it(
    serve_app: Any, algorithm: str
) -> None:
    r, generator = await post(
        serve_app,
        [VALID],
        response_format=json_schema_format(),
        search={"algorithm": algorithm},
    )
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == "response_format"
    assert algorithm in r.json()["error"]["message"]
    assert generator.calls == []


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"response_format": {"type": "xml"}}, "response_format.type"),
        ({"response_format": {"type": "json_schema"}}, "response_format.json_schema"),
        (
            {"response_format": json_schema_format({"type": "frobnicate"})},
            "response_format.json_schema.schema",
        ),
        ({"structured_outputs": {"regex": "a", "choice": ["a"]}}, "structured_outputs"),
        ({"structured_outputs": {"structural_tag": "{}"}}, "structured_outputs.structural_tag"),
        ({"structured_outputs": {"choice": []}}, "structured_outputs.choice"),
        (
            {"structured_outputs": {"json_object": True, "disable_any_whitespace": True}},
            "structured_outputs.disable_any_whitespace",
        ),
        (
            {
                "response_format": {"type": "json_object"},
                "structured_outputs": {"regex": "a"},
            },
            "structured_outputs",
        ),
        # N1's compile bombs, refused before anything compiles them (220 MB and 0.2 s of
        # the event loop for the first).
        ({"structured_outputs": {"regex": "(a{1000}){1000}"}}, "structured_outputs.regex"),
        ({"structured_outputs": {"regex": "(?x)(a{1 000}){8 000}"}}, "structured_outputs.regex"),
    ],
)
async def test_bad_formats_are_400s_naming_the_field(
    serve_app: Any, fields: dict[str, Any], param: str
) -> None:
    r, _ = await post(serve_app, [VALID], **fields)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param


async def test_text_format_is_no_constraint(serve_app: Any) -> None:
    r, generator = await post(
        serve_app,
        [BROKEN, VALID],
        response_format={"type": "text"},
        search={"algorithm": "bon", "n": 2},
    )
    assert r.json()["choices"][0]["message"]["content"] == BROKEN
    assert "invalid_candidates" not in r.json()["search"]["details"]
    assert generator.calls[0][1].constraint is None


def test_remote_engine_sends_the_grammar_upstream() -> None:
    constraint = OutputConstraint(json=json.dumps(SCHEMA))
    body = completion_body("m", [1, 2], SamplingConfig(constraint=constraint), 2)
    assert body["structured_outputs"] == {"json": json.dumps(SCHEMA)}
    assert "structured_outputs" not in completion_body("m", [1], SamplingConfig(), 1)


def test_in_process_engine_passes_the_grammar_to_vllm() -> None:
    pytest.importorskip("vllm")
    from engines.vllm_local import to_sampling_params

    params = to_sampling_params(SamplingConfig(constraint=OutputConstraint(json_object=True)), n=2)
    assert params.structured_outputs.json_object is True


class Thing(pydantic.BaseModel):
    a: int


async def test_openai_parse_returns_the_valid_object() -> None:
    """The official client's ``parse`` with a pydantic model, over the in-process app."""
    _, rt = runtime([BROKEN, WRONG, VALID, '{"a": 2}'])
    app = create_app(Settings(), runtime=rt)
    async with app.router.lifespan_context(app):
        transport = httpx2.ASGITransport(app=app)
        async with httpx2.AsyncClient(transport=transport, base_url="http://t") as http:
            client = openai.AsyncOpenAI(
                base_url="http://t/v1", api_key="unused", http_client=http, max_retries=0
            )
            completion = await client.chat.completions.parse(
                model="m",
                messages=[{"role": "user", "content": "hi"}],
                response_format=Thing,
                extra_body={"search": {"algorithm": "bon", "n": 4}},
            )
    assert completion.choices[0].message.parsed == Thing(a=1)


async def test_completions_take_structured_outputs_and_refuse_tools(serve_app: Any) -> None:
    generator, rt = runtime([BROKEN, VALID])
    async with serve_app(rt) as client:
        r = await client.post(
            "/v1/completions",
            json={
                "model": "m",
                "prompt": "x",
                "best_of": 2,
                "response_format": json_schema_format(),
            },
        )
        assert r.json()["choices"][0]["text"] == VALID
        assert generator.calls[0][1].constraint == OutputConstraint(json=json.dumps(SCHEMA))
        r = await client.post(
            "/v1/completions",
            json={"model": "m", "prompt": "x", "tools": [{"type": "function"}]},
        )
    assert r.status_code == 400 and r.json()["error"]["param"] == "tools"
