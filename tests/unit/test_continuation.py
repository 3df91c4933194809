"""The grammar for the rest of a response after a prefix (server.continuation), and TreeBoN
continuing partial responses under it: each engine call gets the grammar for what its
prefix may still become, so the tree keeps a JSON schema across segments."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from search.constraint import OutputConstraint
from search.errors import InvalidRequest
from search.fakes import CharTokenizer, TableReward, completion_of
from search.types import Completion, SamplingConfig
from server.continuation import NOTHING_MORE, Continuation
from tests.unit.conftest import USER, make_runtime

SCHEMA = {
    "type": "object",
    "properties": {"a": {"type": "integer"}},
    "required": ["a"],
    "additionalProperties": False,
}


def accepts(grammar: str, text: str) -> bool:
    """Whether the right-linear grammar (as server.continuation writes it) derives ``text``:
    a small interpreter, so the test does not trust the code it checks."""
    lines = grammar.splitlines()
    start = re.fullmatch(r"root ::= (s\d+)", lines[0])
    assert start, lines[0]
    rules: dict[str, list[tuple[str, str] | None]] = {}
    for line in lines[1:]:
        name, body = line.split(" ::= ")
        options: list[tuple[str, str] | None] = []
        for option in body.split(" | "):
            if option == '""':
                options.append(None)
            else:
                cls, target = option.rsplit(" ", 1)
                options.append((cls.encode().decode("unicode_escape"), target))
        rules[name] = options
    states = {start[1]}
    for ch in text:
        states = {
            target
            for s in states
            for opt in rules[s]
            if opt is not None
            for cls, target in [opt]
            if re.fullmatch(cls, ch)
        }
    return any(None in rules[s] for s in states)


def test_the_rest_after_a_prefix() -> None:
    after = Continuation(OutputConstraint(json=json.dumps(SCHEMA)), "response_format").after
    whole = after("").grammar
    assert whole is not None
    assert accepts(whole, '{"a":12}') and accepts(whole, '{ "a": -3 }')
    assert not accepts(whole, '{"a":"x"}') and not accepts(whole, '{"a":1')
    rest = after('{"a"').grammar
    assert rest is not None
    assert accepts(rest, ":5}") and not accepts(rest, "5}") and not accepts(rest, ":5")
    assert after('{"a":7}').grammar is not None and accepts(after('{"a":7}').grammar, "")
    assert after('{"b"').grammar == NOTHING_MORE  # outside the language: only the end


def test_choice_and_regex_continue() -> None:
    after = Continuation(OutputConstraint(choice=("yes", "no way")), "structured_outputs").after
    assert accepts(after("no").grammar or "", " way")
    assert not accepts(after("no").grammar or "", "")
    after = Continuation(OutputConstraint(regex="[0-9]{2}-[a-z]+"), "structured_outputs").after
    assert accepts(after("4").grammar or "", "2-ab")


def test_the_grammars_compile_in_xgrammar() -> None:
    xgrammar = pytest.importorskip("xgrammar")
    after = Continuation(OutputConstraint(json=json.dumps(SCHEMA)), "response_format").after
    for prefix in ("", '{"a"', '{"a":7}', "nope"):
        xgrammar.Grammar.from_ebnf(after(prefix).grammar)


@pytest.mark.parametrize(
    "constraint", [OutputConstraint(json_object=True), OutputConstraint(grammar='root ::= "a"')]
)
def test_what_has_no_automaton_is_refused(constraint: OutputConstraint) -> None:
    with pytest.raises(InvalidRequest) as info:
        Continuation(constraint, "response_format")
    assert info.value.param == "response_format"


@dataclass
class RecordingGenerator:
    """Roots '{"a":12}' and '{"a":34}' (cut by the segment length), then ':5}' for every
    continuation; records each call's constraint and prefix."""

    calls: list[tuple[str, OutputConstraint | None]] = field(default_factory=list)

    async def generate(
        self, prompt_ids: Sequence[int], params: SamplingConfig, n: int = 1
    ) -> list[Completion]:
        prefix = CharTokenizer().decode(prompt_ids).rsplit("<assistant>", 1)[1]
        self.calls.append((prefix, params.constraint))
        texts = ['{"a":12}', '{"a":34}'][:n] if not prefix else [":5}"] * n
        cut = params.max_tokens
        return [completion_of(t[:cut], "length" if len(t) > cut else "stop") for t in texts]


async def test_treebon_continues_under_the_grammar_for_the_rest(serve_app: Any) -> None:
    generator = RecordingGenerator()
    reward = TableReward({'{"a":5}': 0.5})
    async with serve_app(make_runtime(generator, reward)) as client:
        r = await client.post(
            "/v1/chat/completions",
            json={
                "model": "m",
                "messages": USER,
                "max_tokens": 8,
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "a", "schema": SCHEMA},
                },
                "search": {"algorithm": "treebon", "n": 2, "layers": 2},
            },
        )
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == '{"a":5}'
    (root, first), *continued = generator.calls
    assert root == "" and first is not None and first.grammar is not None
    assert accepts(first.grammar, '{"a":12}')
    assert continued
    for prefix, constraint in continued:
        assert prefix == '{"a"'
        assert constraint is not None and constraint.grammar is not None
        assert accepts(constraint.grammar, ":5}") and not accepts(constraint.grammar, '{"a":5}')
