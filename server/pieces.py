"""Split a chosen answer into stream chunks at token boundaries, in linear time.

A stream sends the chosen text in pieces, one per token where it can, so a client sees
the answer arrive the way a plain vLLM stream would. The pieces must join to exactly the
answer's ``text`` (the engine's, with any stop string already cut off), and a character
made of several tokens (an emoji from byte-level BPE) must never be split.

Decoding growing prefixes (``decode(ids[:end])`` for every ``end``) does both, but costs
O(n^2) per answer: 4,096 tokens took about a second of the event loop. So this decodes
incrementally, as vLLM's ``detokenize_incrementally`` and TGI's ``decode_token`` do. Only
a small window is decoded per token: ``ids[prefix:end]``, where ``ids[prefix:read]`` were
sent already and are decoded again only as context (SentencePiece drops a token's leading
space at the start of a decode, and a byte token needs its neighbours to form a
character). The new text is what the window adds to that context. A window whose text
ends in U+FFFD may be a cut character, so it waits for the next token, at most
``MAX_PENDING`` tokens (no UTF-8 character needs more than 4), which keeps every window
short even when the output holds invalid bytes or runs of skipped special tokens.

Every piece is checked against ``text``: one past its end is clipped (a stop string), and
if the incremental text ever disagrees with ``text`` (a tokenizer whose decode is not
additive), the rest of ``text`` is sent in one piece. So the pieces always join to
``text``, whatever the tokenizer does.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

from search.protocols import ChatTokenizer
from search.types import Candidate

logger = logging.getLogger(__name__)

# Tokens a window may wait for a character to complete before it is sent as it is.
MAX_PENDING = 8


def token_pieces(tokenizer: ChatTokenizer, token_ids: Sequence[int], text: str) -> Iterator[str]:
    """Split ``text`` at token boundaries; the pieces join to exactly ``text``."""
    for piece, _ in token_spans(tokenizer, token_ids, text):
        yield piece


def token_spans(
    tokenizer: ChatTokenizer, token_ids: Sequence[int], text: str
) -> Iterator[tuple[str, int]]:
    """``token_pieces`` with the tokens each piece covers: ``(piece, end)``, where the
    piece is the text of ``token_ids[previous end:end]``. Tokens after the last end (a
    cut stop string, the end-of-sequence token) have no text of their own; a stream sends
    their logprobs with the finish chunk."""
    sent = 0  # characters of text sent so far
    prefix = read = 0  # ids[prefix:read] is the context, already sent
    context = ""  # decode(ids[prefix:read])
    for end in range(1, len(token_ids) + 1):
        if sent == len(text):
            break  # the rest was cut off as a stop string
        window = tokenizer.decode(token_ids[prefix:end])
        complete = not window.endswith("\ufffd") and len(window) > len(context)
        if not complete and end - read < MAX_PENDING:
            continue
        if not window.startswith(context):
            break  # the decode is not additive here: send the rest of text as it is
        piece = window[len(context) :][: len(text) - sent]
        if not text.startswith(piece, sent):
            break
        if piece:
            yield piece, end
            sent += len(piece)
        prefix, read = read, end
        context = tokenizer.decode(token_ids[prefix:read])
    if sent != len(text):
        yield text[sent:], len(token_ids)


def streamed_prefix(chosen: Sequence[Candidate], sent: str) -> int:
    """How much of the first chosen answer the ``sent`` text (committed while the search
    ran) already covers: all of ``sent``, or 0 when the answer does not extend it (a
    search committed to text it then left; it is sent whole then)."""
    if chosen[0].text.startswith(sent):
        return len(sent)
    logger.error("the answer does not extend the streamed text; sending it whole")
    return 0


def unsent_pieces(tokenizer: ChatTokenizer, candidate: Candidate, already: int) -> Iterator[str]:
    """``candidate``'s text after its first ``already`` characters, in token pieces."""
    position = 0
    for piece in token_pieces(tokenizer, candidate.completion.token_ids, candidate.text):
        rest = piece[max(0, already - position) :]
        position += len(piece)
        if rest:
            yield rest
