"""Streaming splits the chosen text at token boundaries; the pieces always join to it."""

from __future__ import annotations

import random
import time
from collections.abc import Sequence

import pytest

from engines.default_model import ensure_default_model
from engines.tokenizer import HFChatTokenizer
from search.fakes import CharTokenizer
from server.pieces import token_pieces

# The default model's real tokenizer (converted on first use), no engine.
pytestmark = pytest.mark.model


def pieces(tokenizer: object, ids: Sequence[int], text: str) -> list[str]:
    return list(token_pieces(tokenizer, ids, text))  # type: ignore[arg-type]


class ByteTokenizer(CharTokenizer):
    """Ids are UTF-8 bytes; a prefix that cuts a character decodes with U+FFFD at its end."""

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, token_ids: Sequence[int]) -> str:
        return bytes(token_ids).decode("utf-8", errors="replace")


def test_one_piece_per_token() -> None:
    tok = CharTokenizer()
    assert pieces(tok, tok.encode("héllo"), "héllo") == ["h", "é", "l", "l", "o"]


def test_pieces_join_to_text() -> None:
    tok = CharTokenizer()
    text = "Hello, world!\n  ok"
    got = pieces(tok, tok.encode(text), text)
    assert "".join(got) == text
    assert len(got) == len(text)


def test_stop_string_is_clipped() -> None:
    tok = CharTokenizer()
    # The engine generated "hi there STOP" but cut the stop string from the text.
    assert pieces(tok, tok.encode("hi there STOP"), "hi there ") == list("hi there ")


def test_clipped_mid_token() -> None:
    class Words(CharTokenizer):
        words = ("ab", "cd", "ef")

        def decode(self, token_ids: Sequence[int]) -> str:
            return "".join(self.words[i] for i in token_ids)

    assert pieces(Words(), [0, 1, 2], "abc") == ["ab", "c"]


def test_partial_characters_are_held_back() -> None:
    tok = ByteTokenizer()
    text = "aé€b"
    ids = tok.encode(text)
    assert len(ids) == 7  # a, é (2 bytes), € (3 bytes), b
    got = pieces(tok, ids, text)
    assert got == ["a", "é", "€", "b"]
    assert all("\ufffd" not in p for p in got)


def test_replacement_char_in_the_text_is_held_until_the_next_token() -> None:
    tok = ByteTokenizer()
    ids = [0x61, 0xFF, 0x62]  # "a", an invalid byte (decodes to U+FFFD), "b"
    assert tok.decode(ids) == "a\ufffdb"
    # The prefix "a\ufffd" looks like a cut character, so it waits for the next token.
    assert pieces(tok, ids, "a\ufffdb") == ["a", "\ufffdb"]
    # At the very end nothing follows: the rest of the text is sent as is.
    assert pieces(tok, ids[:2], "a\ufffd") == ["a", "\ufffd"]


def test_multi_token_character_split_by_the_stop_cut() -> None:
    tok = ByteTokenizer()
    ids = tok.encode("x€")[:-1]  # the last byte never came: the text holds only "x"
    assert pieces(tok, ids, "x") == ["x"]


def test_decode_mismatch_falls_back_to_whole_text() -> None:
    class Other(CharTokenizer):
        def decode(self, token_ids: Sequence[int]) -> str:
            return "Z" * len(token_ids)

    assert pieces(Other(), [1, 2, 3], "abc") == ["abc"]


def test_empty() -> None:
    tok = CharTokenizer()
    assert pieces(tok, [], "") == []
    assert pieces(tok, [], "no ids") == ["no ids"]


# -- the real tokenizer ------------------------------------------------------------------

# Accents, CJK, emoji (several made of many byte-level tokens, one a ZWJ sequence),
# mathematical letters outside the BMP, tabs and newlines.
MIXED = (
    "Héllo wörld — 你好，世界！ 🎉🚀 naïve ½ ∑ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 👩‍👩‍👧 Ελληνικά, русский; 1,234.5\n\t end. "
)


@pytest.fixture(scope="module")
def smol() -> HFChatTokenizer:
    return HFChatTokenizer.load(str(ensure_default_model(None)))


def test_real_tokenizer_pieces_join_to_the_decode(smol: HFChatTokenizer) -> None:
    ids = smol.encode(MIXED * 3)
    text = smol.decode(ids)
    got = pieces(smol, ids, text)
    assert "".join(got) == text
    # Whole characters only, and mostly one piece per token (a character of several
    # byte tokens is one piece).
    assert all("\ufffd" not in p for p in got)
    assert len(ids) / 2 < len(got) <= len(ids)
    assert "🎉" in got or any(p.endswith("🎉") for p in got)


def test_real_tokenizer_stop_cut_and_garbage_ids(smol: HFChatTokenizer) -> None:
    rng = random.Random(0)
    ids = smol.encode(MIXED * 2)
    for _ in range(100):
        sample = ids[rng.randrange(len(ids)) :][: rng.randrange(1, 80)]
        # Byte tokens in any order (invalid UTF-8) and the special tokens, which decode
        # skips: the pieces still join to the text, whatever it is.
        garbage = [rng.randrange(300) for _ in range(rng.randrange(1, 40))]
        for token_ids in (sample, garbage):
            full = smol.decode(token_ids)
            for text in (full, full[: rng.randrange(len(full) + 1)]):
                assert "".join(pieces(smol, token_ids, text)) == text


def split_seconds(tokenizer: HFChatTokenizer, ids: Sequence[int]) -> float:
    """Best of 3: the least disturbed by the rest of the machine."""
    text = tokenizer.decode(ids)
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        got = pieces(tokenizer, ids, text)
        best = min(best, time.perf_counter() - start)
        assert "".join(got) == text
    return best


def test_stream_split_is_linear_h5(smol: HFChatTokenizer) -> None:
    # Regression (H5): decoding growing prefixes took 0.1 s for 1,024 tokens and 2.2 s for
    # 4,096 (four times the tokens, 22 times the time), all of it on the event loop.
    ids = smol.encode(MIXED * 120)[:4096]
    assert len(ids) == 4096
    long = split_seconds(smol, ids)
    short = split_seconds(smol, ids[:1024])
    assert long < 0.5
    # Linear gives about 4; quadratic about 16.
    assert long / short < 8
