"""Structured outputs and tool calls on the search: what grammar every candidate decodes
under, which searches may run with one, and the rule that an invalid candidate never wins.

Where the grammar comes from (chat's fields; the Responses API's ``text.format`` and
tools convert into them, ``server.responses.protocol``):

- ``response_format``: ``{"type": "text"}`` (nothing), ``{"type": "json_object"}`` or
  ``{"type": "json_schema", "json_schema": {"name", "schema", "strict", "description"}}``;
- vLLM's ``structured_outputs`` object (``json``, ``regex``, ``choice``, ``grammar``,
  ``json_object``; ``structural_tag`` and the whitespace options, which vLLM 0.32 reads
  only from its engine configuration, are refused);
- ``tools`` with ``tool_choice`` ``required`` or a named function (``server.tool_calls``).

At most one of the three may constrain a request (vLLM's own rule for its fields). ``strict``
is accepted either way: the schema is always enforced by the grammar.

Every answer-producing engine call of the search carries the constraint
(``SamplingConfig.constraint``), so each candidate is sampled under it. Searches that
sample whole responses from the prompt (``SearchStrategy.honours_constraints``) use it as
it is. TreeBoN (``continues_constraints``) continues partial responses in new engine
calls, where vLLM would restart the grammar: each of its calls decodes under the grammar
for the rest after the partial response's text (``server.continuation``). The other tree
and step searches, and DARWIN's rewrite (free text), cannot follow a grammar: for them it
is a 400 naming the field that asked for it, never an answer that ignores it.

A candidate can still be invalid: cut by max_tokens mid-object, or (tool_choice ``auto``)
a ``<tool_call>`` block that does not parse or match its tool's schema. ``rank_valid``
moves such candidates after every valid one, keeping each group in the search's own order:
an invalid candidate never wins over a valid one, whatever its reward. When every
candidate is invalid the search's best answers anyway, as OpenAI answers a cut JSON
object, with ``finish_reason: "length"`` when that is why. The report says how many were
invalid (``search.details.invalid_candidates``).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jsonschema

from search.constraint import OutputConstraint
from search.errors import InvalidRequest, LimitExceeded
from search.regex_check import refusal
from search.strategy import SearchStrategy
from search.types import Candidate, SearchResult
from server.continuation import Continuation
from server.tool_calls import Parsed, Tools, check_schema

VLLM_KINDS = ("json", "regex", "choice", "grammar", "json_object")
# Per-request options vLLM 0.32 accepts and then ignores (its xgrammar and guidance
# backends read them from the engine's --structured-outputs-config): refused, not dropped.
VLLM_OPTIONS = ("disable_any_whitespace", "disable_additional_properties", "whitespace_pattern")


@dataclass(frozen=True)
class OutputRules:
    """What a request asks of its answer's form: the grammar (``constraint``), the field
    that asked for it (named by a refusal), the tools, and the validity check."""

    constraint: OutputConstraint | None
    param: str
    tools: Tools | None = None
    check: Callable[[str], bool] | None = None

    def parse_calls(self, text: str) -> Parsed | None:
        return None if self.tools is None else self.tools.parse(text)


def output_rules(
    response_format: Any, structured_outputs: Any, tools: Tools | None
) -> OutputRules | None:
    """The request's rules, or None when it asks nothing of the answer's form."""
    asked = [
        name
        for name, value in (
            ("response_format", _format_constraint(response_format)),
            ("structured_outputs", structured_outputs),
            ("tool_choice", tools.schema() if tools is not None else None),
        )
        if value is not None
    ]
    if len(asked) > 1:
        raise InvalidRequest(
            f"{' and '.join(asked)} both constrain the answer; send only one", param=asked[1]
        )
    if tools is not None:
        schema = tools.schema()
        constraint = None if schema is None else OutputConstraint(json=json.dumps(schema))
        return OutputRules(constraint, "tool_choice", tools, lambda t: tools.parse(t).valid)
    if structured_outputs is not None:
        constraint = vllm_constraint(structured_outputs)
        return OutputRules(constraint, "structured_outputs", check=text_check(constraint))
    constraint = _format_constraint(response_format)
    if constraint is None:
        return None
    return OutputRules(constraint, "response_format", check=text_check(constraint))


def _format_constraint(response_format: Any) -> OutputConstraint | None:
    if response_format is None:
        return None
    if not isinstance(response_format, dict):
        raise InvalidRequest("response_format must be an object", param="response_format")
    kind = response_format.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return OutputConstraint(json_object=True)
    if kind != "json_schema":
        raise InvalidRequest(
            "response_format.type must be 'text', 'json_object' or 'json_schema'",
            param="response_format.type",
        )
    spec = response_format.get("json_schema")
    if not isinstance(spec, dict):
        raise InvalidRequest(
            "response_format.json_schema must be an object with a schema",
            param="response_format.json_schema",
        )
    if not isinstance(spec.get("name"), str):
        raise InvalidRequest(
            "response_format.json_schema.name must be a string",
            param="response_format.json_schema.name",
        )
    if spec.get("strict") not in (None, True, False):
        raise InvalidRequest(
            "response_format.json_schema.strict must be a boolean",
            param="response_format.json_schema.strict",
        )
    schema = spec.get("schema", {"type": "object"})
    if not isinstance(schema, dict):
        raise InvalidRequest(
            "response_format.json_schema.schema must be a JSON schema",
            param="response_format.json_schema.schema",
        )
    check_schema(schema, "response_format.json_schema.schema")
    return OutputConstraint(json=json.dumps(schema))


def vllm_constraint(fields: Any) -> OutputConstraint:
    """vLLM's ``structured_outputs`` request object, checked."""
    if not isinstance(fields, dict):
        raise InvalidRequest("structured_outputs must be an object", param="structured_outputs")
    for key, value in fields.items():
        if key in VLLM_OPTIONS and value not in (None, False):
            raise InvalidRequest(
                f"structured_outputs.{key} is not supported per request (vLLM applies it "
                "engine-wide only)",
                param=f"structured_outputs.{key}",
            )
        if key not in VLLM_KINDS and key not in VLLM_OPTIONS:
            raise InvalidRequest(
                f"structured_outputs.{str(key)[:40]} is not supported by alignserve",
                param=f"structured_outputs.{str(key)[:40]}",
            )
    kinds = [k for k in VLLM_KINDS if fields.get(k) is not None]
    if len(kinds) != 1:
        raise InvalidRequest(
            f"structured_outputs must set exactly one of {', '.join(VLLM_KINDS)}",
            param="structured_outputs",
        )
    kind = kinds[0]
    value = fields[kind]
    at = f"structured_outputs.{kind}"
    args: dict[str, Any] = {}
    if kind == "json":
        schema = json.loads(value) if isinstance(value, str) else value
        if not isinstance(schema, dict):
            raise InvalidRequest(f"{at} must be a JSON schema", param=at)
        check_schema(schema, at)
        args["json"] = json.dumps(schema)
    elif kind == "choice":
        if not (isinstance(value, list) and value and all(isinstance(c, str) for c in value)):
            raise InvalidRequest(f"{at} must be a list of strings", param=at)
        args["choice"] = tuple(value)
    elif kind == "json_object":
        if value is not True:
            raise InvalidRequest(f"{at} must be true", param=at)
        args["json_object"] = True
    else:
        if not isinstance(value, str) or not value:
            raise InvalidRequest(f"{at} must be a non-empty string", param=at)
        # Compiled by text_check on the event loop: refused first when its compile could
        # blow up (verbose mode, counted repeats multiplying past a bound: finding N1).
        why = refusal(value) if kind == "regex" else None
        if why is not None:
            raise LimitExceeded(f"{at} {why}", limit="regex_compile", param=at)
        args[kind] = value
    return OutputConstraint(**args)


