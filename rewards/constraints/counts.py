"""Constraints on how many times something occurs (IFEval's length and format counts).

Each kind only says what it counts; ``Counted`` turns the count into a verdict and the
count arguments into words.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field

from rewards.constraints import text as t
from rewards.constraints.base import Counted, Phrase


class WordCount(Counted):
    type: Literal["word_count"] = "word_count"

    def measure(self, text: str, partial: bool) -> int:
        return t.count_words(text)

    def instruction(self) -> str:
        return f"Answer with {self.amount('word', 'words')}."


class SentenceCount(Counted):
    type: Literal["sentence_count"] = "sentence_count"

    def measure(self, text: str, partial: bool) -> int:
        return t.count_sentences(text)

    def instruction(self) -> str:
        return f"Your response should contain {self.amount('sentence', 'sentences')}."


class ParagraphCount(Counted):
    """Paragraphs are separated by blank lines; IFEval's ``***`` divider lines (and the
    other markdown dividers) separate them too, so a response in either layout counts."""

    type: Literal["paragraph_count"] = "paragraph_count"

    def measure(self, text: str, partial: bool) -> int:
        return t.count_paragraphs(text, partial)

    def instruction(self) -> str:
        amount = self.amount("paragraph", "paragraphs")
        return f"Your response should contain {amount}. Separate paragraphs with a blank line."


class BulletPoints(Counted):
    type: Literal["bullet_points"] = "bullet_points"

    def measure(self, text: str, partial: bool) -> int:
        return t.count_bullets(text, partial)

    def instruction(self) -> str:
        amount = self.amount("bullet point", "bullet points")
        return (
            f"Your answer must contain {amount}. "
            "Use markdown bullet points such as: * This is a point."
        )


class HighlightedSections(Counted):
    type: Literal["highlighted_sections"] = "highlighted_sections"

    def measure(self, text: str, partial: bool) -> int:
        return t.count_highlights(text, partial)

    def instruction(self) -> str:
        amount = self.amount("section", "sections")
        return f"Highlight {amount} in your answer with markdown, i.e. *highlighted section*."


class Placeholders(Counted):
    type: Literal["placeholders"] = "placeholders"

    def measure(self, text: str, partial: bool) -> int:
        return t.count_placeholders(text, partial)

    def instruction(self) -> str:
        amount = self.amount("placeholder", "placeholders")
        return (
            f"The response must contain {amount} represented by square brackets, such as [address]."
        )


class KeywordFrequency(Counted):
    """Whole-word, case-insensitive occurrences of a word or phrase."""

    type: Literal["keyword_frequency"] = "keyword_frequency"
    keyword: Phrase

    def measure(self, text: str, partial: bool) -> int:
        return t.count_phrase(text, self.keyword, partial)

    def instruction(self) -> str:
        amount = self.amount("time", "times")
        return f'In your response, the word "{self.keyword}" should appear {amount}.'


def _one_letter(value: str) -> str:
    if not value.isalpha():
        raise ValueError("must be a letter")
    return value


class LetterFrequency(Counted):
    """Occurrences of one letter, either case, anywhere (inside words too)."""

    type: Literal["letter_frequency"] = "letter_frequency"
    letter: Annotated[str, Field(min_length=1, max_length=1), AfterValidator(_one_letter)]

    def measure(self, text: str, partial: bool) -> int:
        # casefold() can change lengths ("ß" -> "ss"), lower() on both sides is enough here.
        return text.lower().count(self.letter.lower())

    def instruction(self) -> str:
        amount = self.amount("time", "times")
        return f'In your response, the letter "{self.letter}" should appear {amount}.'
