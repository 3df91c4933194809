"""IFEval's instructions in IFEval's own form: ``{"instruction_id": ..., "kwargs": {...}}``.

A row of IFEval's data goes to the server unchanged: its ``instruction_id_list`` zipped with
its ``kwargs`` is a valid ``search.constraints``. The verdict on a complete response is
lm-eval's (``reference``): ``check_following`` on the response, failed when the response is
blank, exactly as ``test_instruction_following_strict`` decides; ``loose`` is
``test_instruction_following_loose``'s verdict (the response, or it without its first
and/or last line, with or without its asterisks, passes on any of the eight).

What the parser adds is the rejection of what would make lm-eval's verdict arbitrary or
slow, each a 400 naming the argument:

- a missing or falsy argument: lm-eval drops falsy values and then draws the argument at
  random (``num_words: 0`` becomes a random number of words);
- an unknown argument with a value (``None`` values, as in the Hugging Face copy of the
  data, are dropped as lm-eval drops them);
- regex syntax in the strings IFEval puts into a regex unescaped (keywords, forbidden
  words, the postscript marker, the section splitter): IFEval's own data has none, and a
  client-written pattern such as ``(a+)+$`` could stall the server. ``.`` stays: it is in
  IFEval's markers and cannot backtrack.

One check is computed here rather than by lm-eval, with the same result: the placeholder
count (``count_brackets``), whose regex takes quadratic time on a line of "[" without "]".
A test compares it with the regex on random texts.

One case is IFEval's own gap: ``letter_frequency`` with a letter that is not an ASCII
letter (rows 1122 and 1129 of IFEval's data ask for "#" and "!"), where lm-eval counts a
randomly drawn letter instead. Here the character given is counted, as the prompt asks.

Prefix verdicts (``partial=True``) are final only where IFEval's semantics make them so
(``_PREFIX``): a check that only counts or finds something (words, keywords, letters,
placeholders, highlights, a title, a postscript) keeps every match of a prefix in every
continuation (a match inside the prefix is a match in the answer: the patterns have a
fixed length or stop at a line's end), so "at least" passed is final and "less than"
failed is final. Forbidden words are read on the prefix cut at its last whitespace, since
``\bbad\b`` at its very end may still become "badge". Case
checks fail for good on a character of the wrong case. The rest (sentences, whose punkt
boundaries move as text arrives; paragraphs and bullets, which are exact counts; language;
JSON; endings; quotations) are undecided until the response is complete.
"""

from __future__ import annotations

from collections import Counter
from functools import cached_property
from typing import Any, Literal, get_args

from pydantic import Field, field_validator, model_validator

from rewards.constraints import reference
from rewards.constraints.base import Constraint, Verdict, no_regex_syntax
from rewards.constraints.language import LANGUAGES

InstructionId = Literal[
    "keywords:existence",
    "keywords:frequency",
    "keywords:forbidden_words",
    "keywords:letter_frequency",
    "language:response_language",
    "length_constraints:number_sentences",
    "length_constraints:number_paragraphs",
    "length_constraints:number_words",
    "length_constraints:nth_paragraph_first_word",
    "detectable_content:number_placeholders",
    "detectable_content:postscript",
    "detectable_format:number_bullet_lists",
    "detectable_format:constrained_response",
    "detectable_format:number_highlighted_sections",
    "detectable_format:multiple_sections",
    "detectable_format:json_format",
    "detectable_format:title",
    "combination:two_responses",
    "combination:repeat_prompt",
    "startend:end_checker",
    "change_case:capital_word_frequency",
    "change_case:english_capital",
    "change_case:english_lowercase",
    "punctuation:no_comma",
    "startend:quotation",
]
INSTRUCTION_IDS: tuple[str, ...] = get_args(InstructionId)

RELATIONS = ("less than", "at least")
# The codes langdetect can answer, so the only ones IFEval's ``detect(text) == code`` can
# pass (langdetect says zh-cn or zh-tw, never zh).
LANGDETECT_CODES = frozenset(LANGUAGES)

