"""Fitting a conversation and a response into a reward model's context.

The server checks only that the policy's prompt plus ``max_tokens`` fits the policy's
context. A reward model sees more, or sees it differently: the judge adds its rubric and
re-renders the whole conversation around the response; a classifier renders it with its
own template and its own length limit. So a request the policy served may not fit its
reward model, and failing it then (after a full generation, and in a shared batch) would
punish long-context users for nothing hostile. Instead the reward model sees a shortened
conversation, shortened in this order until it fits:

1. ``turns``: the oldest turns are left out, from the first one after the system prompt,
   stopping only where a user turn starts (so the kept turns still alternate as chat
   templates require). The system prompt, the last user turn (with anything after it)
   and the response are always kept.
2. ``user``: the middle of the last user turn is cut, keeping its head and its tail (a
   task is usually stated at one end), down to ``KEEP_CHARS`` characters.
3. ``system``: the middle of the longest system message is cut the same way.
4. ``response``: the head of the response is cut, keeping its last ``KEEP_CHARS``
   characters: for a partial response the end is the part being scored, and candidates
   of a tree search share their heads.

Every cut leaves a visible marker (``[... N characters left out ...]``) so the judge
knows text is missing. A caller picks the stages it can use: the judge uses all four, the
classifier only ``turns`` (then its tokenizer cuts from the left; see rewards.classifier).

Sizes are measured by rendering: each step estimates how much to cut from token counts of
the pieces (``count``), renders the shortened prompt, and measures it again, so the result
is exact for the renderer while the estimates keep the number of renders to a few (2 to
5 measured; the judge's prompt is rendered on the event loop). The estimate may leave out
a little more than strictly needed (about one exchange of turns), never less. ``fit`` returns
the last state and its size; whether that fits is the caller's to judge (and report).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TypeVar

from search.types import Message

STAGES = ("turns", "user", "system", "response")
KEEP_CHARS = 1000
# Room for a marker and for the rendering around a piece, which its own count misses.
MARKER_TOKENS = 16
# A safety net: each step cuts by an estimate of the whole excess, so a stage takes 1-3.
MAX_STEPS = 32

T = TypeVar("T")


def cut_middle(text: str, cut: int) -> str:
    """``text`` without ``cut`` characters from its middle, marked."""
    if cut <= 0:
        return text
    kept = len(text) - cut
    head = kept // 2
    return (
        f"{text[:head]}\n[... {cut} characters left out ...]\n{text[len(text) - (kept - head) :]}"
    )


def cut_head(text: str, cut: int) -> str:
    """``text`` without its first ``cut`` characters, marked."""
    if cut <= 0:
        return text
    return f"[... {cut} characters left out ...]\n{text[cut:]}"


def render_turn(message: Message) -> str:
    return f"[{message['role']}]\n{message['content']}"


@dataclass(frozen=True)
class Shortened:
    """A conversation and a response, split into what may be left out and what may not,
    with what has been left out so far (see the module docstring)."""

    system: tuple[Message, ...]
    turns: tuple[Message, ...]
    tail: tuple[Message, ...]
    response: str
    dropped: int = 0
    user_cut: int = 0
    system_cut: int = 0
    response_cut: int = 0

    @classmethod
    def of(cls, conversation: Sequence[Message], response: str) -> Shortened:
        messages = list(conversation)
        lead = 0
        while lead < len(messages) and messages[lead]["role"] == "system":
            lead += 1
        users = [i for i in range(lead, len(messages)) if messages[i]["role"] == "user"]
        last_user = users[-1] if users else len(messages)
        return cls(
            tuple(messages[:lead]),
            tuple(messages[lead:last_user]),
            tuple(messages[last_user:]),
            response,
        )

    @property
    def shortened(self) -> bool:
        return any((self.dropped, self.user_cut, self.system_cut, self.response_cut))

    def _longest_system(self) -> int:
        return max(range(len(self.system)), key=lambda i: len(self.system[i]["content"]))

    def conversation(self) -> list[Message]:
        """The kept messages, cuts applied (no marker for left-out turns: see ``dropped``)."""
        system = list(self.system)
        if self.system_cut:
            i = self._longest_system()
            system[i] = {**system[i], "content": cut_middle(system[i]["content"], self.system_cut)}
        tail = list(self.tail)
        if self.user_cut:
            tail[0] = {**tail[0], "content": cut_middle(tail[0]["content"], self.user_cut)}
        return [*system, *self.turns[self.dropped :], *tail]

    @property
    def response_text(self) -> str:
        return cut_head(self.response, self.response_cut)


def fit(
    start: Shortened,
    render: Callable[[Shortened], T],
    size: Callable[[T], int],
    budget: int,
    count: Callable[[str], int],
    stages: Sequence[str] = STAGES,
) -> tuple[Shortened, T, int]:
    """The first state, going through ``stages`` in order, whose rendering's ``size`` is
    at most ``budget``; else the shortest reached. Returns it, its rendering and size.
    ``count`` is the token count of a piece of text, for the estimates."""
    state = start
    rendered = render(state)
    length = size(rendered)
    steps = 0
    for stage in stages:
        while length > budget and steps < MAX_STEPS:
            shorter = _step(state, stage, length - budget, count)
            if shorter is None:
                break
            state, steps = shorter, steps + 1
            rendered = render(state)
            length = size(rendered)
    return state, rendered, length


def _step(
    state: Shortened, stage: str, excess: int, count: Callable[[str], int]
) -> Shortened | None:
    """``state`` shortened by an estimate of ``excess`` tokens at ``stage``; None when
    that stage has nothing left to cut."""
    need = excess + MARKER_TOKENS
    if stage == "turns":
        turns, dropped = state.turns, state.dropped
        if dropped >= len(turns):
            return None
        freed = 0
        while dropped < len(turns) and freed < need:
            freed += count(render_turn(turns[dropped])) + 1
            dropped += 1
        while dropped < len(turns) and turns[dropped]["role"] != "user":
            dropped += 1  # the kept turns start with a user turn
        return replace(state, dropped=dropped)
    if stage == "user":
        if not state.tail or state.tail[0]["role"] != "user":
            return None
        cut = _cut(state.tail[0]["content"], state.user_cut, need, count)
        return None if cut is None else replace(state, user_cut=cut)
    if stage == "system":
        if not state.system:
            return None
        text = state.system[state._longest_system()]["content"]
        cut = _cut(text, state.system_cut, need, count)
        return None if cut is None else replace(state, system_cut=cut)
    if stage == "response":
        cut = _cut(state.response, state.response_cut, need, count)
        return None if cut is None else replace(state, response_cut=cut)
    raise ValueError(f"unknown stage {stage!r}: use {', '.join(STAGES)}")


def _cut(text: str, done: int, need: int, count: Callable[[str], int]) -> int | None:
    """The new total number of characters to cut from ``text`` (``done`` so far) to free
    about ``need`` tokens, keeping ``KEEP_CHARS``; None when no more may go."""
    room = len(text) - KEEP_CHARS - done
    if room <= 0:
        return None
    chars_per_token = len(text) / max(1, count(text))
    return done + min(room, max(1, math.ceil(need * chars_per_token)))
