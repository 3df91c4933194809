"""Text measurements shared by the constraint kinds.

Every function here runs in time linear in the text: responses can be ~100k characters
and are checked at each step of a tree search. Regexes therefore avoid nested or
overlapping quantifiers, and start-of-run patterns use a lookbehind so a long run of one
character is scanned once rather than once per position.

On a prefix (``partial=True``) a count is a lower bound of the count in every
continuation of the text: only what the next characters cannot undo is counted.
"""

from __future__ import annotations

import re
from functools import lru_cache

_WORD = re.compile(r"\w+")

# A sentence ends at a run of . ! or ? (optionally closed by quotes or brackets) followed
# by whitespace. The lookbehind starts the match only at the first mark of a run, and the
# possessive quantifiers never give characters back, so a run of 100k dots is linear.
_SENTENCE_END = re.compile(r"(?<![.!?])[.!?]++[\"'”’)\]]*+\s+")

# Markdown bullets: "* item" or "- item", possibly indented.
_BULLET = re.compile(r"^[ \t]*[*-][ \t]+\S", re.MULTILINE)

# *highlighted* or **highlighted** on one line; the inner text is checked in Python so
# the pattern itself has a single way to match.
_HIGHLIGHT = re.compile(r"\*\*?([^\n*]+)\*\*?")

# [placeholder] on one line, with no brackets inside.
_PLACEHOLDER = re.compile(r"\[([^\[\]\n]*)\]")

# A markdown thematic break (***, ---, ___), IFEval's paragraph divider among them.
_DIVIDER = re.compile(r"[ \t]*([*_-])(?:[ \t]*\1){2,}[ \t]*")


def count_words(text: str) -> int:
    """Runs of word characters, as IFEval counts words (nltk's RegexpTokenizer(r"\\w+")):
    "don't" is two words. Appending text only extends the last run or adds runs, so the
    count of a prefix is already a lower bound."""
    return sum(1 for _ in _WORD.finditer(text))


def count_sentences(text: str) -> int:
    """Pieces between sentence ends that contain a word character. Abbreviations such as
    "e.g. this" count as a break, a known approximation. A prefix's pieces can only be
    split further or extended, so its count is a lower bound."""
    return sum(1 for piece in _SENTENCE_END.split(text) if _WORD.search(piece))


def settled_lines(text: str, partial: bool) -> str:
    """The part of the text whose lines are finished. On a prefix the last line may still
    grow into something else ("**" into a divider, "[a" into a placeholder), so line-based
    counts only look at the lines before the last newline."""
    if not partial:
        return text
    cut = text.rfind("\n")
    return text[: cut + 1] if cut >= 0 else ""


def count_paragraphs(text: str, partial: bool) -> int:
    """Blocks of lines separated by blank lines or by markdown divider lines (``***`` as
    IFEval asks for, also ``---`` and ``___``); both layouts count the same way."""
    count = 0
    inside = False
    for line in settled_lines(text, partial).splitlines():
        separator = not line.strip() or _DIVIDER.fullmatch(line) is not None
        if not separator and not inside:
            count += 1
        inside = not separator
    return count


def count_bullets(text: str, partial: bool) -> int:
    return sum(1 for _ in _BULLET.finditer(settled_lines(text, partial)))


def count_highlights(text: str, partial: bool) -> int:
    """*spans* with non-blank text inside, as IFEval counts highlighted sections."""
    spans = _HIGHLIGHT.finditer(settled_lines(text, partial))
    return sum(1 for m in spans if m.group(1).strip())


def count_placeholders(text: str, partial: bool) -> int:
    spans = _PLACEHOLDER.finditer(settled_lines(text, partial))
    return sum(1 for m in spans if m.group(1).strip())


@lru_cache(maxsize=256)
def phrase_pattern(phrase: str, settled: bool) -> re.Pattern[str]:
    """A case-insensitive whole-word pattern for a word or phrase; any whitespace in the
    phrase matches any run of whitespace. With ``settled`` a match must be followed by a
    character that ends the word, so it is final on a prefix ("bad" at the very end
    of a prefix may still become "badge"). Edges that are not word characters ("C++",
    "P.S.") need no boundary."""
    words = phrase.split()
    body = r"\s+".join(re.escape(w) for w in words)
    head = r"(?<!\w)" if _WORD.match(words[0][0]) else ""
    tail = ""
    if _WORD.match(words[-1][-1]):
        tail = r"(?=\W)" if settled else r"(?!\w)"
    return re.compile(head + body + tail, re.IGNORECASE)


def count_phrase(text: str, phrase: str, partial: bool) -> int:
    """Non-overlapping whole-word occurrences. On a prefix only settled matches count; a
    continuation keeps them, except that a match reaching past the end of the prefix may
    swallow one of them, and it is then a match itself, so the count never drops."""
    return sum(1 for _ in phrase_pattern(phrase, partial).finditer(text))


def has_phrase(text: str, phrase: str, partial: bool) -> bool:
    return phrase_pattern(phrase, partial).search(text) is not None