# Argument kinds: "count" a positive int, "relation", "pattern" a string IFEval puts into a
# regex, "patterns" a list of them, "text" any non-blank string, "letter", "language".
_ARGS: dict[str, dict[str, str]] = {
    "keywords:existence": {"keywords": "patterns"},
    "keywords:frequency": {"keyword": "pattern", "frequency": "count", "relation": "relation"},
    "keywords:forbidden_words": {"forbidden_words": "patterns"},
    "keywords:letter_frequency": {
        "letter": "letter", "let_frequency": "count", "let_relation": "relation",
    },
    "language:response_language": {"language": "language"},
    "length_constraints:number_sentences": {"num_sentences": "count", "relation": "relation"},
    "length_constraints:number_paragraphs": {"num_paragraphs": "count"},
    "length_constraints:number_words": {"num_words": "count", "relation": "relation"},
    "length_constraints:nth_paragraph_first_word": {
        "num_paragraphs": "count", "nth_paragraph": "count", "first_word": "text",
    },
    "detectable_content:number_placeholders": {"num_placeholders": "count"},
    "detectable_content:postscript": {"postscript_marker": "pattern"},
    "detectable_format:number_bullet_lists": {"num_bullets": "count"},
    "detectable_format:number_highlighted_sections": {"num_highlights": "count"},
    "detectable_format:multiple_sections": {"section_spliter": "pattern", "num_sections": "count"},
    "combination:repeat_prompt": {"prompt_to_repeat": "text"},
    "startend:end_checker": {"end_phrase": "text"},
    "change_case:capital_word_frequency": {
        "capital_frequency": "count", "capital_relation": "relation",
    },
}  # fmt: skip

# How a prefix verdict is read: "up" a pass on the settled prefix is final (the check finds
# or counts at least something), "down" a fail is final (it counts less than something),
# the name of the relation argument when it depends on it, "lower"/"upper" a character of
# the wrong case fails for good; absent: undecided until the end.
_PREFIX: dict[str, str] = {
    "keywords:existence": "up",
    "keywords:frequency": "relation",
    "keywords:forbidden_words": "down",
    "keywords:letter_frequency": "let_relation",
    "length_constraints:number_words": "relation",
    "detectable_content:number_placeholders": "up",
    "detectable_content:postscript": "up",
    "detectable_format:number_highlighted_sections": "up",
    "detectable_format:title": "up",
    "punctuation:no_comma": "down",
    "change_case:english_lowercase": "lower",
    "change_case:english_capital": "upper",
}


def _check_arg(kind: str, name: str, value: Any) -> Any:
    if kind == "count":
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1_000_000:
            raise ValueError(f"{name} must be an integer from 1 to 1000000")
    elif kind == "relation":
        if value not in RELATIONS:
            raise ValueError(f'{name} must be "less than" or "at least"')
    elif kind == "language":
        if value not in LANGDETECT_CODES:
            raise ValueError(f"{name} {value!r} is not a code langdetect can detect")
    elif kind == "letter":
        if not isinstance(value, str) or len(value) != 1 or value.isspace():
            raise ValueError(f"{name} must be one character")
    elif kind == "patterns":
        if not isinstance(value, list) or not 1 <= len(value) <= 20:
            raise ValueError(f"{name} must be a list of 1 to 20 strings")
        for item in value:
            _check_arg("pattern", name, item)
    else:
        if not isinstance(value, str) or not value.strip() or len(value) > 2000:
            raise ValueError(f"{name} must be a non-blank string of at most 2000 characters")
        if kind == "pattern":
            no_regex_syntax(value)
    return value


