"""Function tools on chat completions (and, converted, on the Responses API): the tools
checked, written into the prompt, the JSON schema that ``required`` and named choices
decode under, and the calls parsed back out of a candidate's text.

How a call looks in text is the Hermes format, the one vLLM's ``hermes`` tool parser
(``--tool-call-parser hermes``) reads and ChatML models such as SmolLM2 are prompted with:
``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``. SmolLM2's chat template has no
tools section, so the tool list goes into the system message, as Hermes and Qwen templates
write it, and earlier calls and their results are rendered as text in the same format.
The server renders the prompt itself (token ids go to the engine, local or remote), so
remote mode parses locally too: the upstream only sees the grammar.

``tool_choice`` as vLLM serves it:

- ``none``: no tools in the prompt, plain text back.
- ``auto``: the tools in the prompt; a candidate that writes ``<tool_call>`` blocks is a
  call (parsed here), else an ordinary text answer.
- ``required``: decoded under vLLM's schema for it: a JSON array (``maxItems`` 1 when
  ``parallel_tool_calls`` is false) of ``{"name": <one of the tools>, "parameters": ...}``.
- a named function: decoded under that function's parameter schema; the output is the
  arguments object.

A candidate whose call does not parse, names no known tool or whose arguments do not
validate against the tool's schema is invalid: it never wins over a valid one
(``server.structured``).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jsonschema

from search.errors import InvalidRequest
from search.types import Message

CALL = re.compile(r"<tool_call>(.*?)</tool_call>", re.DOTALL)
OPEN = "<tool_call>"
EMPTY_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}}


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: str  # JSON text, as OpenAI sends it
    id: str


@dataclass(frozen=True)
class Parsed:
    """A candidate's text read as the tool mode says: its calls (none for plain text),
    the text before them, and whether it is valid (parses and matches the schemas)."""

    calls: tuple[ToolCall, ...]
    content: str | None
    valid: bool


@dataclass(frozen=True)
class Tools:
    """A request's tools (name -> parameter schema, in order), its choice and
    parallel_tool_calls, checked."""

    functions: dict[str, dict[str, Any]]
    descriptions: dict[str, str]
    choice: str  # "auto", "required" or the named function's name (mode "named")
    mode: str  # "auto", "required", "named"
    parallel: bool

    def schema(self) -> dict[str, Any] | None:
        """The JSON schema the samples decode under (vLLM's, see the module docstring);
        None for auto."""
        if self.mode == "named":
            return self.functions[self.choice]
        if self.mode == "auto":
            return None
        variants = [
            {
                "properties": {
                    "name": {"type": "string", "enum": [name]},
                    "parameters": params,
                },
                "required": ["name", "parameters"],
            }
            for name, params in self.functions.items()
        ]
        schema: dict[str, Any] = {
            "type": "array",
            "minItems": 1,
            "items": {"type": "object", "anyOf": variants},
        }
        if not self.parallel:
            schema["maxItems"] = 1
        return schema

    def system_prompt(self) -> str:
        """The tool list as Hermes-format templates put it in the system message."""
        listed = "\n".join(
            json.dumps(
                {
                    "type": "function",
                    "function": {
                        "name": name,
                        "description": self.descriptions.get(name, ""),
                        "parameters": params,
                    },
                }
            )
            for name, params in self.functions.items()
        )
        return (
            "You may call one or more functions to assist with the user query.\n"
            "You are provided with function signatures within <tools></tools> XML tags:\n"
            f"<tools>\n{listed}\n</tools>\n"
            "For each function call, return a json object with function name and arguments "
            "within <tool_call></tool_call> XML tags:\n"
            '<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n'
            "</tool_call>"
        )

    def parse(self, text: str) -> Parsed:
        if self.mode == "named":
            return self._checked([(self.choice, _loads(text))], None)
        if self.mode == "required":
            items = _loads(text)
            if not isinstance(items, list) or not items:
                return Parsed((), None, False)
            calls = [
                (item.get("name"), item.get("parameters"))
                if isinstance(item, dict)
                else (None, None)
                for item in items
            ]
            return self._checked(calls, None)
        if OPEN not in text:
            return Parsed((), text, True)
        blocks = CALL.findall(text)
        # An opened block that never closes (cut by max_tokens) is a call that did not parse.
        if text.count(OPEN) != len(blocks):
            return Parsed((), text, False)
        found = []
        for block in blocks:
            call = _loads(block.strip())
            if not isinstance(call, dict):
                return Parsed((), text, False)
            found.append((call.get("name"), call.get("arguments", call.get("parameters"))))
        content = text[: text.index(OPEN)].strip() or None
        return self._checked(found, content)

    def _checked(self, calls: list[tuple[Any, Any]], content: str | None) -> Parsed:
        if not self.parallel and len(calls) > 1:
            return Parsed((), content, False)
        made = []
        for name, arguments in calls:
            schema = self.functions.get(name) if isinstance(name, str) else None
            if schema is None or not isinstance(arguments, dict):
                return Parsed((), content, False)
            try:
                jsonschema.validate(arguments, schema)
            except jsonschema.ValidationError:
                return Parsed((), content, False)
            made.append(ToolCall(name, json.dumps(arguments, ensure_ascii=False), new_call_id()))
        return Parsed(tuple(made), content, True)


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def parse_tools(
    tools: Any, tool_choice: Any, parallel_tool_calls: Any, *, flat: bool = False
) -> Tools | None:
    """A request's tools, checked (400s name the field); None when there are none or
    ``tool_choice`` is ``none``. ``flat``: the Responses API's shape (``{"type":
    "function", "name", "parameters"}`` and ``{"type": "function", "name"}`` choices)
    rather than chat's (``{"type": "function", "function": {...}}``)."""
    if tools in (None, []):
        if tool_choice not in (None, "none", "auto"):
            raise InvalidRequest("tool_choice needs tools", param="tool_choice")
        return None
    if not isinstance(tools, list):
        raise InvalidRequest("tools must be a list of function tools", param="tools")
    functions: dict[str, dict[str, Any]] = {}
    descriptions: dict[str, str] = {}
    for i, tool in enumerate(tools):
        where = f"tools.{i}"
        if not isinstance(tool, dict) or tool.get("type") != "function":
            raise InvalidRequest(
                f"{where}: only tools of type 'function' are supported", param=f"{where}.type"
            )
        spec = tool if flat else tool.get("function")
        if not isinstance(spec, dict):
            raise InvalidRequest(f"{where}.function must be an object", param=f"{where}.function")
        at = where if flat else f"{where}.function"
        name = spec.get("name")
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", name):
            raise InvalidRequest(
                f"{at}.name must be 1-64 letters, digits, underscores or dashes",
                param=f"{at}.name",
            )
        if name in functions:
            raise InvalidRequest(f"{at}.name: {name!r} is defined twice", param=f"{at}.name")
        params = spec.get("parameters") or EMPTY_PARAMETERS
        if not isinstance(params, dict):
            raise InvalidRequest(f"{at}.parameters must be a JSON schema", param=f"{at}.parameters")
        check_schema(params, f"{at}.parameters")
        functions[name] = params
        description = spec.get("description")
        if isinstance(description, str):
            descriptions[name] = description
    parallel = True if parallel_tool_calls is None else parallel_tool_calls
    if not isinstance(parallel, bool):
        raise InvalidRequest("parallel_tool_calls must be a boolean", param="parallel_tool_calls")
    if tool_choice in (None, "auto"):
        return Tools(functions, descriptions, "auto", "auto", parallel)
    if tool_choice == "none":
        return None
    if tool_choice == "required":
        return Tools(functions, descriptions, "required", "required", parallel)
    named = None
    if isinstance(tool_choice, dict) and tool_choice.get("type") == "function":
        inner = tool_choice if flat else tool_choice.get("function")
        named = inner.get("name") if isinstance(inner, dict) else None
    if not isinstance(named, str):
        raise InvalidRequest(
            "tool_choice must be 'none', 'auto', 'required' or a named function",
            param="tool_choice",
        )
    if named not in functions:
        raise InvalidRequest(f"tool_choice names {named[:64]!r}, not in tools", param="tool_choice")
    return Tools(functions, descriptions, named, "named", parallel)


