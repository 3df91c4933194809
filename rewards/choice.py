"""The reward a request searches with: one of the server's named rewards, or several
combined with weights, with the request's own judging criteria and constraints.

    search.reward       "judge" | {"judge": 1.0, "constraints": 2.0}   (default: the server's)
    search.rubric       criteria that replace the judge kinds' own (at most 2000 characters)
    search.constraints  checkable instructions for the ``constraints`` verifier

A combination scores ``sum_k w_k * R_k``: a weighted sum, not a mean, so each component
keeps its documented scale (judge and openai-judge in [0, 1], constraints the fraction of
constraints met in [0, 1], classifier and remote their raw head output, python whatever the
function returns) and the weights are the only exchange rate. Every component scores every
response (concurrently), and the complete-response scores of each are kept per text for the
report. Constraints sent without the ``constraints`` reward are not optimised; the report
still says which each candidate meets.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from rewards.spec import CONSTRAINTS, RewardSpec
from rewards.values import as_float
from search.errors import InvalidRequest, RewardUnavailable, shown
from search.protocols import Bounds, RewardModel
from search.types import Message

if TYPE_CHECKING:
    from rewards.constraints import ConstraintsReward

MAX_COMPONENTS = 8
MAX_WEIGHT = 1e6
RUBRIC_MAX_CHARS = 2000


class RewardOptions(BaseModel):
    """Keys of the ``search`` object that choose the reward (popped before the strategy's)."""

    model_config = ConfigDict(strict=True, extra="forbid")

    reward: str | dict[str, float | int] | None = None
    rubric: str | None = Field(default=None, min_length=1, max_length=RUBRIC_MAX_CHARS)
    constraints: list[Any] | None = None
    # The process reward model a step search scores its steps with (--prm NAME).
    prm: str | None = Field(default=None, min_length=1, max_length=64)

    @classmethod
    def pop_from(cls, options: dict[str, Any]) -> RewardOptions:
        from search.registry import validate_options

        given = {key: options.pop(key) for key in cls.model_fields if key in options}
        return validate_options(cls, given, "search")

    @property
    def given(self) -> bool:
        return any(v is not None for v in (self.reward, self.rubric, self.constraints))


@dataclass(frozen=True)
class Component:
    name: str
    weight: float
    model: RewardModel
    rubric: str | None = None

    async def score(
        self,
        conversation: Sequence[Message],
        responses: Sequence[str],
        partial: bool,
        token_ids: Sequence[Sequence[int]] | None = None,
    ) -> list[float]:
        # Only the judge kinds get a rubric (RewardSet checked); the others ignore it.
        ids = token_ids if self.model.takes_token_ids else None
        return await self.model.score(
            conversation, responses, partial=partial, rubric=self.rubric, token_ids=ids
        )


@dataclass
class RequestReward:
    """One request's reward (``search.protocols.RewardModel``): the weighted sum of its
    components. ``components_of(text)`` is what each component gave a complete response."""

    components: list[Component]
    constraints: ConstraintsReward | None = None  # when the request sent constraints
    _scores: dict[str, dict[str, float]] = field(default_factory=dict, init=False)

    @property
    def bounds(self) -> Bounds | None:
        ranges = [c.model.bounds for c in self.components]
        if any(r is None for r in ranges):
            return None
        lo = sum(c.weight * r[0] for c, r in zip(self.components, ranges, strict=True) if r)
        hi = sum(c.weight * r[1] for c, r in zip(self.components, ranges, strict=True) if r)
        return lo, hi

    @property
    def weights(self) -> dict[str, float]:
        return {c.name: c.weight for c in self.components}

    # Passed on to the components that read token ids (the judge's continuation layout).
    takes_token_ids = True

    async def score(
        self,
        conversation: Sequence[Message],
        responses: Sequence[str],
        *,
        partial: bool = False,
        rubric: str | None = None,
        token_ids: Sequence[Sequence[int]] | None = None,
    ) -> list[float]:
        """``rubric`` is unused: the request's rubric is already in its components."""
        if not responses:
            return []
        per_component = await asyncio.gather(
            *(c.score(conversation, responses, partial, token_ids) for c in self.components)
        )
        totals = []
        for i, text in enumerate(responses):
            scores = {c.name: s[i] for c, s in zip(self.components, per_component, strict=True)}
            if not partial:
                self._scores[text] = scores
            totals.append(self._total(scores))
        return totals

    def _total(self, scores: Mapping[str, float]) -> float:
        """The weighted sum, which must be finite (finding N3): each component's score is
        checked finite (rewards.values), but two large finite ones still overflow (1e308 +
        1e308 is inf; fsum raises OverflowError instead), and an inf total breaks the
        ranking, the JSON answer (a 500), the stream and the records as a NaN does."""
        terms = [c.weight * scores[c.name] for c in self.components]
        try:
            total = math.fsum(terms)
        except OverflowError:
            total = math.inf
        if not math.isfinite(total):
            named = ", ".join(f"{c.name} x {c.weight:g}" for c in self.components)
            raise RewardUnavailable(
                f"the combined reward ({named}) is not finite: a component's score is too "
                "large for its weight",
                reason="non_finite",
            )
        return total

    def components_of(self, text: str) -> dict[str, float] | None:
        return self._scores.get(text)


class RewardSet:
    """The server's rewards by name (``constraints`` is always one) and its default."""

    def __init__(
        self, models: Mapping[str, RewardModel], specs: Sequence[RewardSpec], default: str
    ):
        self.models = dict(models)
        self.specs = {s.name: s for s in specs}
        self.default = default

    @property
    def default_model(self) -> RewardModel | None:
        return self.models.get(self.default)

    def for_request(self, options: RewardOptions) -> RewardModel:
        """The reward model this request searches with; 400 naming the field on a bad
        choice. A request that chooses nothing gets the default model itself."""
        constraints = self._constraints(options.constraints)
        if not options.given and self.default != CONSTRAINTS:
            return self.models[self.default]
        weights = self._weights(options.reward)
        if options.rubric is not None and not any(self.specs[n].takes_rubric for n in weights):
            raise InvalidRequest(
                "search.rubric replaces a judge's criteria, but the chosen reward "
                f"({', '.join(weights)}) has no judge (judge or openai-judge)",
                param="search.rubric",
            )
        components = []
        for name, weight in weights.items():
            if name == CONSTRAINTS:
                if constraints is None:
                    raise InvalidRequest(
                        "the constraints reward needs search.constraints, a list of checks",
                        param="search.constraints",
                    )
                model: RewardModel = constraints
            else:
                model = self.models[name]
            rubric = options.rubric if self.specs[name].takes_rubric else None
            components.append(Component(name, weight, model, rubric))
        return RequestReward(components, constraints)

    def _constraints(self, items: list[Any] | None) -> ConstraintsReward | None:
        if items is None:
            return None
        from rewards.constraints import ConstraintsReward, parse_constraints

        return ConstraintsReward(parse_constraints(items))

    def _weights(self, reward: str | dict[str, float | int] | None) -> dict[str, float]:
        if reward is None:
            return {self.default: 1.0}
        if isinstance(reward, str):
            self._known(reward)
            return {reward: 1.0}
        if not reward or len(reward) > MAX_COMPONENTS:
            raise InvalidRequest(
                f"search.reward as an object names 1 to {MAX_COMPONENTS} rewards with weights",
                param="search.reward",
            )
        weights = {}
        for name, weight in reward.items():
            self._known(name)
            if not (math.isfinite(as_float(weight)) and 0 <= weight <= MAX_WEIGHT):
                raise InvalidRequest(
                    f"search.reward[{shown(name)}]: a weight is a number from 0 to {MAX_WEIGHT:g}",
                    param="search.reward",
                )
            weights[name] = float(weight)
        if not any(weights.values()):
            raise InvalidRequest(
                "search.reward: give some reward a weight above 0", param="search.reward"
            )
        return weights

    def _known(self, name: str) -> None:
        if name not in self.specs:
            raise InvalidRequest(
                f"search.reward: no reward named {shown(name)} here; this server has "
                f"{', '.join(sorted(self.specs))}",
                param="search.reward",
            )


def reward_report(reward: RewardModel, candidates: Sequence[Any]) -> dict[str, Any]:
    """The ``search`` report's account of a chosen reward, per candidate (in the order of
    the report's candidates): each component's score, and which constraints it meets."""
    if not isinstance(reward, RequestReward):
        return {}
    report: dict[str, Any] = {
        "reward": {
            "weights": reward.weights,
            "components": [reward.components_of(c.text) for c in candidates],
        }
    }
    if reward.constraints is not None:
        met = [
            [v == "pass" for v in reward.constraints.verdicts(c.text, False)] for c in candidates
        ]
        report["constraints"] = {
            "checks": reward.constraints.describe(),
            "met": met,
            "all_met": [all(m) for m in met],
        }
    return report