class IFEval(Constraint):
    """One of IFEval's 25 instructions, checked by lm-eval's IFEval code."""

    type: Literal["ifeval"] = "ifeval"
    instruction_id: InstructionId
    kwargs: dict[str, Any] = Field(default_factory=dict)

    @field_validator("kwargs", mode="before")
    @classmethod
    def _drop_none(cls, kwargs: Any) -> Any:
        if isinstance(kwargs, dict):
            return {k: v for k, v in kwargs.items() if v is not None}
        return kwargs

    @model_validator(mode="after")
    def _known_args(self) -> IFEval:
        expected = _ARGS.get(self.instruction_id, {})
        for name in self.kwargs:
            if name not in expected:
                takes = ", ".join(expected) or "no arguments"
                raise ValueError(f"{self.instruction_id} takes {takes}; not {name!r}")
        for name, kind in expected.items():
            if name not in self.kwargs:
                raise ValueError(f"{self.instruction_id} needs argument {name!r}")
            _check_arg(kind, name, self.kwargs[name])
        nth = self.instruction_id == "length_constraints:nth_paragraph_first_word"
        if nth and self.kwargs["nth_paragraph"] > self.kwargs["num_paragraphs"]:
            raise ValueError("nth_paragraph must be at most num_paragraphs")
        return self

    @cached_property
    def _built(self) -> tuple[Any, str]:
        return reference.build(self.instruction_id, self.kwargs)

    def _follows(self, text: str) -> bool:
        if not text.strip():
            return False
        if self.instruction_id == "detectable_content:number_placeholders":
            return bool(count_brackets(text) >= self.kwargs["num_placeholders"])
        if self.instruction_id == "keywords:letter_frequency":
            letter = self.kwargs["letter"].lower()
            if not "a" <= letter <= "z":
                count = Counter(text.lower())[letter]
                if self.kwargs["let_relation"] == "less than":
                    return bool(count < self.kwargs["let_frequency"])
                return bool(count >= self.kwargs["let_frequency"])
        try:
            return bool(self._built[0].check_following(text))
        except RecursionError:
            # json.loads on deeply nested arrays ("[[[[..."): lm-eval would raise; it is
            # not JSON anyone can read, so it fails.
            return False

    def check(self, text: str, partial: bool) -> Verdict:
        if not partial:
            return "pass" if self._follows(text) else "fail"
        mode = _PREFIX.get(self.instruction_id)
        if mode in self.kwargs:
            mode = "down" if self.kwargs[mode] == "less than" else "up"
        if mode == "lower":
            return "fail" if any(ch.isupper() for ch in text) else "undecided"
        if mode == "upper":
            return "fail" if any(ch.islower() for ch in text) else "undecided"
        if mode is None:
            return "undecided"
        settled = text
        if self.instruction_id == "keywords:forbidden_words":
            # \bword\b at the prefix's end may not be a word of the answer ("bad" ->
            # "badge"): only the prefix up to its last whitespace is settled.
            cut = max(text.rfind(ch) for ch in " \t\n\r\f\v")
            settled = text[:cut] if cut >= 0 else ""
        follows = self._follows(settled)
        if mode == "up" and follows:
            return "pass"
        if mode == "down" and not follows and settled.strip():
            return "fail"
        return "undecided"

    def check_loose(self, text: str) -> Verdict:
        """IFEval's loose verdict: any of the eight variants of the response passes."""
        return "pass" if any(self._follows(v) for v in loose_variants(text)) else "fail"

    def instruction(self) -> str:
        """IFEval's own description of the instruction."""
        if self.instruction_id == "keywords:letter_frequency":
            # lm-eval would describe a random letter in place of one that is not ASCII.
            k = self.kwargs
            return (
                f"In your response, the letter {k['letter']} should appear "
                f"{k['let_relation']} {k['let_frequency']} times."
            )
        return self._built[1]


def count_brackets(text: str) -> int:
    r"""``len(re.findall(r"\[.*?\]", text))``, IFEval's placeholder count, in linear time:
    that regex retries from every "[" of a line without "]" and takes minutes on 100k of
    "[[[[". A scan that finds no "]" after a "[" ends its line, as the regex would fail from
    every later "[" of the line too (``.`` stops only at "\n")."""
    count = 0
    for line in text.split("\n"):
        start = line.find("[")
        while start >= 0:
            end = line.find("]", start + 1)
            if end < 0:
                break
            count += 1
            start = line.find("[", end + 1)
    return count


def loose_variants(response: str) -> list[str]:
    """The eight texts ``test_instruction_following_loose`` tries, in its order."""
    lines = response.split("\n")
    first = "\n".join(lines[1:]).strip()
    last = "\n".join(lines[:-1]).strip()
    both = "\n".join(lines[1:-1]).strip()
    return [
        *[response, response.replace("*", ""), first, last, both],
        *[first.replace("*", ""), last.replace("*", ""), both.replace("*", "")],
    ]
