"""The constraint base class, the verdicts, and the count arguments several kinds share.

A constraint is a frozen pydantic model: parsing a request validates it, ``model_dump``
writes it back for reports, and the model itself checks a response. ``check`` runs on
complete responses (pass or fail) and on prefixes that may still grow (partial), where a
verdict is only final when no continuation of the text can change it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Annotated, Literal, Self

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


Phrase = Annotated[str, Field(min_length=1, max_length=MAX_STRING), AfterValidator(_not_blank)]
PhraseList = Annotated[list[Phrase], Field(min_length=1, max_length=MAX_LIST)]
Number = Annotated[int, Field(ge=0, le=MAX_NUMBER)]


class Constraint(BaseModel, ABC):
    """One verifiable instruction. Subclasses set ``type`` to a Literal tag."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    type: str

    @abstractmethod
    def check(self, text: str, partial: bool) -> Verdict:
        """pass or fail on a complete text; on a prefix, undecided unless final."""

    @abstractmethod
    def instruction(self) -> str:
        """The instruction in IFEval's wording, to write into a prompt."""


class Counted(Constraint):
    """A constraint on how many times something occurs: ``count`` (exact) or ``min`` and/or
    ``max`` (inclusive). Subclasses say what they count with ``measure``, which on a
    prefix must return a lower bound of the count of every continuation; the verdict
    logic then lives here once."""

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
        return self

    @property
    def low(self) -> int:
        return self.count if self.count is not None else (self.min or 0)

    @property
    def high(self) -> int | None:
        return self.count if self.count is not None else self.max

    @abstractmethod
    def measure(self, text: str, partial: bool) -> int:
        """The count in a complete text, or a lower bound of it for a prefix."""

    def check(self, text: str, partial: bool) -> Verdict:
        return count_verdict(self.measure(text, partial), self.low, self.high, partial)

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


def count_verdict(n: int, low: int, high: int | None, partial: bool) -> Verdict:
    """Decide a count against [low, high]. On a prefix ``n`` is a lower bound that can
    only grow, so an exceeded upper bound is a final fail and a reached lower bound with
    no upper bound is a final pass; anything else may still change."""
    if high is not None and n > high:
        return "fail"
    if n >= low and high is None:
        return "pass"
    if partial:
        return "undecided"
    return "pass" if n >= low else "fail"
