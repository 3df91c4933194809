"""A grammar for the rest of a response, after a prefix already generated: how a tree
search keeps a structured-output constraint across its engine calls.

vLLM (0.32) starts a request's grammar at its first generated token. A tree search
continues a partial response by sending prompt + partial ids as a new request, so the
request's own grammar would start over in the middle of, say, a JSON object. What the
continuation needs is the derivative of the language: every text ``s`` with
``prefix + s`` in it. For a regular language that is again regular, and easy to build:

1. the constraint as a regular expression: a JSON schema through outlines-core's
   ``build_regex_from_schema`` (the regex Outlines decodes JSON under), a ``choice`` as
   an alternation, a ``regex`` as it is (``json_object``, any object, would take ~10 s
   to build; it and EBNF grammars are refused for these searches);
2. that regex as a deterministic automaton over characters (``interegular``);
3. the prefix's text walked through it to a state ``q``;
4. the automaton from ``q`` written as a right-linear EBNF grammar (one rule per live
   state, one alternative per outgoing character class, ``""`` where the state accepts),
   sent as vLLM's ``grammar`` constraint (its xgrammar backend compiles it).

Every call of the search, the first one included (prefix ""), decodes under such a
grammar, so every prefix it continues was itself generated in the automaton's language.
The language is a subset of what the schema allows (outlines-core's JSON is compact: at
most one space between tokens), so a completed response is still checked against the
schema as every candidate is (``server.structured``); an EBNF ``grammar`` constraint has
no automaton and is refused for these searches.

The automaton is built once per request (a few milliseconds to tens of them for a typical
schema) and bounded by MAX_STATES; each continuation's grammar is the live part of it.
"""

from __future__ import annotations

from typing import Any

from search.constraint import OutputConstraint
from search.errors import InvalidRequest

MAX_STATES = 5000
# A grammar that accepts only the empty rest: a prefix outside the language (which the
# search's own grammars never generate) can only end, and the candidate is then invalid.
NOTHING_MORE = 'root ::= ""'


def constraint_regex(constraint: OutputConstraint, param: str) -> str:
    """The constraint's language as a regular expression, or a 400 naming ``param``."""
    if constraint.regex is not None:
        return constraint.regex
    if constraint.choice is not None:
        return "|".join(escape(c) for c in constraint.choice)
    if constraint.json is not None:
        from outlines_core.json_schema import build_regex_from_schema

        try:
            return str(build_regex_from_schema(constraint.json))
        except Exception as exc:
            raise InvalidRequest(
                f"{param}: this JSON schema has no regular form for a search that continues "
                f"partial responses ({str(exc)[:120]}); use bon",
                param=param,
            ) from None
    # json_object's regex (any object, depth-bounded) makes an automaton of ~1,500 states
    # that takes ~10 s to build; a grammar has no automaton at all.
    kind = "json_object" if constraint.json_object else "a grammar"
    raise InvalidRequest(
        f"{param}: {kind} cannot be continued from a partial response; give a JSON schema, "
        "or use a search that samples whole responses (bon)",
        param=param,
    )


def escape(text: str) -> str:
    """``text`` as a literal in interegular's regex syntax."""
    return "".join(f"\\{ch}" if not ch.isalnum() and ch != " " else ch for ch in text)


class Continuation:
    """The constraint's automaton; ``after(prefix)`` is the constraint for the rest."""

    def __init__(self, constraint: OutputConstraint, param: str) -> None:
        import interegular

        regex = constraint_regex(constraint, param)
        try:
            fsm = interegular.parse_pattern(regex).to_fsm()
        except Exception:
            raise InvalidRequest(
                f"{param}: the pattern cannot be turned into an automaton for a search that "
                "continues partial responses; use bon",
                param=param,
            ) from None
        if len(fsm.states) > MAX_STATES:
            raise InvalidRequest(
                f"{param}: the format's automaton has {len(fsm.states)} states, over "
                f"{MAX_STATES}, for a search that continues partial responses; use bon",
                param=param,
            )
        self._fsm = fsm
        self._classes = char_classes(fsm.alphabet)
        self._live = live_states(fsm)

    def after(self, prefix: str) -> OutputConstraint:
        state = self._walk(prefix)
        if state is None or state not in self._live:
            return OutputConstraint(grammar=NOTHING_MORE)
        return OutputConstraint(grammar=self._grammar(state))

    def _walk(self, text: str) -> Any:
        fsm = self._fsm
        state: Any = fsm.initial
        for ch in text:
            state = fsm.map.get(state, {}).get(fsm.alphabet[ch])
            if state is None:
                return None
        return state

    def _grammar(self, start: Any) -> str:
        """The automaton's live part reachable from ``start``, right-linear."""
        fsm = self._fsm
        rules, todo, seen = [], [start], {start}
        while todo:
            state = todo.pop()
            options = []
            for symbol, target in sorted(fsm.map.get(state, {}).items()):
                if target not in self._live:
                    continue
                options.append(f"{self._classes[symbol]} s{target}")
                if target not in seen:
                    seen.add(target)
                    todo.append(target)
            if state in fsm.finals:
                options.append('""')
            rules.append(f"s{state} ::= {' | '.join(options)}")
        return "\n".join([f"root ::= s{start}", *rules])


def char_classes(alphabet: Any) -> dict[int, str]:
    """Each symbol of interegular's alphabet as an EBNF character class."""
    from interegular.fsm import anything_else

    named = [ch for ch in alphabet._symbol_mapping if ch is not anything_else]
    classes = {}
    for symbol, members in alphabet.by_transition.items():
        chars = [ch for ch in members if ch is not anything_else]
        if anything_else in members:
            # Every character but the ones with a symbol of their own.
            others = [ch for ch in named if ch not in chars]
            classes[symbol] = "[^" + ranges(others) + "]"
        else:
            classes[symbol] = "[" + ranges(chars) + "]"
    return classes


def ranges(chars: list[str]) -> str:
    """Characters as the inside of a class, runs of consecutive ones as ranges."""
    points = sorted({ord(ch) for ch in chars})
    out, i = [], 0
    while i < len(points):
        j = i
        while j + 1 < len(points) and points[j + 1] == points[j] + 1:
            j += 1
        out.append(code(points[i]) if i == j else f"{code(points[i])}-{code(points[j])}")
        i = j + 1
    return "".join(out)


def code(point: int) -> str:
    return f"\\u{point:04x}" if point < 0x10000 else f"\\U{point:08x}"


def live_states(fsm: Any) -> set[Any]:
    """States from which an accepting state can be reached."""
    back: dict[Any, set[Any]] = {}
    for state, moves in fsm.map.items():
        for target in moves.values():
            back.setdefault(target, set()).add(state)
    live, todo = set(fsm.finals), list(fsm.finals)
    while todo:
        for source in back.get(todo.pop(), ()):
            if source not in live:
                live.add(source)
                todo.append(source)
    return live
