# ruff: noqa: E501  (the task table below keeps one task per line)
"""Write tools/data/verifiable_prompts.jsonl: prompts whose constraints a rule can check.

Ground truth for quality claims that a reward model did not optimise: each prompt carries
1 to 3 IFEval-style constraints (rewards.constraints), written into the prompt text (the
task, a blank line, then the instructions) and kept as metadata to score responses with.
The tasks are 84 everyday tasks written for this project (the MT-Bench questions the set
once also used are third-party text and are no longer shipped). The constraints are ones a 135M chat model meets sometimes and misses
sometimes within ~100 tokens (no commas, lowercase, at most 30-60 words, a keyword, a
first word, a closing phrase, a <<title>>, a P.S., a few bullets), never contradictory
with each other or with the task's own format (JSON, CSV, code, "one paragraph").

Deterministic (random.Random(0)); re-running rewrites the same file.

    .venv/bin/python bench/make_verifiable_prompts.py
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rewards.constraints import instructions, parse_constraints  # noqa: E402

OUTPUT = ROOT / "tools" / "data" / "verifiable_prompts.jsonl"

START_WORDS = ["Sure", "Certainly", "Yes", "Well", "Okay", "Absolutely", "Hello", "So"]
END_PHRASES = [
    "Any other questions?",
    "Is there anything else I can help with?",
    "Hope this helps!",
    "Thank you for reading.",
    "That is all.",
    "Let me know what you think.",
]

# At most one constraint per family: two length limits or two closings add nothing.
FAMILY = {
    "no_commas": "punctuation",
    "lowercase": "case",
    "word_count": "length",
    "sentence_count": "length",
    "bullet_points": "structure",
    "paragraph_count": "structure",
    "keywords": "keyword",
    "keyword_frequency": "keyword",
    "forbidden_words": "keyword",
    "starts_with": "start",
    "ends_with": "end",
    "postscript": "end",
    "title": "title",
    "highlighted_sections": "highlight",
    "placeholders": "placeholder",
}

# Pairs that are satisfiable but invite a miss for the wrong reason: a capitalised "P.S.",
# start word or closing phrase under "no capital letters"; a title, P.S. or closing line
# that becomes an extra paragraph; bullets that read as highlights.
CLASHES = {
    frozenset(pair)
    for pair in [
        ("lowercase", "title"),
        ("lowercase", "postscript"),
        ("lowercase", "starts_with"),
        ("lowercase", "ends_with"),
        ("paragraph_count", "title"),
        ("paragraph_count", "postscript"),
        ("paragraph_count", "ends_with"),
        ("starts_with", "title"),
        ("bullet_points", "highlighted_sections"),
    ]
}

# Draw weights (default 1) that even out how often each kind lands: bullets and lowercase
# lose many draws to the clashes and exclusions, the three keyword kinds share a family.
WEIGHTS = {
    "bullet_points": 1.5,
    "keywords": 0.7,
    "keyword_frequency": 0.5,
    "forbidden_words": 0.5,
    "lowercase": 1.5,
}

STRUCTURE = {"bullet_points", "paragraph_count"}
KEYWORD_KINDS = {"keywords", "keyword_frequency", "forbidden_words"}
# Everyday tasks written for this project, each with a related keyword.
OWN_TASKS: list[tuple[str, str]] = [
    ("Write a short email to your neighbor asking them to water your plants while you are away for a week.", "key"),
    ("Write a brief email to a coworker thanking them for covering your shift last Friday.", "grateful"),
    ("Draft a polite message to your landlord reporting that the kitchen sink is leaking.", "plumber"),
    ("Write a short note to a teacher explaining that your child will miss school tomorrow because of a dentist appointment.", "homework"),
    ("Write an email inviting your team to a small celebration for finishing a project.", "cake"),
    ("Write a message to a friend you have not talked to in a year, suggesting you meet for coffee.", "weekend"),
    ("Draft a short email asking a store for a refund on a pair of shoes that arrived in the wrong size.", "receipt"),
    ("Write a friendly reminder to a book club that the next meeting has moved to Thursday.", "chapter"),
    ("Write a short apology to a customer whose order was delivered two days late.", "discount"),
    ("Write a text message congratulating your cousin on passing her driving test.", "proud"),
    ("Explain why the sky looks blue during the day.", "light"),
    ("Explain how a refrigerator keeps food cold.", "heat"),
    ("Explain what a budget is and why it helps people manage money.", "savings"),
    ("Explain to a ten-year-old why we have seasons.", "tilt"),
    ("Explain how vaccines help the body fight disease.", "immune"),
    ("Explain what causes the tides in the ocean.", "moon"),
    ("Explain why bread goes stale.", "moisture"),
    ("Explain how the gears on a bicycle make riding uphill easier.", "pedal"),
    ("Explain what interest on a loan means.", "borrow"),
    ("Explain why leaves change color in autumn.", "chlorophyll"),
    ("Explain how plastic bottles are recycled.", "melted"),
    ("Explain the difference between weather and climate.", "average"),
    ("Give some tips for sleeping better at night.", "screen"),
    ("List a few ways to save water at home.", "shower"),
    ("Suggest some healthy snacks for a long car trip.", "nuts"),
    ("Give advice on how to prepare for a job interview.", "research"),
    ("List some simple ways to reduce stress during a busy week.", "walk"),
    ("Suggest a few indoor activities for a rainy day with kids.", "puzzle"),
    ("Give tips for keeping a houseplant alive.", "sunlight"),
    ("List some things to pack for a weekend camping trip.", "flashlight"),
    ("Suggest ways to make a small apartment feel bigger.", "mirror"),
    ("Give some tips for learning a new language.", "practice"),
    ("List a few ideas for a cheap and fun evening out.", "picnic"),
    ("Suggest some ways to stay focused while studying.", "phone"),
    ("Write a very short story about a cat who finds a lost key.", "door"),
    ("Write a short poem about the first snow of winter.", "quiet"),
    ("Write a tiny fable about a turtle who wants to fly.", "wings"),
    ("Write a short story about a robot learning to bake bread.", "oven"),
    ("Describe a sunrise over the sea in a few lines of poetry.", "gold"),
    ("Write a short bedtime story about a dragon who is afraid of the dark.", "lantern"),
    ("Write a short scene in which two strangers share an umbrella.", "rain"),
    ("Write a limerick about a forgetful wizard.", "spell"),
    ("Write a short story that takes place in a library at midnight.", "whisper"),
    ("Write a short poem about a busy city street.", "horns"),
    ("A friend is nervous about speaking in public. What advice would you give them?", "breathe"),
    ("How should someone start running if they have never exercised before?", "shoes"),
    ("What should I consider before adopting a dog?", "time"),
    ("How can I politely decline an invitation to a party?", "thank"),
    ("What is a good way to start saving for retirement?", "early"),
    ("How can a student make friends at a new school?", "club"),
    ("What should I do if I keep forgetting to drink water?", "bottle"),
    ("How can I get better at cooking simple meals?", "recipe"),
    ("How do I choose a good laptop for school work?", "battery"),
    ("How can I keep a conversation going with someone I just met?", "questions"),
    ("Define the word 'photosynthesis' in simple terms.", "plants"),
    ("What does the word 'nostalgia' mean?", "past"),
    ("Define inflation and give a simple example.", "prices"),
    ("What is a metaphor?", "comparison"),
    ("What is an ecosystem?", "organisms"),
    ("Define the term 'compound interest'.", "principal"),
    ("What does 'biodiversity' mean?", "species"),
    ("What is a haiku?", "syllables"),
    ("What is the difference between a virus and a bacterium?", "cells"),
    ("What is a democracy?", "vote"),
    ("Describe your ideal weekend morning.", "coffee"),
    ("Describe a busy train station at rush hour.", "crowd"),
    ("Describe the taste of a ripe summer strawberry.", "sweet"),
    ("Describe a cozy cabin in the mountains.", "fireplace"),
    ("Describe a farmers' market on a Saturday morning.", "stalls"),
    ("Describe the sound of a thunderstorm to someone who has never heard one.", "rumble"),
    ("Compare reading a paper book with reading an e-book.", "pages"),
    ("Compare living in a city with living in the countryside.", "noise"),
    ("What are the pros and cons of working from home?", "commute"),
    ("Compare cats and dogs as pets.", "independent"),
    ("Compare taking the train with flying for a 500-kilometer trip.", "cost"),
    ("What are the advantages and disadvantages of electric cars?", "charging"),
    ("Write a short toast for a friend's wedding.", "love"),
    ("Write a product description for a reusable water bottle.", "leak"),
    ("Write a thank-you note to a volunteer at an animal shelter.", "animals"),
    ("Write a short welcome message for new members of a gardening club.", "seeds"),
    ("Write a short review of a neighborhood pizza place.", "crust"),
    ("Write an announcement that the office will be closed on Monday for a holiday.", "Tuesday"),
    ("Write a short motivational message for someone starting a new job.", "learn"),
    ("Write a short paragraph encouraging people to visit their local library.", "books"),
]  # fmt: skip


def build(kind: str, rng: random.Random, keyword: str | None) -> dict[str, Any]:
    """One constraint of a kind, with arguments drawn from ranges a short reply can meet."""
    if kind == "word_count":
        return {"type": kind, "max": rng.choice([30, 40, 50, 60])}
    if kind == "sentence_count":
        return {"type": kind, "max": rng.choice([2, 3, 4])}
    if kind == "bullet_points":
        return {"type": kind, "count": rng.choice([2, 3, 4])}
    if kind == "paragraph_count":
        return {"type": kind, "count": 2}
    if kind == "keywords":
        return {"type": kind, "include": [keyword]}
    if kind == "keyword_frequency":
        return {"type": kind, "keyword": keyword, "min": 2}
    if kind == "forbidden_words":
        return {"type": kind, "words": [keyword]}
    if kind == "starts_with":
        return {"type": kind, "phrase": rng.choice(START_WORDS)}
    if kind == "ends_with":
        return {"type": kind, "phrase": rng.choice(END_PHRASES)}
    if kind == "highlighted_sections":
        return {"type": kind, "min": rng.choice([1, 2])}
    if kind == "placeholders":
        return {"type": kind, "min": 1}
    return {"type": kind}  # no_commas, lowercase, title, postscript


def fits(kind: str, chosen: list[str], keyword: str | None) -> bool:
    if any(FAMILY[kind] == FAMILY[other] for other in chosen):
        return False
    if any(frozenset((kind, other)) in CLASHES for other in chosen):
        return False
    # "Include "Berlin"" under "no capital letters" is the same trap as a capital P.S.
    capital = keyword is not None and keyword != keyword.lower()
    keyworded = {kind, *chosen} & KEYWORD_KINDS
    return not (capital and keyworded and "lowercase" in {kind, *chosen})


def choose(rng: random.Random, allowed: set[str], n: int, keyword: str | None) -> list[str]:
    """Up to n compatible kinds, in random order (fewer when the task allows fewer)."""
    if keyword is None:
        allowed = allowed - KEYWORD_KINDS
    # A weighted random order (Efraimidis-Spirakis keys u ** (1 / weight)).
    keys = {kind: rng.random() ** (1 / WEIGHTS.get(kind, 1.0)) for kind in sorted(allowed)}
    candidates = sorted(keys, key=lambda kind: -keys[kind])
    chosen: list[str] = []
    for kind in candidates:
        if len(chosen) == n:
            break
        if fits(kind, chosen, keyword):
            chosen.append(kind)
    return chosen


def row(
    rid: str, task: str, kinds: list[str], rng: random.Random, keyword: str | None, source: str
) -> dict[str, Any]:
    specs = [build(kind, rng, keyword) for kind in kinds]
    # Parse to validate, and store the canonical form (a P.S. with its explicit marker).
    constraints = parse_constraints(specs)
    return {
        "id": rid,
        "prompt": f"{task.strip()}\n\n{instructions(constraints)}",
        "constraints": [c.model_dump(exclude_none=True) for c in constraints],
        "source": source,
    }


def own_allowed(task: str) -> set[str]:
    # "Write a short paragraph ..." asks for one paragraph and one layout.
    return set(FAMILY) - STRUCTURE if "paragraph" in task else set(FAMILY)


def make_rows() -> list[dict[str, Any]]:
    rng = random.Random(0)
    # An even mix of 1, 2 and 3 constraints per prompt, in random order.
    sizes = [1 + i % 3 for i in range(len(OWN_TASKS))]
    rng.shuffle(sizes)
    rows = []
    for i, ((task, keyword), n) in enumerate(zip(OWN_TASKS, sizes, strict=True)):
        kinds = choose(rng, own_allowed(task), n, keyword)
        rows.append(row(f"alignserve_{i + 1:03d}", task, kinds, rng, keyword, "alignserve"))
    return rows


def main() -> None:
    rows = make_rows()
    with OUTPUT.open("w") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    kinds: dict[str, int] = {}
    for r in rows:
        for c in r["constraints"]:
            kinds[c["type"]] = kinds.get(c["type"], 0) + 1
    sizes = [len(r["constraints"]) for r in rows]
    print(f"wrote {len(rows)} prompts to {OUTPUT.relative_to(ROOT)}")
    print("constraints per prompt:", {k: sizes.count(k) for k in (1, 2, 3)})
    print("kinds:", dict(sorted(kinds.items(), key=lambda kv: -kv[1])))


if __name__ == "__main__":
    main()
