"""Stream chunking: the incremental detokenizer (server/chat/pieces.py) against the
prefix-redecoding one it replaced (quadratic), same tokenizer, same text, same run.

    .venv/bin/python bench/stream_pieces.py

Prints, per answer length, the best of 3 times of each and their ratio; both must join to
the same text. Ratios, not absolute times, are what to compare across machines."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence

from engines.default_model import ensure_default_model
from engines.tokenizer import HFChatTokenizer
from server.pieces import token_pieces

SAMPLE = "Héllo wörld — 你好，世界！ 🎉🚀 naïve café, ½ ∑ Ελληνικά, русский; 1,234.5\n\t end. "


def redecoding_pieces(
    tokenizer: HFChatTokenizer, token_ids: Sequence[int], text: str
) -> Iterator[str]:
    """The old way: decode every growing prefix (O(n^2) in the answer's tokens)."""
    sent = ""
    for end in range(1, len(token_ids) + 1):
        prefix = tokenizer.decode(token_ids[:end])
        if prefix.endswith("\ufffd"):
            continue
        prefix = prefix[: len(text)]
        if len(prefix) > len(sent) and text.startswith(prefix):
            yield prefix[len(sent) :]
            sent = prefix
    if sent != text:
        yield text[len(sent) :]


def best_of(
    runs: int, split: Callable[..., Iterator[str]], tok: HFChatTokenizer, ids: tuple[int, ...]
) -> float:
    text = tok.decode(ids)
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        joined = "".join(split(tok, ids, text))
        best = min(best, time.perf_counter() - start)
        assert joined == text, split.__name__
    return best


def main() -> None:
    tok = HFChatTokenizer.load(str(ensure_default_model(None)))
    ids = tok.encode(SAMPLE * 200)
    print(f"{'tokens':>7} {'incremental s':>14} {'redecoding s':>13} {'ratio':>7}")
    for n in (256, 1024, 4096):
        sub = tuple(ids[:n])
        new = best_of(3, token_pieces, tok, sub)
        old = best_of(3, redecoding_pieces, tok, sub)
        print(f"{n:>7} {new:>14.4f} {old:>13.4f} {old / new:>6.0f}x")


if __name__ == "__main__":
    main()
