"""Ground truth for math answers: is a response's final answer equal to the gold answer?

    is_correct("So she has $12$ apples. \\boxed{12}", "12")  -> True

math-verify (Hugging Face) extracts the answer (``\\boxed{}`` first, then "the answer is",
then the last number or LaTeX expression) and compares it with the gold one symbolically and
numerically, so "42", "42.0", "\\boxed{42}" and "The answer is $42$" all match 42.

Bounded, and safe in any thread. math-verify's own timeouts are ``signal.alarm``: they raise
outside the main thread, and in the main thread they would cancel any alarm the process
already set (pytest-timeout's, a server's). So they are off (``parsing_timeout=None``,
``timeout_seconds=None``) and the work is bounded here instead:

- only the last ``MAX_CHARS`` characters are parsed (the final answer is at the end; a
  runaway generation cannot make the regex extraction or the LaTeX parser slow);
- a parsed answer sympy would have to evaluate into an enormous number is refused before
  the comparison (``10^{10^{10}}`` or ``9**9**9**9``: exact integer powers and factorials
  run in C, where no timeout, signal or not, could interrupt them).
"""

from __future__ import annotations

import logging
import math
from functools import lru_cache
from typing import Any

# The final answer sits at the end of a response; this much text holds it and its working.
MAX_CHARS = 2000
# Refuse numbers with more digits than this (a power's or factorial's result, estimated).
MAX_RESULT_DIGITS = 10_000


class _NoTimeoutNotice(logging.Filter):
    """Drops math-verify's one-off warning that its timeouts are off: we bound it ourselves."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Timeout is disabled" not in record.getMessage()


for _name in ("math_verify.parser", "math_verify.grader"):
    logging.getLogger(_name).addFilter(_NoTimeoutNotice())


def is_correct(response_text: str, gold: str) -> bool:
    """Whether the response's final answer equals ``gold`` (a number or a LaTeX answer).
    Never raises on odd text: an answer that cannot be read is wrong."""
    from math_verify import verify

    gold_parsed = _parse_gold(gold)
    if not gold_parsed:
        raise ValueError(f"math-verify cannot read the gold answer {gold!r}")
    answer = _parse(response_text[-MAX_CHARS:])
    if not answer or any(_too_big(expr) for expr in answer):
        return False
    return bool(verify(list(gold_parsed), answer, timeout_seconds=None))


@lru_cache(maxsize=4096)
def _parse_gold(gold: str) -> tuple[Any, ...]:
    # Boxed, so a bare LaTeX gold ("\frac{1}{2}") is read as LaTeX, like the answers.
    text = gold if "\\boxed" in gold else f"\\boxed{{{gold.strip()}}}"
    return tuple(_parse(text))


def _parse(text: str) -> list[Any]:
    from math_verify import parse

    return list(parse(text, parsing_timeout=None))


def _too_big(expr: Any) -> bool:
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
    a factorial by Stirling, anything else the sum of its parts (so, under the character cap,
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
