"""The grammar every answer-producing sample of a request decodes under (structured outputs:
``response_format``, ``text.format``, vLLM's ``structured_outputs``, and the JSON schema of
a required or named tool call).

A value on ``SamplingConfig.constraint``, so it reaches every engine call that
``SearchContext.sampling_for`` derives from the request's sampling (and none that passes
its own sampling: the judge, DARWIN's rewrite). The engines hand it to vLLM as they find
it: in-process as ``SamplingParams.structured_outputs``, remote as the ``structured_outputs``
field of ``/v1/completions``. Exactly one of the constraint fields is set, as vLLM's
``StructuredOutputsParams`` requires. (Its whitespace options are not carried: vLLM 0.32's
backends read them from the engine's configuration, not from a request.)

A grammar constrains decoding from the first generated token: a search that continues a
partial response in a new engine call (the tree searches) would restart the grammar at the
continuation, so only strategies with ``honours_constraints`` accept one (the server
refuses the others with a 400 naming the field).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class OutputConstraint:
    """vLLM's structured-output constraint, one kind of it set. ``json``: a JSON schema as
    JSON text (hashable, and sent as it came)."""

    json: str | None = None
    json_object: bool | None = None
    regex: str | None = None
    choice: tuple[str, ...] | None = None
    grammar: str | None = None

    def __post_init__(self) -> None:
        kinds = [self.json, self.json_object, self.regex, self.choice, self.grammar]
        if sum(k is not None for k in kinds) != 1:
            raise ValueError("exactly one kind of structured-output constraint must be set")

    def vllm_fields(self) -> dict[str, Any]:
        """The fields of vLLM's ``StructuredOutputsParams`` (and of its HTTP
        ``structured_outputs`` object) that are set."""
        fields: dict[str, Any] = {}
        if self.json is not None:
            fields["json"] = self.json
        if self.json_object is not None:
            fields["json_object"] = self.json_object
        if self.regex is not None:
            fields["regex"] = self.regex
        if self.choice is not None:
            fields["choice"] = list(self.choice)
        if self.grammar is not None:
            fields["grammar"] = self.grammar
        return fields
