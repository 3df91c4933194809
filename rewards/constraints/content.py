"""Constraints on what the response contains, its case, its edges and its format.

Each kind but ``starts_with`` is one of IFEval's instructions and is decided by it:

- keywords: each keyword is found as a case-insensitive regex, so as a substring ("sun"
  in "sunny");
- forbidden words: none found as a whole word (``\\b...\\b``), in any case;
- lowercase / uppercase: Python's ``islower()`` / ``isupper()`` on the whole response (at
  least one cased letter, none of the other case) and langdetect says English;
- no commas; a title ``<<...>>`` with non-blank text on one line;
- ends with: the response, stripped of whitespace and then of double quotes, ends with the
  phrase in any case;
- postscript: the marker anywhere (not only at a line start), in any case; "P.S." also
  accepts "P. S." and "P.P.S" accepts "P. P. S";
- JSON: the response parses as JSON once stripped of a leading ```json/```Json/```JSON/```
  and a trailing ```.

``starts_with`` has no IFEval counterpart and keeps its own check.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from rewards.constraints.base import Constraint, Pattern, PatternList, Phrase, Verdict

_WORD_CHAR = re.compile(r"\w")


def _quote_list(phrases: list[str], singular: str, plural: str) -> str:
    """'the keyword "a"' or 'the keywords "a", "b"'."""
    noun = singular if len(phrases) == 1 else plural
    return f"the {noun} " + ", ".join(f'"{p}"' for p in phrases)


def _show(phrase: str) -> str:
    """A phrase that ends an instruction's sentence: bare when it ends in . ? or ! itself,
    else quoted and followed by a period, which the quotes keep out of the phrase."""
    phrase = phrase.strip()
    return phrase if phrase[-1] in ".?!" else f'"{phrase}".'


class Keywords(Constraint):
    """Every word or phrase appears, as a case-insensitive substring (IFEval's regex)."""

    type: Literal["keywords"] = "keywords"
    include: PatternList

    def ifeval(self) -> list[tuple[str, dict[str, Any]]]:
        return [("keywords:existence", {"keywords": list(self.include)})]

    def instruction(self) -> str:
        return f"Include {_quote_list(self.include, 'keyword', 'keywords')} in the response."


class ForbiddenWords(Constraint):
    """None of the words or phrases appears as whole words, in any case."""

    type: Literal["forbidden_words"] = "forbidden_words"
    words: PatternList

    def ifeval(self) -> list[tuple[str, dict[str, Any]]]:
        return [("keywords:forbidden_words", {"forbidden_words": list(self.words)})]

    def instruction(self) -> str:
        return f"Do not include {_quote_list(self.words, 'word', 'words')} in the response."


class Lowercase(Constraint):
    type: Literal["lowercase"] = "lowercase"

    def ifeval(self) -> list[tuple[str, dict[str, Any]]]:
        return [("change_case:english_lowercase", {})]

    def instruction(self) -> str:
        return (
            "Your entire response should be in English, and in all lowercase letters. "
            "No capital letters are allowed."
        )


class Uppercase(Constraint):
    type: Literal["uppercase"] = "uppercase"

    def ifeval(self) -> list[tuple[str, dict[str, Any]]]:
        return [("change_case:english_capital", {})]

    def instruction(self) -> str:
        return "Your entire response should be in English, and in all capital letters."


class NoCommas(Constraint):
    type: Literal["no_commas"] = "no_commas"

    def ifeval(self) -> list[tuple[str, dict[str, Any]]]:
        return [("punctuation:no_comma", {})]

    def instruction(self) -> str:
        return "Do not include any commas in your response."


class StartsWith(Constraint):
    """The response, after leading whitespace, starts with the phrase in any case; a
    phrase ending in a word character must end a word there ("Sure" is not "Surely").
    The project's own kind: IFEval has no such instruction."""

    type: Literal["starts_with"] = "starts_with"
    phrase: Phrase

    def check(self, text: str, partial: bool) -> Verdict:
        head = text.lstrip()
        target = self.phrase.strip().lower()
        if len(head) < len(target):
            if partial and target.startswith(head.lower()):
                return "undecided"
            return "fail"
        if head[: len(target)].lower() != target:
            return "fail"
        if not _WORD_CHAR.match(target[-1]):
            return "pass"
        if len(head) == len(target):
            # The next character decides whether the word ends here.
            return "undecided" if partial else "pass"
        return "fail" if _WORD_CHAR.match(head[len(target)]) else "pass"

    def instruction(self) -> str:
        if len(self.phrase.split()) == 1 and _WORD_CHAR.match(self.phrase.strip()[-1]):
            return f"Start your response with the word {self.phrase.strip()}."
        return f"Start your response with this exact phrase: {_show(self.phrase)}"


class EndsWith(Constraint):
    type: Literal["ends_with"] = "ends_with"
    phrase: Phrase

    def ifeval(self) -> list[tuple[str, dict[str, Any]]]:
        return [("startend:end_checker", {"end_phrase": self.phrase})]

    def instruction(self) -> str:
        return (
            f"Finish your response with this exact phrase: {_show(self.phrase)} "
            "No other words should follow this phrase."
        )


class Title(Constraint):
    type: Literal["title"] = "title"

    def ifeval(self) -> list[tuple[str, dict[str, Any]]]:
        return [("detectable_format:title", {})]

    def instruction(self) -> str:
        return (
            "Your answer must contain a title, wrapped in double angular brackets, "
            "such as <<poem of joy>>."
        )


class Postscript(Constraint):
    type: Literal["postscript"] = "postscript"
    marker: Pattern = "P.S."

    def ifeval(self) -> list[tuple[str, dict[str, Any]]]:
        return [("detectable_content:postscript", {"postscript_marker": self.marker})]

    def instruction(self) -> str:
        return (
            "At the end of your response, please explicitly add a postscript "
            f"starting with {self.marker.strip()}"
        )


class Json(Constraint):
    type: Literal["json"] = "json"

    def ifeval(self) -> list[tuple[str, dict[str, Any]]]:
        return [("detectable_format:json_format", {})]

    def instruction(self) -> str:
        return (
            "Entire output should be wrapped in JSON format. "
            "You can use markdown ticks such as ```."
        )