def text_check(constraint: OutputConstraint) -> Callable[[str], bool] | None:
    """Whether a candidate's text is what the constraint describes; None where it cannot
    be told apart from the text alone (a grammar: the engine enforced it, and a cut
    candidate is told by its finish reason)."""
    if constraint.json_object:
        return lambda text: isinstance(_loads(text), dict)
    if constraint.json is not None:
        schema = json.loads(constraint.json)
        validator = jsonschema.validators.validator_for(schema)(schema)
        missing = object()

        def matches(text: str) -> bool:
            value = _loads(text, missing)
            return value is not missing and validator.is_valid(value)

        return matches
    if constraint.choice is not None:
        choices = set(constraint.choice)
        return lambda text: text in choices
    if constraint.regex is not None:
        import regex

        pattern = regex.compile(constraint.regex)
        return lambda text: pattern.fullmatch(text, timeout=1.0) is not None
    return None


def _loads(text: str, missing: Any = None) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return missing


def check_strategy(
    rules: OutputRules | None, strategy: SearchStrategy
) -> Callable[[str], OutputConstraint] | None:
    """A 400 naming the field that asked for a grammar, for a search that cannot honour
    one (see the module docstring). For a search that continues partial responses under
    it, the constraint for the rest after a prefix (``server.continuation``)."""
    if rules is None or rules.constraint is None or strategy.honours_constraints:
        return None
    if strategy.continues_constraints:
        return Continuation(rules.constraint, rules.param).after
    raise InvalidRequest(
        f"{rules.param}: the {strategy.name!r} search cannot keep its answers to the "
        "requested format (it continues partial responses in ways a grammar cannot follow, "
        "or rewrites them); use one that samples whole responses (bon, rbon_kl, rbon_wd, "
        "srbon, adaptive_bon, mbr, majority) or treebon",
        param=rules.param,
    )


def is_valid(rules: OutputRules, candidate: Candidate) -> bool:
    if candidate.completion.finish_reason == "length" and rules.constraint is not None:
        return False
    return rules.check is None or rules.check(candidate.text)


def rank_valid(rules: OutputRules | None, result: SearchResult) -> SearchResult:
    """``result`` with every invalid candidate ranked after every valid one (each group
    in the search's order), and the count of invalid ones in its details."""
    if rules is None:
        return result
    valid = {id(c): is_valid(rules, c) for c in result.candidates}
    for c in result.ranked:
        valid.setdefault(id(c), is_valid(rules, c))
    ranked = [c for c in result.ranked if valid[id(c)]] + [
        c for c in result.ranked if not valid[id(c)]
    ]
    invalid = sum(not valid[id(c)] for c in result.candidates)
    details = {**result.details, "invalid_candidates": invalid}
    return dataclasses.replace(result, ranked=ranked, details=details)
