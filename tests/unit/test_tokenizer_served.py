"""What the tokenizer routes and the logprobs read of the real SmolLM2 tokenizer: each
token's own bytes (a character split over byte-level tokens joins back exactly), the
/tokenizer_info configuration (no file paths), vLLM's /tokenize encodings and a
conversation rendered with and without the assistant's opening."""

from __future__ import annotations

import json

import pytest
from transformers import AutoTokenizer

from engines.default_model import ensure_default_model
from engines.tokenizer import BYTE_DECODER, HFChatTokenizer
from search.protocols import ServedTokenizer, TokenBytes

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def smol() -> HFChatTokenizer:
    return HFChatTokenizer(AutoTokenizer.from_pretrained(str(ensure_default_model(None))))


def test_the_byte_alphabet_is_gpt2s() -> None:
    assert len(BYTE_DECODER) == 256 and sorted(BYTE_DECODER.values()) == list(range(256))
    assert BYTE_DECODER["Ġ"] == ord(" ") and BYTE_DECODER["!"] == ord("!")


def test_token_bytes_join_into_the_exact_text(smol: HFChatTokenizer) -> None:
    assert isinstance(smol, TokenBytes) and isinstance(smol, ServedTokenizer)
    text = "Hi 😀 café, naïve 日本"
    ids = smol.encode(text)
    pieces = [smol.token_bytes(i) for i in ids]
    assert b"".join(pieces).decode("utf-8") == text
    # The emoji is split over tokens: no single one decodes on its own.
    assert any(_not_utf8(p) for p in pieces)
    # A special token is its text.
    assert smol.token_bytes(2) == b"<|im_end|>"


def _not_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def test_tokenizer_info(smol: HFChatTokenizer) -> None:
    info = smol.tokenizer_info()
    assert json.dumps(info)  # JSON as it is
    assert (info["eos_token"], info["bos_token"]) == ("<|im_end|>", "<|im_start|>")
    assert info["tokenizer_class"] and "chat_template" in info
    # Nothing of this machine's file system.
    assert not {"name_or_path", "vocab_file", "merges_file"} & set(info)
    assert str(ensure_default_model(None)) not in json.dumps(info)


def test_encode_text_parses_special_tokens(smol: HFChatTokenizer) -> None:
    assert smol.encode_text("<|im_end|>", add_special_tokens=False) == [2]
    # SmolLM2 adds no BOS of its own.
    assert smol.encode_text("hi", add_special_tokens=True) == smol.encode("hi")
    assert smol.detokenize([1, *smol.encode("hi"), 2]) == "<|im_start|>hi<|im_end|>"
    assert smol.token_strings(smol.encode(" the")) == ["Ġthe"]


def test_a_conversation_without_the_generation_prompt(smol: HFChatTokenizer) -> None:
    messages = [{"role": "user", "content": "Say <|im_end|> hi"}]
    full = smol.render_chat(messages)
    bare = smol.render_conversation(messages, add_generation_prompt=False)
    assert full[: len(bare)] == bare
    assert smol.decode(full[len(bare) :]) == "assistant\n"
    # The user's special-token string stays text in both.
    assert full.count(2) == bare.count(2) == 2
