"""Constraints on how many times something occurs, each one of IFEval's counts.

Each kind names its IFEval instruction and argument names; ``Counted`` turns ``count``,
``min`` and ``max`` into IFEval's "at least" / "less than" checks and the arguments into
words. What is counted is IFEval's, not a rewording of it:

- words: runs of word characters (nltk's ``RegexpTokenizer(r"\\w+")``);
- sentences: nltk's punkt sentences, so "Dr. Smith" is one sentence;
- paragraphs: pieces between ``***`` dividers (blank lines do not separate them), an
  empty piece between two dividers failing the check; an exact count;
- bullet points: lines that start (after whitespace) with ``*`` not followed by ``*``,
  or with ``-`` (a ``---`` rule counts too); an exact count;
- highlighted sections: ``*text*`` and ``**text**`` spans on one line with non-blank text,
  at least ``min``;
- placeholders: ``[...]`` spans on one line, ``[]`` included, at least ``min``;
- keyword frequency: case-insensitive regex matches, so substrings count ("cat" in
  "category");
- letter frequency: occurrences of the letter in either case, anywhere.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field

from rewards.constraints.base import Counted, Pattern


class WordCount(Counted):
    type: Literal["word_count"] = "word_count"
    ifeval_id: ClassVar[str] = "length_constraints:number_words"
    number_arg: ClassVar[str] = "num_words"
    relation_arg: ClassVar[str | None] = "relation"

    def instruction(self) -> str:
        return f"Answer with {self.amount('word', 'words')}."


class SentenceCount(Counted):
    type: Literal["sentence_count"] = "sentence_count"
    ifeval_id: ClassVar[str] = "length_constraints:number_sentences"
    number_arg: ClassVar[str] = "num_sentences"
    relation_arg: ClassVar[str | None] = "relation"

    def instruction(self) -> str:
        return f"Your response should contain {self.amount('sentence', 'sentences')}."


class ParagraphCount(Counted):
    type: Literal["paragraph_count"] = "paragraph_count"
    ifeval_id: ClassVar[str] = "length_constraints:number_paragraphs"
    number_arg: ClassVar[str] = "num_paragraphs"
    forms: ClassVar[str] = "count"

    def instruction(self) -> str:
        amount = self.amount("paragraph", "paragraphs")
        return f"There should be {amount}. Paragraphs are separated with the markdown divider: ***"


class BulletPoints(Counted):
    type: Literal["bullet_points"] = "bullet_points"
    ifeval_id: ClassVar[str] = "detectable_format:number_bullet_lists"
    number_arg: ClassVar[str] = "num_bullets"
    forms: ClassVar[str] = "count"

    def instruction(self) -> str:
        amount = self.amount("bullet point", "bullet points")
        return (
            f"Your answer must contain {amount}. "
            "Use markdown bullet points such as: * This is a point."
        )


class HighlightedSections(Counted):
    type: Literal["highlighted_sections"] = "highlighted_sections"
    ifeval_id: ClassVar[str] = "detectable_format:number_highlighted_sections"
    number_arg: ClassVar[str] = "num_highlights"
    forms: ClassVar[str] = "min"

    def instruction(self) -> str:
        amount = self.amount("section", "sections")
        return f"Highlight {amount} in your answer with markdown, i.e. *highlighted section*."


class Placeholders(Counted):
    type: Literal["placeholders"] = "placeholders"
    ifeval_id: ClassVar[str] = "detectable_content:number_placeholders"
    number_arg: ClassVar[str] = "num_placeholders"
    forms: ClassVar[str] = "min"

    def instruction(self) -> str:
        amount = self.amount("placeholder", "placeholders")
        return (
            f"The response must contain {amount} represented by square brackets, such as [address]."
        )


class KeywordFrequency(Counted):
    """Case-insensitive occurrences of a word or phrase, as a substring (IFEval's regex)."""

    type: Literal["keyword_frequency"] = "keyword_frequency"
    ifeval_id: ClassVar[str] = "keywords:frequency"
    number_arg: ClassVar[str] = "frequency"
    relation_arg: ClassVar[str | None] = "relation"
    extra_args: ClassVar[tuple[str, ...]] = ("keyword",)
    keyword: Pattern

    def instruction(self) -> str:
        amount = self.amount("time", "times")
        return f'In your response, the word "{self.keyword}" should appear {amount}.'


class LetterFrequency(Counted):
    """Occurrences of one letter, either case, anywhere (inside words too)."""

    type: Literal["letter_frequency"] = "letter_frequency"
    ifeval_id: ClassVar[str] = "keywords:letter_frequency"
    number_arg: ClassVar[str] = "let_frequency"
    relation_arg: ClassVar[str | None] = "let_relation"
    extra_args: ClassVar[tuple[str, ...]] = ("letter",)
    # An ASCII letter: for anything else IFEval's check counts a randomly drawn letter.
    letter: Annotated[str, Field(pattern="^[A-Za-z]$")]

    def instruction(self) -> str:
        amount = self.amount("time", "times")
        return f'In your response, the letter "{self.letter}" should appear {amount}.'
