"""Constraints on what the response contains, its case, its edges and its format."""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Literal

from rewards.constraints import text as t
from rewards.constraints.base import Constraint, Phrase, PhraseList, Verdict

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
    """Every word or phrase appears, as whole words, in any case."""

    type: Literal["keywords"] = "keywords"
    include: PhraseList

    def check(self, text: str, partial: bool) -> Verdict:
        # On a prefix only a match the next characters cannot extend ("cat" -> "cats")
        # is final, and only all of them found is a final pass.
        if all(t.has_phrase(text, k, partial) for k in self.include):
            return "pass"
        return "undecided" if partial else "fail"

    def instruction(self) -> str:
        return f"Include {_quote_list(self.include, 'keyword', 'keywords')} in the response."


class ForbiddenWords(Constraint):
    """None of the words or phrases appears as whole words, in any case."""

    type: Literal["forbidden_words"] = "forbidden_words"
    words: PhraseList

    def check(self, text: str, partial: bool) -> Verdict:
        if any(t.has_phrase(text, w, partial) for w in self.words):
            return "fail"
        return "undecided" if partial else "pass"

    def instruction(self) -> str:
        return f"Do not include {_quote_list(self.words, 'word', 'words')} in the response."


class Lowercase(Constraint):
    """No uppercase letter anywhere; the language of the text is not checked."""

    type: Literal["lowercase"] = "lowercase"

    def check(self, text: str, partial: bool) -> Verdict:
        if any(ch.isupper() for ch in text):
            return "fail"
        return "undecided" if partial else "pass"

    def instruction(self) -> str:
        return (
            "Your entire response should be in lowercase letters. No capital letters are allowed."
        )


class Uppercase(Constraint):
    type: Literal["uppercase"] = "uppercase"

    def check(self, text: str, partial: bool) -> Verdict:
        if any(ch.islower() for ch in text):
            return "fail"
        return "undecided" if partial else "pass"

    def instruction(self) -> str:
        return (
            "Your entire response should be in capital letters. No lowercase letters are allowed."
        )


class NoCommas(Constraint):
    type: Literal["no_commas"] = "no_commas"

    def check(self, text: str, partial: bool) -> Verdict:
        if "," in text:
            return "fail"
        return "undecided" if partial else "pass"

    def instruction(self) -> str:
        return "Do not include any commas in your response."


class StartsWith(Constraint):
    """The response, after leading whitespace, starts with the phrase in any case; a
    phrase ending in a word character must end a word there ("Sure" is not "Surely")."""

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
    """The response ends with the phrase, as IFEval checks it: in any case, ignoring
    trailing whitespace and double quotes around the response. Undecided on a prefix,
    which may always go on."""

    type: Literal["ends_with"] = "ends_with"
    phrase: Phrase

    def check(self, text: str, partial: bool) -> Verdict:
        if partial:
            return "undecided"
        tail = text.strip().strip('"').lower()
        return "pass" if tail.endswith(self.phrase.strip().lower()) else "fail"

    def instruction(self) -> str:
        return (
            f"Finish your response with this exact phrase: {_show(self.phrase)} "
            "No other words should follow this phrase."
        )


# <<title>> on one line; no angle brackets inside keeps the match linear.
_TITLE = re.compile(r"<<([^\n<>]+)>>")


class Title(Constraint):
    type: Literal["title"] = "title"

    def check(self, text: str, partial: bool) -> Verdict:
        # A closed title cannot be undone by more text, so finding one is final.
        if any(m.group(1).strip() for m in _TITLE.finditer(text)):
            return "pass"
        return "undecided" if partial else "fail"

    def instruction(self) -> str:
        return (
            "Your answer must contain a title, wrapped in double angular brackets, "
            "such as <<poem of joy>>."
        )


@lru_cache(maxsize=64)
def _line_start_pattern(marker: str, settled: bool) -> re.Pattern[str]:
    word = t.phrase_pattern(marker, settled).pattern
    return re.compile(r"^[ \t*_]*" + word, re.IGNORECASE | re.MULTILINE)


class Postscript(Constraint):
    """A line starts with the marker (in any case, after indentation or markdown emphasis
    such as **P.S.**). Where the line sits is not checked."""

    type: Literal["postscript"] = "postscript"
    marker: Phrase = "P.S."

    def check(self, text: str, partial: bool) -> Verdict:
        if _line_start_pattern(self.marker, partial).search(text):
            return "pass"
        return "undecided" if partial else "fail"

    def instruction(self) -> str:
        return (
            "At the end of your response, please explicitly add a postscript "
            f"starting with {self.marker.strip()}"
        )


_FENCE_OPENINGS = ("```json", "```Json", "```JSON", "```")


class Json(Constraint):
    """The whole response parses as JSON, optionally inside a ``` or ```json fence, as
    IFEval accepts it. Undecided on a prefix: almost any prefix can still be completed."""

    type: Literal["json"] = "json"

    def check(self, text: str, partial: bool) -> Verdict:
        if partial:
            return "undecided"
        body = text.strip()
        for opening in _FENCE_OPENINGS:
            if body.startswith(opening):
                body = body.removeprefix(opening).removesuffix("```")
                break
        try:
            json.loads(body.strip())
        except (ValueError, RecursionError):
            # RecursionError: deeply nested arrays ("[[[[...") exhaust the C parser.
            return "fail"
        return "pass"

    def instruction(self) -> str:
        return (
            "Entire output should be wrapped in JSON format. "
            "You can use markdown ticks such as ```."
        )
