"""Structured outputs on the real engines: every sample decodes under the grammar, in
process (vLLM's structured-output backend on the CPU build) and remote (the same fields
sent to a real `vllm serve`), and a partial object continues under the grammar for its
rest (server.continuation, as TreeBoN uses it)."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator

import jsonschema
import pytest

from engines.remote import RemoteGenerator
from engines.tokenizer import HFChatTokenizer
from search.constraint import OutputConstraint
from search.protocols import Generator
from search.types import SamplingConfig
from server.continuation import Continuation

pytestmark = pytest.mark.integration

PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 12}, "age": {"type": "integer"}},
    "required": ["name", "age"],
    "additionalProperties": False,
}
ASK = "Give a made-up person's name and age as JSON."


def prompt(tokenizer: HFChatTokenizer) -> list[int]:
    return tokenizer.render_chat([{"role": "user", "content": ASK}])


async def check_json_schema(gen: Generator, tok: HFChatTokenizer) -> None:
    constraint = OutputConstraint(json=json.dumps(PERSON))
    params = SamplingConfig(max_tokens=40, seed=3, constraint=constraint)
    out = await gen.generate(prompt(tok), params, n=4)
    finished = [c for c in out if c.finish_reason == "stop"]
    assert finished, [c.text for c in out]
    for c in finished:
        jsonschema.validate(json.loads(c.text), PERSON)
    for c in out:  # a cut one is still a prefix of the grammar's language
        assert re.match(r'\{\s*"name"\s*:\s*"', c.text), c.text


async def check_choice_and_regex(gen: Generator, tok: HFChatTokenizer) -> None:
    ids = prompt(tok)
    choice = SamplingConfig(max_tokens=8, seed=1, constraint=OutputConstraint(choice=("yes", "no")))
    assert {c.text for c in await gen.generate(ids, choice, n=3)} <= {"yes", "no"}
    regex = SamplingConfig(max_tokens=8, seed=1, constraint=OutputConstraint(regex=r"[0-9]{3}"))
    for c in await gen.generate(ids, regex, n=3):
        assert re.fullmatch(r"[0-9]{3}", c.text), c.text


async def check_continuation(gen: Generator, tok: HFChatTokenizer) -> None:
    """A partial object continued under the grammar for its rest (what TreeBoN sends):
    prefix + continuation is an object of the schema."""
    after = Continuation(OutputConstraint(json=json.dumps(PERSON)), "response_format").after
    prefix = '{"name":"Al'
    ids = prompt(tok) + tok.encode(prefix)
    params = SamplingConfig(max_tokens=24, seed=5, constraint=after(prefix))
    out = await gen.generate(ids, params, n=3)
    finished = [c for c in out if c.finish_reason == "stop"]
    assert finished, [c.text for c in out]
    for c in finished:
        jsonschema.validate(json.loads(prefix + c.text), PERSON)


async def test_in_process_continuation(engine, tokenizer) -> None:
    await check_continuation(engine, tokenizer)


async def test_remote_continuation(remote, tokenizer) -> None:
    await check_continuation(remote, tokenizer)


async def test_in_process_json_schema(engine, tokenizer) -> None:
    await check_json_schema(engine, tokenizer)


async def test_in_process_choice_and_regex(engine, tokenizer) -> None:
    await check_choice_and_regex(engine, tokenizer)


@pytest.fixture
async def remote(vllm_server: str, model_path: str) -> AsyncIterator[RemoteGenerator]:
    gen = RemoteGenerator(vllm_server, model_path)
    yield gen
    await gen.aclose()


async def test_remote_json_schema(remote, tokenizer) -> None:
    await check_json_schema(remote, tokenizer)


async def test_remote_choice_and_regex(remote, tokenizer) -> None:
    await check_choice_and_regex(remote, tokenizer)
