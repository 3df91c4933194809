"""Rule-based constraints: verdicts on complete texts and prefixes, validation, the reward
arithmetic, linear time on long texts, and the shipped verifiable prompt set."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

import pytest

from rewards.constraints import (
    KINDS,
    Constraint,
    ConstraintsReward,
    Verdict,
    instructions,
    parse_constraints,
)
from rewards.constraints.reward import INLINE_CHARS
from search.errors import InvalidRequest

ROOT = Path(__file__).resolve().parents[2]
PROMPTS = ROOT / "tools" / "data" / "verifiable_prompts.jsonl"
CONV = [{"role": "user", "content": "hi"}]


def one(spec: dict[str, Any]) -> Constraint:
    return parse_constraints([spec])[0]


WC3 = {"type": "word_count", "max": 3}
SC2 = {"type": "sentence_count", "max": 2}
PC2 = {"type": "paragraph_count", "count": 2}
BP2 = {"type": "bullet_points", "count": 2}
HL2 = {"type": "highlighted_sections", "min": 2}
PH1 = {"type": "placeholders", "min": 1}
KF2 = {"type": "keyword_frequency", "keyword": "cat", "count": 2}
LF2 = {"type": "letter_frequency", "letter": "a", "max": 2}
KW = {"type": "keywords", "include": ["ice cream", "dog"]}
FW = {"type": "forbidden_words", "words": ["bad"]}
LOW = {"type": "lowercase"}
UP = {"type": "uppercase"}
NC = {"type": "no_commas"}
SW = {"type": "starts_with", "phrase": "Sure"}
SW3 = {"type": "starts_with", "phrase": "Once upon a time"}
EW = {"type": "ends_with", "phrase": "Any other questions?"}
TI = {"type": "title"}
PS = {"type": "postscript"}
JS = {"type": "json"}
FR = {"type": "language", "code": "fr"}
IF_TITLE = {"instruction_id": "detectable_format:title", "kwargs": {}}
IF_WORDS = {
    "instruction_id": "length_constraints:number_words",
    "kwargs": {"num_words": 5, "relation": "less than"},
}
FRENCH = "Bonjour, je suis très content de vous voir aujourd'hui dans notre belle ville."

# (constraint, text, partial, verdict): IFEval's verdicts (rewards/constraints/ifeval.py)
CASES: list[tuple[dict[str, Any], str, bool, Verdict]] = [
    # word_count: runs of word characters, as IFEval counts them
    (WC3, "one two three.", False, "pass"),
    (WC3, "one two three four", False, "fail"),
    (WC3, "don't stop", False, "pass"),  # don, t, stop
    (WC3, "one two three four", True, "fail"),  # an exceeded upper bound is final
    (WC3, "one two", True, "undecided"),
    ({"type": "word_count", "min": 2}, "one two", True, "pass"),  # a reached minimum is final
    ({"type": "word_count", "count": 2}, "one two", True, "undecided"),
    ({"type": "word_count", "min": 2}, "one", False, "fail"),
    ({"type": "word_count", "max": 3}, "   ", False, "fail"),  # IFEval fails a blank answer
    # sentence_count: nltk's punkt, which knows abbreviations; undecided on any prefix
    (SC2, "Hi there. How are you?", False, "pass"),
    (SC2, "Hi there. How are you? Fine!", False, "fail"),
    (SC2, "Hi. Ho. Ha", True, "undecided"),
    ({"type": "sentence_count", "count": 1}, "I have 3.5 apples.", False, "pass"),
    ({"type": "sentence_count", "count": 1}, "Dr. Smith arrived at 5 p.m. today.", False, "pass"),
    ({"type": "sentence_count", "count": 1}, "The U.S. economy grew.", False, "pass"),
    ({"type": "sentence_count", "min": 2}, "One! Two", True, "undecided"),
    # paragraph_count: pieces between *** dividers, exactly; blank lines do not separate
    (PC2, "First.\n***\nSecond.", False, "pass"),
    (PC2, "Intro line.\n\nMore of intro.\n***\nSecond.", False, "pass"),
    (PC2, "First.\n\nSecond.", False, "fail"),
    (PC2, "A.\n***\n***\nB.", False, "fail"),  # an empty piece between dividers
    (PC2, "***\nA.\n***\nB.\n***", False, "pass"),  # empty first and last pieces drop
    (PC2, "a\n***\nb", True, "undecided"),
    # bullet_points: lines starting with * (not **) or -, exactly
    (BP2, "Items:\n* one\n  - two", False, "pass"),
    (BP2, "*one\n*two", False, "pass"),
    (BP2, "* one\n* two\n---\nEnd.", False, "fail"),  # the rule is a third "-" line
    (BP2, "* a\n* b", True, "undecided"),
    # highlighted_sections: at least min
    (HL2, "Read *this* and **that**.", False, "pass"),
    (HL2, "Read *this* and ** ** and * that", False, "fail"),
    (HL2, "*a* *b*", True, "pass"),
    (HL2, "*a* *b", True, "undecided"),
    # placeholders: [..] on a line, [] included
    (PH1, "Dear [name],", False, "pass"),
    (PH1, "Fill in [] here", False, "pass"),
    (PH1, "Dear [a\nb]", False, "fail"),
    (PH1, "Dear [name", True, "undecided"),
    (PH1, "Dear [name]", True, "pass"),
    # keyword_frequency: case-insensitive regex matches, so substrings count
    (KF2, "Cat and cat.", False, "pass"),
    (KF2, "cats and category", False, "pass"),
    (
        {"type": "keyword_frequency", "keyword": "data", "min": 3},
        "data, database and dataset",
        False,
        "pass",
    ),
    (KF2, "cat cat cat", True, "fail"),
    (KF2, "cat, ca", True, "undecided"),
    ({"type": "keyword_frequency", "keyword": "cat", "min": 2}, "cat cat", True, "pass"),
    # letter_frequency
    (LF2, "a cAt", False, "pass"),
    (LF2, "A banana", False, "fail"),
    (LF2, "aaa", True, "fail"),
    (LF2, "aa", True, "undecided"),
    # keywords: all must appear, as substrings, in any case
    (KW, "I like ice cream and my DOG.", False, "pass"),
    (KW, "I like ice\n  cream and my dog", False, "fail"),  # the space is a literal space
    (KW, "I like icecream and dogs", False, "fail"),
    (KW, "ice cream and dogs", False, "pass"),
    (KW, "ice cream and do", True, "undecided"),
    (KW, "ice cream and dog", True, "pass"),
    ({"type": "keywords", "include": ["sun"]}, "What a sunny day.", False, "pass"),
    # forbidden_words: whole words, in any case
    (FW, "a badge", False, "pass"),
    (FW, "too BAD.", False, "fail"),
    (FW, "too bad", False, "fail"),
    (FW, "too bad", True, "undecided"),  # may still become "too badly"
    (FW, "too bad ", True, "fail"),
    (FW, "fine", True, "undecided"),
    # lowercase / uppercase: islower()/isupper() of the whole answer, and English
    (LOW, "all lower, and written in plain english words.", False, "pass"),
    (LOW, "not Lower", False, "fail"),
    (LOW, "123 456", False, "fail"),  # no cased letter: islower() is False
    (LOW, "bonjour, je suis très content de vous voir aujourd'hui.", False, "fail"),
    (LOW, "Hi", True, "fail"),
    (LOW, "hi", True, "undecided"),
    (UP, "THIS IS ALL WRITTEN IN CAPITAL LETTERS, IN ENGLISH.", False, "pass"),
    (UP, "CAPs", False, "fail"),
    (UP, "ALl", True, "fail"),
    (UP, "ALL", True, "undecided"),
    # no_commas
    (NC, "no commas here", False, "pass"),
    (NC, "one, two", False, "fail"),
    (NC, "one, tw", True, "fail"),
    (NC, "one", True, "undecided"),
    # starts_with (the project's own): any case, after leading whitespace, ends a word
    (SW, "  sure thing", False, "pass"),
    (SW, "Sure", False, "pass"),
    (SW, "Surely", False, "fail"),
    (SW, "No.", False, "fail"),
    (SW, "", False, "fail"),
    (SW, "", True, "undecided"),
    (SW, "Su", True, "undecided"),
    (SW, "Sure", True, "undecided"),  # may still become "Surely"
    (SW, "Sure,", True, "pass"),
    (SW, "Surel", True, "fail"),
    (SW, "No", True, "fail"),
    (SW3, "Once upon", True, "undecided"),
    (SW3, "Once upon a time, there", False, "pass"),
    # ends_with: IFEval's rule, any case, trailing whitespace and quotes ignored
    (EW, "Done. Any other questions?  \n", False, "pass"),
    (EW, '"Done. any other questions?"', False, "pass"),
    (EW, "Any other questions? Yes.", False, "fail"),
    (EW, "Done. Any other questions?", True, "undecided"),
    # title
    (TI, "<<My Poem>>\nRoses.", False, "pass"),
    (TI, "<< >> and <My Poem>", False, "fail"),
    (TI, "<<My Poem>>", True, "pass"),
    (TI, "<<My Po", True, "undecided"),
    # postscript: the marker anywhere, in any case; "P. S." too
    (PS, "Hi.\nP.S. bye", False, "pass"),
    (PS, "Hi.\n**P.S.** bye", False, "pass"),
    (PS, "Bye.\nP. S. see you", False, "pass"),
    (PS, "Bye. P.S. see you", False, "pass"),
    (PS, "Bye. PS see you", False, "fail"),
    (PS, "Hi.\nP.S", True, "undecided"),
    (PS, "Hi.\nP.S.", True, "pass"),
    ({"type": "postscript", "marker": "P.P.S"}, "Hi.\nP. P. S: more", False, "pass"),
    # json
    (JS, '{"a": 1}', False, "pass"),
    (JS, '```json\n{"a": [1, 2]}\n```', False, "pass"),
    (JS, '```\n["x"]\n```', False, "pass"),
    (JS, 'Here: {"a": 1}', False, "fail"),
    (JS, '{"a": 1}', True, "undecided"),
    (JS, "[" * 100_000, False, "fail"),  # too deep for the parser: a fail, not a crash
    # language: langdetect's answer; a text it cannot read passes, as in IFEval
    (FR, FRENCH, False, "pass"),
    (FR, "Hello, I am very happy to see you today in our beautiful city.", False, "fail"),
    (FR, "123 !!", False, "pass"),
    (FR, FRENCH, True, "undecided"),
    # IFEval's own form: an instruction id and its kwargs, as in IFEval's data
    (IF_TITLE, "<<A Title>> text", False, "pass"),
    (IF_TITLE, "no title", False, "fail"),
    (IF_WORDS, "one two three four five", False, "fail"),
    (IF_WORDS, "one two three four five", True, "fail"),
    (IF_WORDS, "one two", True, "undecided"),
]


@pytest.mark.parametrize(("spec", "text", "partial", "verdict"), CASES)
def test_check(spec: dict[str, Any], text: str, partial: bool, verdict: Verdict) -> None:
    assert one(spec).check(text, partial) == verdict


def test_every_kind_has_cases() -> None:
    assert {spec.get("type", "ifeval") for spec, *_ in CASES} == set(KINDS)


# Pieces that sit on the edges the checkers decide on: words that grow ("cat" -> "cats",
# "bad" -> "badge"), markers that complete ("*" -> "**", "P.S" -> "P.S."), line breaks.
PIECES = [
    *["cat", "cats", "bad", "badge", "Sure", "Surely", "ice", "cream", "dog", "dogs", "A"],
    *["a", "x", "1", "3.5", "e.g.", "P.S.", "PS", "PSA", "*", "**", "***", "-", "[", "]"],
    *["<<", ">>", "{", "}", '"', ",", ".", "!", "?", " ", "  ", "\t", "\n", "\n\n"],
]
FUZZ_SPECS: list[dict[str, Any]] = [
    *[WC3, {"type": "word_count", "min": 4}, SC2, {"type": "sentence_count", "min": 2}],
    *[PC2, {"type": "bullet_points", "count": 1}, BP2],
    *[{"type": "highlighted_sections", "min": 1}, HL2, {"type": "placeholders", "min": 2}, PH1],
    *[{"type": "keyword_frequency", "keyword": "ice cream", "max": 1}, KF2, LF2, KW],
    *[{"type": "forbidden_words", "words": ["bad", "P.S."]}, LOW, UP, NC, SW],
    *[{"type": "starts_with", "phrase": "ice cream"}, {"type": "ends_with", "phrase": "dog."}],
    *[TI, PS, {"type": "postscript", "marker": "PS"}, JS],
    *[{"type": "letter_frequency", "letter": "a", "min": 3}, IF_WORDS],
]


def test_final_verdicts_on_prefixes_never_change() -> None:
    # Every prefix's final verdict must be the complete text's verdict.
    constraints = [one(spec) for spec in FUZZ_SPECS]
    rng = random.Random(0)
    for _ in range(300):
        text = "".join(rng.choice(PIECES) for _ in range(rng.randint(1, 30)))
        for constraint in constraints:
            verdict = constraint.check(text, partial=False)
            assert verdict != "undecided"
            for end in range(len(text) + 1):
                early = constraint.check(text[:end], partial=True)
                assert early in ("undecided", verdict), (constraint, text[:end], text)


# -- instructions ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "text"),
    [
        (
            LOW,
            "Your entire response should be in English, and in all lowercase letters. "
            "No capital letters are allowed.",
        ),
        (
            IF_TITLE,
            "Your answer must contain a title, wrapped in double angular brackets, "
            "such as <<poem of joy>>.",
        ),
        ({"type": "word_count", "max": 50}, "Answer with at most 50 words."),
        ({"type": "word_count", "count": 1}, "Answer with exactly 1 word."),
        (
            {"type": "sentence_count", "min": 2, "max": 4},
            "Your response should contain at least 2 and at most 4 sentences.",
        ),
        (NC, "Do not include any commas in your response."),
        (
            {"type": "ends_with", "phrase": "Is there anything else I can help with?"},
            "Finish your response with this exact phrase: Is there anything else I can help "
            "with? No other words should follow this phrase.",
        ),
        (
            {"type": "ends_with", "phrase": "Best wishes"},
            'Finish your response with this exact phrase: "Best wishes". No other words '
            "should follow this phrase.",
        ),
        (SW, "Start your response with the word Sure."),
        (SW3, 'Start your response with this exact phrase: "Once upon a time".'),
        (KW, 'Include the keywords "ice cream", "dog" in the response.'),
        (KF2, 'In your response, the word "cat" should appear exactly 2 times.'),
        (PS, "At the end of your response, please explicitly add a postscript starting with P.S."),
    ],
)
def test_instruction(spec: dict[str, Any], text: str) -> None:
    assert one(spec).instruction() == text


def test_instructions_join_as_one_paragraph() -> None:
    constraints = parse_constraints([NC, {"type": "word_count", "max": 50}])
    assert instructions(constraints) == (
        "Do not include any commas in your response. Answer with at most 50 words."
    )


# -- validation --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("items", "param", "fragment"),
    [
        ([], "search.constraints", "non-empty list"),
        ({"type": "no_commas"}, "search.constraints", "non-empty list"),
        ([NC] * 17, "search.constraints", "at most 16"),
        ([NC, "no_commas"], "search.constraints[1]", "must be an object"),
        ([{"type": "shout"}], "search.constraints[0]", "unknown constraint type 'shout'"),
        ([{"max": 3}], "search.constraints[0]", "missing 'type'"),
        ([NC, {"type": "word_count"}], "search.constraints[1]", "give count, min or max"),
        ([{"type": "word_count", "min": 5, "max": 3}], "search.constraints[0]", "min (5)"),
        ([{"type": "word_count", "count": 3, "max": 3}], "search.constraints[0]", "not both"),
        ([{"type": "word_count", "max": -1}], "search.constraints[0]", "max"),
        ([{"type": "word_count", "max": 100_001}], "search.constraints[0]", "max"),
        ([{"type": "word_count", "max": "5"}], "search.constraints[0]", "max"),
        ([{"type": "word_count", "max": True}], "search.constraints[0]", "max"),
        ([{"type": "no_commas", "strict": True}], "search.constraints[0]", "'strict'"),
        ([{"type": "keywords"}], "search.constraints[0]", "needs argument 'include'"),
        ([{"type": "keywords", "include": []}], "search.constraints[0]", "include"),
        ([{"type": "keywords", "include": ["a"] * 21}], "search.constraints[0]", "include"),
        ([{"type": "keywords", "include": ["a", " "]}], "search.constraints[0]", "include[1]"),
        ([{"type": "starts_with", "phrase": "x" * 201}], "search.constraints[0]", "phrase"),
        (
            [{"type": "letter_frequency", "letter": "ab", "max": 1}],
            "search.constraints[0]",
            "letter",
        ),
        ([{"type": "language", "code": "xx"}], "search.constraints[0]", "'xx'"),
        ([{"type": "paragraph_count", "min": 2}], "search.constraints[0]", "give count"),
        ([{"type": "placeholders", "count": 2}], "search.constraints[0]", "give min"),
        ([{"type": "keywords", "include": ["(a+)+$"]}], "search.constraints[0]", "regex"),
        ([{"instruction_id": "keywords:nope"}], "search.constraints[0]", "instruction_id"),
        (
            [{"instruction_id": "length_constraints:number_words", "kwargs": {"num_words": 5}}],
            "search.constraints[0]",
            "needs argument 'relation'",
        ),
        (
            [{"instruction_id": "punctuation:no_comma", "kwargs": {"strict": True}}],
            "search.constraints[0]",
            "not 'strict'",
        ),
        (
            [
                {
                    "instruction_id": "keywords:frequency",
                    "kwargs": {"keyword": "a", "frequency": 0, "relation": "at least"},
                }
            ],
            "search.constraints[0]",
            "frequency must be an integer",
        ),
        (
            [{"instruction_id": "keywords:existence", "kwargs": {"keywords": ["a|b"]}}],
            "search.constraints[0]",
            "regex",
        ),
    ],
)
def test_invalid(items: object, param: str, fragment: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_constraints(items)
    assert info.value.param == param
    assert fragment in info.value.message


# -- the reward --------------------------------------------------------------------------


async def test_score_counts_undecided_as_half() -> None:
    reward = ConstraintsReward(parse_constraints([NC, LOW, EW]))
    # no commas: fail (final); lowercase: undecided; ends_with: undecided on a prefix
    assert reward.verdicts("hello, world", partial=True) == ["fail", "undecided", "undecided"]
    assert reward.score_text("hello, world", partial=True) == pytest.approx(1 / 3)
    done = "hello world. any other questions?"
    scores = await reward.score(CONV, ["hello, world", done, "Hello, there"], partial=False)
    assert scores == pytest.approx([1 / 3, 1.0, 0.0])
    assert await reward.score(CONV, ["hello world"], partial=True) == [0.5]
    assert reward.passed(done)
    assert not reward.passed("hello, world")
    assert reward.bounds == (0.0, 1.0)


async def test_long_texts_are_scored_off_the_event_loop() -> None:
    # Over INLINE_CHARS the checks run in a worker thread, with the same scores.
    reward = ConstraintsReward(parse_constraints([NC, WC3]))
    long_text = "word " * 2_000 + ", end"
    assert len(long_text) > INLINE_CHARS
    assert await reward.score(CONV, [long_text, "one two"]) == [0.0, 1.0]
    assert reward.score_text(long_text, False) == 0.0


def test_describe_round_trips() -> None:
    specs = [{"type": "word_count", "min": 2, "max": 5}, KW, PS, NC]
    described = ConstraintsReward(parse_constraints(specs)).describe()
    assert described[0] == {"type": "word_count", "min": 2, "max": 5}
    assert described[2] == {"type": "postscript", "marker": "P.S."}
    assert parse_constraints(described) == parse_constraints(specs)


def test_empty_reward_rejected() -> None:
    with pytest.raises(ValueError, match="at least one"):
        ConstraintsReward([])


# -- linear time -------------------------------------------------------------------------

ALL_KINDS = [
    [WC3, SC2, PC2, BP2, HL2, PH1, KF2, LF2, KW, FW, LOW, UP, NC, SW, EW, TI],
    [PS, JS, FR, {"type": "forbidden_words", "words": ["a a a", "e.g."]}],
]
LONG_TEXTS = {
    "dots": "." * 100_000,
    "stars": "*" * 100_000,
    "brackets": "[" * 100_000,
    "angles": "<<" + "a" * 100_000,
    "star-a": "*" + "a" * 100_000,
    "dashes": "-" * 100_000,
    "spaced-a": "a " * 50_000,
    "bullets": "* x\n" * 25_000,
    "prose": "Hello there, world. " * 5_000,
}


@pytest.mark.parametrize("name", list(LONG_TEXTS))
def test_long_texts_check_in_linear_time(name: str) -> None:
    rewards = [ConstraintsReward(parse_constraints(group)) for group in ALL_KINDS]
    rewards[1].score_text("warm up the language profiles", False)
    text = LONG_TEXTS[name]
    start = time.perf_counter()
    for reward in rewards:
        reward.score_text(text, partial=False)
        reward.score_text(text, partial=True)
    # A quadratic checker would take minutes on 100k characters; linear ones take well
    # under a second each (nltk's punkt and langdetect are the slowest, ~0.1-0.5 s).
    assert time.perf_counter() - start < 5.0


# -- the shipped verifiable prompt set ---------------------------------------------------


def test_verifiable_prompt_set() -> None:
    rows = [json.loads(line) for line in PROMPTS.read_text().splitlines() if line.strip()]
    assert len(rows) == 84
    assert len({row["id"] for row in rows}) == len(rows)
    # Only prompts the project wrote: third-party prompt text is not shipped.
    assert {row["source"] for row in rows} == {"alignserve"}
    for row in rows:
        assert 1 <= len(row["constraints"]) <= 3, row["id"]
        constraints = parse_constraints(row["constraints"])
        for constraint in constraints:
            assert constraint.instruction() in row["prompt"], row["id"]
        assert row["prompt"].endswith("\n\n" + instructions(constraints)), row["id"]
