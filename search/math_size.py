"""Whether evaluating a parsed math answer (a sympy expression) could build an enormous
integer: ``10^{10^{10}}`` or ``9**9**9**9``. Exact integer powers and factorials run in C,
where no timeout, signal or not, can interrupt them, so such answers are refused before
sympy evaluates or compares them (rewards.math_truth's ground truth, search.answer_canon's
vote grouping). sympy is imported only when an expression is checked.
"""

from __future__ import annotations

import math
from typing import Any

# Refuse numbers with more digits than this (a power's or factorial's result, estimated).
MAX_RESULT_DIGITS = 10_000


def too_big(expr: Any) -> bool:
    """Whether evaluating ``expr`` could build an integer past ``MAX_RESULT_DIGITS`` digits
    (the estimate errs on the large side). Strings (unparsed answers) pass."""
    import sympy

    if not isinstance(expr, sympy.Basic):
        return False
    try:
        return _digits(expr) > MAX_RESULT_DIGITS
    except RecursionError:  # absurdly nested: no real answer looks like that
        return True


def _digits(expr: Any) -> float:
    """An upper bound on the decimal digits of the largest integer that evaluating ``expr``
    builds: literal numbers their own length, a power its base's times the exponent's value,
    a factorial by Stirling, anything else the sum of its parts (so, under a character cap,
    only powers and factorials can go past the limit)."""
    import sympy

    if isinstance(expr, sympy.Rational):  # Integer too: both numerator and denominator
        bits: int = max(abs(expr.p).bit_length(), expr.q.bit_length())
        return bits * math.log10(2)
    if isinstance(expr, sympy.Float):
        value = abs(float(expr))  # inf past float's range
        return abs(math.log10(value)) if value > 0 else 0.0
    if isinstance(expr, sympy.Pow):
        base, exponent = expr.args
        return max(1.0, _digits(base)) * _value(exponent) + _digits(exponent)
    if isinstance(expr, sympy.factorial):
        argument = _value(expr.args[0])
        return argument * math.log10(argument + 1)
    return sum((_digits(arg) for arg in expr.args), 0.0)


def _value(expr: Any) -> float:
    """An upper bound on ``|expr|`` from its digits; infinite when that is already too big."""
    digits = _digits(expr)
    return math.inf if digits > 8 else 10.0**digits
