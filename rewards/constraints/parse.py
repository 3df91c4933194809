"""``search.constraints`` from a request: a JSON list of ``{"type": KIND, ...args}`` or of
IFEval's own items ``{"instruction_id": ID, "kwargs": {...}}`` (an IFEval row's
``instruction_id_list`` zipped with its ``kwargs``), the two forms mixed freely.

Each item is validated on its own against a union discriminated by ``type``, so an error
names the item (``search.constraints[2]``) and, in its message, the bad argument.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, TypeAdapter, ValidationError
from pydantic_core import ErrorDetails

from rewards.constraints.base import MAX_CONSTRAINTS, Constraint
from rewards.constraints.content import (
    EndsWith,
    ForbiddenWords,
    Json,
    Keywords,
    Lowercase,
    NoCommas,
    Postscript,
    StartsWith,
    Title,
    Uppercase,
)
from rewards.constraints.counts import (
    BulletPoints,
    HighlightedSections,
    KeywordFrequency,
    LetterFrequency,
    ParagraphCount,
    Placeholders,
    SentenceCount,
    WordCount,
)
from rewards.constraints.ifeval import IFEval
from rewards.constraints.language import Language
from search.errors import InvalidRequest, shown

PARAM = "search.constraints"

AnyConstraint = Annotated[
    WordCount
    | SentenceCount
    | ParagraphCount
    | BulletPoints
    | HighlightedSections
    | Placeholders
    | KeywordFrequency
    | LetterFrequency
    | Keywords
    | ForbiddenWords
    | Lowercase
    | Uppercase
    | NoCommas
    | StartsWith
    | EndsWith
    | Title
    | Postscript
    | Json
    | Language
    | IFEval,
    Field(discriminator="type"),
]

KINDS: dict[str, type[Constraint]] = {
    kind.model_fields["type"].default: kind
    for kind in (
        WordCount, SentenceCount, ParagraphCount, BulletPoints, HighlightedSections,
        Placeholders, KeywordFrequency, LetterFrequency, Keywords, ForbiddenWords,
        Lowercase, Uppercase, NoCommas, StartsWith, EndsWith, Title, Postscript, Json,
        Language, IFEval,
    )
}  # fmt: skip

_ADAPTER: TypeAdapter[Constraint] = TypeAdapter(AnyConstraint)


def parse_constraints(items: object) -> list[Constraint]:
    """Validated constraints, or InvalidRequest naming the list or the item at fault."""
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_CONSTRAINTS:
        raise InvalidRequest(
            f"{PARAM} must be a non-empty list of at most {MAX_CONSTRAINTS} constraint "
            'objects such as {"type": "word_count", "max": 50}',
            param=PARAM,
        )
    return [_parse_one(item, i) for i, item in enumerate(items)]


def _parse_one(item: object, index: int) -> Constraint:
    param = f"{PARAM}[{index}]"
    if not isinstance(item, dict):
        raise InvalidRequest(f"{param} must be an object with a 'type'", param=param)
    if "type" not in item and "instruction_id" in item:
        item = {"type": "ifeval", **item}
    try:
        return _ADAPTER.validate_python(item)
    except ValidationError as exc:
        raise InvalidRequest(f"{param}: {_describe(exc.errors()[0], item)}", param=param) from None


def _describe(error: ErrorDetails, item: dict[str, Any]) -> str:
    """One pydantic error in the request's own terms: the kind, then the argument."""
    kind = item.get("type")
    if error["type"] == "union_tag_not_found":
        return "missing 'type' (or IFEval's 'instruction_id')"
    if error["type"] == "union_tag_invalid":
        return f"unknown constraint type {shown(kind)}; known types: {', '.join(KINDS)}"
    # The first location entry is the union tag (the kind); the rest names the argument.
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error["loc"][1:])
    where = where.removeprefix(".")
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        return f"{kind} takes no argument {shown(where)}"
    if error["type"] == "missing":
        return f"{kind} needs argument {shown(where)}"
    return f"{kind}: {where}: {message}" if where else f"{kind}: {message}"
