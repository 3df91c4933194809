"""Rule-based verifiable constraints (IFEval's families) and a reward model over them.

A request's ``search.constraints`` is parsed by ``parse_constraints``; each constraint
checks complete responses and prefixes; ``ConstraintsReward`` scores the fraction met.
"""

from __future__ import annotations

from rewards.constraints.base import Constraint, Verdict
from rewards.constraints.parse import KINDS, parse_constraints
from rewards.constraints.reward import ConstraintsReward, instructions

__all__ = [
    "KINDS",
    "Constraint",
    "ConstraintsReward",
    "Verdict",
    "instructions",
    "parse_constraints",
]
