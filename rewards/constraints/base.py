"""The constraint base class, the verdicts, and the count arguments several kinds share.

A constraint is a frozen pydantic model: parsing a request validates it, ``model_dump``
writes it back for reports, and the model itself checks a response. ``check`` runs on
complete responses (pass or fail) and on prefixes that may still grow (partial), where a
verdict is only final when no continuation of the text can change it.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterable
from functools import cached_property
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

Verdict = Literal["pass", "fail", "undecided"]

# Caps that keep one request's constraints small and every check cheap.
MAX_CONSTRAINTS = 16
MAX_STRING = 200
MAX_LIST = 20
MAX_NUMBER = 100_000


def _not_blank(value: str) -> str:
    # A blank phrase would match everywhere (or nowhere): never what the client meant.
    if not value.strip():
        raise ValueError("must not be blank")
    return value


# Regex syntax that could make a pattern slow, or change what it means, beyond IFEval's
# data: IFEval puts keywords, forbidden words and markers into regexes unescaped.
REGEX_SYNTAX = re.compile(r"[\\()\[\]{}*+?|^$]")


def no_regex_syntax(value: str) -> str:
    if REGEX_SYNTAX.search(value):
        raise ValueError(
            f"{value!r}: IFEval uses it as a regex; only letters, digits, spaces, '.' "
            "and punctuation without regex meaning are accepted"
        )
    return value


Phrase = Annotated[str, Field(min_length=1, max_length=MAX_STRING), AfterValidator(_not_blank)]
PhraseList = Annotated[list[Phrase], Field(min_length=1, max_length=MAX_LIST)]
# A phrase IFEval matches as a regex (case-insensitive, as a substring unless said).
Pattern = Annotated[Phrase, AfterValidator(no_regex_syntax)]
PatternList = Annotated[list[Pattern], Field(min_length=1, max_length=MAX_LIST)]
Number = Annotated[int, Field(ge=0, le=MAX_NUMBER)]


class Constraint(BaseModel, ABC):
    """One verifiable instruction. Subclasses set ``type`` to a Literal tag.

    A kind with an IFEval counterpart says which IFEval checks decide it (``ifeval``); its
    verdicts are then theirs, combined: any fail fails, all passing passes."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    type: str

    def ifeval(self) -> list[tuple[str, dict[str, Any]]]:
        """The IFEval instructions (id, kwargs) that decide this constraint; [] for a kind
        of the project's own, which then overrides ``check``."""
        return []

    @cached_property
    def _checks(self) -> list[Any]:
        from rewards.constraints.ifeval import IFEval

        return [IFEval(instruction_id=i, kwargs=k) for i, k in self.ifeval()]  # type: ignore[arg-type]

    def check(self, text: str, partial: bool) -> Verdict:
        """pass or fail on a complete text; on a prefix, undecided unless final."""
        return combine(c.check(text, partial) for c in self._checks)

    def check_loose(self, text: str) -> Verdict:
        """IFEval's loose verdict on a complete text (the strict one for the project's own
        kinds, which have no loose reading)."""
        if not self._checks:
            return self.check(text, partial=False)
        return combine(c.check_loose(text) for c in self._checks)

    @abstractmethod
    def instruction(self) -> str:
        """The instruction in IFEval's wording, to write into a prompt."""


def combine(verdicts: Iterable[Verdict]) -> Verdict:
    """Several checks as one: any fail fails, all pass passes, else undecided."""
    seen = set(verdicts)
    if "fail" in seen:
        return "fail"
    return "undecided" if "undecided" in seen else "pass"


class Counted(Constraint):
    """A constraint on how many times something occurs: ``count`` (exact) or ``min`` and/or
    ``max`` (inclusive), checked by IFEval's instruction ``ifeval_id``. IFEval's relations
    are "at least N" and "less than N", so ``min`` is "at least min", ``max`` is "less
    than max + 1" and ``count`` is both. Kinds whose IFEval check is an exact count
    (``forms = "count"``) or only "at least" (``forms = "min"``) accept only that form."""

    ifeval_id: ClassVar[str]
    # The IFEval argument names: the number and the relation (None: the check has none).
    number_arg: ClassVar[str]
    relation_arg: ClassVar[str | None] = None
    forms: ClassVar[str] = "any"
    extra_args: ClassVar[tuple[str, ...]] = ()

    count: Number | None = None
    min: Number | None = None
    max: Number | None = None

    @model_validator(mode="after")
    def _one_form(self) -> Self:
        if self.count is not None and (self.min is not None or self.max is not None):
            raise ValueError("give either count, or min and/or max, not both")
        if self.count is None and self.min is None and self.max is None:
            raise ValueError("give count, min or max")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        if self.forms == "count" and self.count is None:
            raise ValueError(f"give count: IFEval's {self.ifeval_id} is an exact count")
        if self.forms == "min" and self.min is None:
            raise ValueError(f"give min: IFEval's {self.ifeval_id} checks 'at least' only")
        if self.forms != "any" and (self.count or self.min or 0) < 1:
            raise ValueError(f"IFEval's {self.ifeval_id} needs a number of at least 1")
        return self

    def arguments(self) -> dict[str, Any]:
        """The IFEval arguments other than the number and the relation."""
        return {name: getattr(self, name) for name in self.extra_args}

    def ifeval(self) -> list[tuple[str, dict[str, Any]]]:
        if self.relation_arg is None:
            number = self.count if self.count is not None else self.min
            return [(self.ifeval_id, {**self.arguments(), self.number_arg: number})]
        low = self.count if self.count is not None else self.min
        high = self.count if self.count is not None else self.max
        bounds = []
        if low:  # "at least 0" always holds (and IFEval would draw a random number for 0)
            bounds.append(("at least", low))
        if high is not None:
            bounds.append(("less than", high + 1))
        return [
            (self.ifeval_id, {**self.arguments(), self.number_arg: n, self.relation_arg: rel})
            for rel, n in bounds
        ]

    def amount(self, singular: str, plural: str) -> str:
        """'exactly 3 words', 'at most 1 sentence', 'at least 2 and at most 4 paragraphs'."""

        def noun(n: int) -> str:
            return singular if n == 1 else plural

        if self.count is not None:
            return f"exactly {self.count} {noun(self.count)}"
        if self.min is not None and self.max is not None:
            return f"at least {self.min} and at most {self.max} {noun(self.max)}"
        if self.min is not None:
            return f"at least {self.min} {noun(self.min)}"
        assert self.max is not None  # the validator guarantees one of the three
        return f"at most {self.max} {noun(self.max)}"
