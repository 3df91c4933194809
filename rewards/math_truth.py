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
  run in C, where no timeout, signal or not, could interrupt them: search.math_size).
"""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Any

from search.math_size import too_big

# The final answer sits at the end of a response; this much text holds it and its working.
MAX_CHARS = 2000


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
    if not answer or any(too_big(expr) for expr in answer):
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