def check_schema(schema: dict[str, Any], param: str) -> None:
    """A 400 naming ``param`` for a schema that is not a JSON schema."""
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise InvalidRequest(
            f"{param} is not a valid JSON schema: {exc.message[:200]}", param=param
        ) from None


def render_calls(tool_calls: Any, where: str) -> str:
    """An assistant message's ``tool_calls`` as the Hermes text the model reads back."""
    if not isinstance(tool_calls, list):
        raise InvalidRequest(f"{where}.tool_calls must be a list", param=f"{where}.tool_calls")
    blocks = []
    for j, call in enumerate(tool_calls):
        at = f"{where}.tool_calls.{j}"
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise InvalidRequest(f"{at}.function must name a function", param=f"{at}.function")
        arguments = function.get("arguments", "{}")
        parsed = _loads(arguments) if isinstance(arguments, str) else None
        if not isinstance(parsed, dict):
            raise InvalidRequest(
                f"{at}.function.arguments must be a JSON object as a string",
                param=f"{at}.function.arguments",
            )
        call_json = json.dumps({"name": function["name"], "arguments": parsed})
        blocks.append(f"<tool_call>\n{call_json}\n</tool_call>")
    return "\n".join(blocks)


def chat_tool_calls(calls: tuple[ToolCall, ...]) -> list[dict[str, Any]]:
    """Chat's ``message.tool_calls``."""
    return [
        {
            "id": c.id,
            "type": "function",
            "function": {"name": c.name, "arguments": c.arguments},
        }
        for c in calls
    ]


def with_tools_prompt(conversation: Sequence[Message], tools: Tools) -> list[Message]:
    """The conversation with the tool list in its system message (a new one first when it
    has none: it replaces the template's default system prompt)."""
    messages = list(conversation)
    prompt = tools.system_prompt()
    if messages and messages[0]["role"] == "system":
        first = messages[0]
        return [{**first, "content": f"{first['content']}\n\n{prompt}"}, *messages[1:]]
    return [{"role": "system", "content": prompt}, *messages]


def chat_message(tools: Tools | None, text: str, finish: str) -> tuple[dict[str, Any], str]:
    """Chat's assistant message for a chosen candidate, and its finish_reason: a
    ``tool_calls`` message (``finish_reason: "tool_calls"``) when it is a valid call."""
    parsed = None if tools is None else tools.parse(text)
    if parsed is None or not parsed.calls:
        return {"role": "assistant", "content": text}, finish
    message = {
        "role": "assistant",
        "content": parsed.content,
        "tool_calls": chat_tool_calls(parsed.calls),
    }
    return message, "tool_calls"
