"""The input and output convention of Qwen2.5-Math-PRM, shared by rewards.prm_remote and
rewards.prm_local.

Input (Qwen's model card, "Quick Start"): three messages rendered with the PRM's own chat
template, without a generation prompt:

- system: ``QWEN_PRM_SYSTEM`` ("Please reason step by step, and put your final answer
  within \\boxed{}."), the prompt the PRM was trained with;
- user: the question;
- assistant: each step's text followed by the separator ``<extra_0>`` (one special token,
  id 151651 in Qwen2.5's vocabulary), ``"<extra_0>".join(steps) + "<extra_0>"``.

Output: the PRM reads 2-way logits at every token; a step's score is the softmax
probability of the positive class (index 1) at the separator that ends it, in [0, 1].

Where this differs from the reference usage, and why:

- The question is the conversation's last user turn. The PRMs were trained on
  single-question math, so earlier turns and the conversation's own system prompt are
  left out rather than shown to a model that never saw them.
- Steps arrive as the texts that join into the response (search.steps keeps each
  step's delimiter, a blank line, in its text); Qwen's example lists steps without it,
  so each step's text is stripped of surrounding whitespace.
- A step that is only whitespace is dropped: it would add an empty step the PRM never saw
  in training. A response whose last step is empty therefore gets the score of its last
  non-empty step (the response is the same after stripping); a response with no
  non-empty step is scored as one empty step.
- The separator string is removed from the question and the steps: the PRM's tokenizer
  turns it into the separator token wherever it appears, and a client could otherwise
  place extra step boundaries, shifting which score is read.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from search.errors import RewardUnavailable
from search.types import Message

QWEN_PRM_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."
DEFAULT_SEPARATOR = "<extra_0>"


def question_of(conversation: Sequence[Message]) -> str:
    """The last user turn's text ("" when there is none)."""
    for message in reversed(conversation):
        if message.get("role") == "user":
            return str(message.get("content") or "")
    return ""


def clean_steps(steps: Sequence[str], separator: str = DEFAULT_SEPARATOR) -> list[str]:
    """The steps as the PRM reads them: separator removed, stripped, empty ones dropped;
    never empty (a response with no text is one empty step)."""
    kept = [text.replace(separator, "").strip() for text in steps]
    kept = [text for text in kept if text]
    return kept or [""]


def prm_messages(
    conversation: Sequence[Message], steps: Sequence[str], separator: str = DEFAULT_SEPARATOR
) -> list[Message]:
    """The three messages of the PRM's input for one response (module docstring). The
    rendered assistant turn holds exactly ``len(clean_steps(steps))`` separators, the
    last one ending the response's last non-empty step."""
    question = question_of(conversation).replace(separator, "")
    answer = "".join(text + separator for text in clean_steps(steps, separator))
    return [
        {"role": "system", "content": QWEN_PRM_SYSTEM},
        {"role": "user", "content": question},
        {"role": "assistant", "content": answer},
    ]


def positive_probability(row: Any) -> float:
    """softmax(row)[1] of one separator's two logits, checked: not two numbers is
    ``bad_value``, a logit that is not finite is ``non_finite``."""
    if not isinstance(row, (list, tuple)) or len(row) != 2:
        raise RewardUnavailable(
            "the process reward model did not return two logits per step", reason="bad_value"
        )
    if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in row):
        raise RewardUnavailable(
            "the process reward model returned a logit that is not a number", reason="bad_value"
        )
    negative, positive = float(row[0]), float(row[1])
    if not (math.isfinite(negative) and math.isfinite(positive)):
        raise RewardUnavailable(
            "the process reward model returned a non-finite logit", reason="non_finite"
        )
    # softmax([a, b])[1] = 1 / (1 + e^(a - b)), written so that exp never overflows.
    diff = negative - positive
    if diff > 0:
        odds = math.exp(-diff)
        return odds / (1.0 + odds)
    return 1.0 / (1.0 + math.exp(diff))
