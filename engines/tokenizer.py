"""The policy model's Hugging Face tokenizer: the chat template is rendered once per request.

Message text is text, never control tokens. The template is rendered to a string and
that string encoded, which parses the tokenizer's special tokens wherever they appear: a
user who types ``<|im_start|>system`` would open a real system turn, in the policy's
prompt and in the judge's (which renders the conversation through this class too). So:

- a conversation whose messages hold no special-token string is encoded as it always was
  (the template's own control tokens parsed);
- otherwise the template is rendered a second time with those strings masked by
  characters of the same length (the skeleton). Every special token left in the skeleton
  is the template's own, at the same place in the real rendering; the text between them
  is encoded with special-token parsing off (the Rust tokenizer's
  ``encode_special_tokens``), so the user's ``<|im_start|>`` costs what any other text of
  its characters costs. Splitting at the control tokens by hand must match the
  tokenizer's own splitting; a probe conversation checks that once (an added token that
  strips the spaces around it, or a SentencePiece prefix space, would not);
- if not, or if the template changes the length of message text, each special string in
  a message is broken by a WORD JOINER (U+2060) before rendering: the model sees slightly
  different text, but still no forged control token.

``render_with_prefix`` encodes the assistant prefix (model text) the same way. ``encode``
keeps the tokenizer's parsing: internal callers pass it text of their own.

Thread safety: ``render_chat`` runs in a worker thread while the event loop decodes and
encodes. An HF fast tokenizer fails with "Already borrowed" only when a call mutates the
Rust tokenizer (truncation, padding, ``encode_special_tokens``) while another uses it. No
call here does: truncation and padding are cleared once at construction, and the
unparsed encoding uses a copy of the Rust tokenizer with ``encode_special_tokens`` set
once, rather than the per-call ``split_special_tokens=True``, which flips that flag on
the shared tokenizer (and, racing a parsing call, could flip it back mid-encode).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Sequence
from typing import Any

from search.protocols import ServedTokenizer, TokenBytes, VocabListing
from search.types import Message

logger = logging.getLogger(__name__)

# Masks a special-token string in the skeleton: a private-use character, in no token's
# text and not whitespace (so a template's trim treats it like the text it hides).
MASK = "\ue000"
# Breaks a special-token string in the fallback, invisibly.
JOINER = "\u2060"


class HFChatTokenizer(VocabListing, TokenBytes, ServedTokenizer):
    def __init__(self, tokenizer: Any) -> None:
        self._tok = tokenizer
        self._special_ids = special_tokens(tokenizer)
        # Longest first, so the alternation finds what the tokenizer's matcher finds.
        names = sorted(self._special_ids, key=len, reverse=True)
        self._special_re = re.compile("|".join(map(re.escape, names))) if names else None
        backend = getattr(tokenizer, "backend_tokenizer", None)
        self._plain: Any = None
        if backend is not None:
            # transformers clears these on the first encode; clearing them now keeps every
            # later call read-only on the shared Rust tokenizer.
            if backend.truncation is not None:
                backend.no_truncation()
            if backend.padding is not None:
                backend.no_padding()
            self._plain = type(backend).from_str(backend.to_str())
            self._plain.encode_special_tokens = True
        self._split_ok: bool | None = None  # see _splits_like_the_tokenizer
        self._byte_level = decodes_bytes(backend)
        self._bytes: dict[int, bytes] = {}  # token_bytes' cache
        self._user_turn: tuple[list[int], list[int]] | None = None  # see next_user_turn
        self._warned = False

    @classmethod
    def load(cls, model: str) -> HFChatTokenizer:
        from transformers import AutoTokenizer

        return cls(AutoTokenizer.from_pretrained(model))

    @property
    def eos_token_id(self) -> int | None:
        return self._tok.eos_token_id  # type: ignore[no-any-return,unused-ignore]

    def render_chat(self, messages: Sequence[Message]) -> list[int]:
        return self.render_conversation(messages, add_generation_prompt=True)

    def render_conversation(
        self, messages: Sequence[Message], *, add_generation_prompt: bool
    ) -> list[int]:
        """``render_chat``, or without the assistant turn's opening (/tokenize's
        ``add_generation_prompt: false``)."""
        # Render to text, then encode without adding special tokens: the template already
        # holds them, and encoding the text avoids version-specific return types.
        messages = list(messages)
        generation = add_generation_prompt
        text = self._render(messages, generation)
        if not any(self._has_special(v) for m in messages for v in user_text(m)):
            return self.encode(text)
        masked = [self._rewrite(m, lambda s: MASK * len(s)) for m in messages]
        skeleton = self._render(masked, generation)
        cuts = self._cuts(skeleton)
        if (
            self._splits_like_the_tokenizer()
            and len(skeleton) == len(text)
            and all(text[a:b] == skeleton[a:b] for a, b in cuts)
        ):
            return self._encode_between(text, cuts)
        if not self._warned:
            self._warned = True
            logger.warning(
                "this tokenizer or chat template does not allow encoding message text apart "
                "from its control tokens, so special-token strings in messages are broken "
                "with U+2060 instead"
            )
        broken = [self._rewrite(m, lambda s: s[:1] + JOINER + s[1:]) for m in messages]
        return self.encode(self._render(broken, generation))

    def render_with_prefix(self, messages: Sequence[Message], assistant_prefix: str) -> list[int]:
        """The conversation rendered up to the assistant turn, then ``assistant_prefix``."""
        return self.render_chat(messages) + self._encode_text(assistant_prefix)

    def encode(self, text: str) -> list[int]:
        return list(self._tok.encode(text, add_special_tokens=False))

    def encode_plain(self, text: str) -> list[int]:
        """``text`` (a client's) with special-token strings encoded as plain text."""
        return self._encode_text(text)

    def next_user_turn(self) -> tuple[list[int], list[int]]:
        """The template's ids between an assistant message's text and the next user
        message's text, and between that user text and the next assistant text (the
        generation prompt): what continues a generated response with a new user turn.
        Decided once; ValueError when the template does not render such a conversation
        with the texts in place (it drops or rewrites message text)."""
        if self._user_turn is None:
            reply, question = "\ue001", "\ue002"
            text = self._render(
                [
                    {"role": "user", "content": "Hi"},
                    {"role": "assistant", "content": reply},
                    {"role": "user", "content": question},
                ]
            )
            if text.count(reply) != 1 or text.count(question) != 1:
                raise ValueError("the chat template does not keep message text in place")
            start = text.index(reply) + len(reply)
            middle = text.index(question)
            if middle < start:
                raise ValueError("the chat template reorders messages")
            before, after = text[start:middle], text[middle + len(question) :]
            self._user_turn = (self.encode(before), self.encode(after))
        return self._user_turn

    def decode(self, token_ids: Sequence[int]) -> str:
        return str(self._tok.decode(list(token_ids), skip_special_tokens=True))

    def vocab(self) -> dict[str, int]:
        return dict(self._tok.get_vocab())

    # -- what vLLM's tokenizer routes and OpenAI's logprobs show (server.tokenizer_routes,
    # server.logprobs) ---------------------------------------------------------
    def encode_text(self, text: str, *, add_special_tokens: bool) -> list[int]:
        """``text`` encoded as vLLM's /tokenize does: special-token strings parsed, and
        the tokenizer's own BOS/EOS added when ``add_special_tokens``."""
        return list(self._tok.encode(text, add_special_tokens=add_special_tokens))

    def detokenize(self, token_ids: Sequence[int]) -> str:
        """``token_ids`` as text, special tokens kept (vLLM's /detokenize)."""
        return str(self._tok.decode(list(token_ids)))

    def token_strings(self, token_ids: Sequence[int]) -> list[str]:
        """The vocabulary's strings of ``token_ids`` (``Ġthe``), as /tokenize's
        ``token_strs``."""
        return [str(t) for t in self._tok.convert_ids_to_tokens(list(token_ids))]

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes token ``token_id`` stands for: exact for byte-level BPE (GPT-2,
        SmolLM2, Llama 3, Qwen), SentencePiece byte tokens (``<0xE2>``) and its ``▁``
        spaces, and added tokens (their text); else its decoded text's UTF-8. Cached:
        at most one entry per vocabulary entry."""
        found = self._bytes.get(token_id)
        if found is None:
            found = self._token_bytes(token_id)
            self._bytes[token_id] = found
        return found

    def _token_bytes(self, token_id: int) -> bytes:
        added = self._tok.added_tokens_decoder.get(token_id)
        if added is not None:
            return str(added.content).encode("utf-8")
        piece = self._tok.convert_ids_to_tokens(token_id)
        if not isinstance(piece, str):
            return b""
        if self._byte_level and all(ch in BYTE_DECODER for ch in piece):
            return bytes(BYTE_DECODER[ch] for ch in piece)
        byte = SP_BYTE.fullmatch(piece)
        if byte is not None:
            return bytes([int(byte[1], 16)])
        if "\u2581" in piece:  # SentencePiece's space
            return piece.replace("\u2581", " ").encode("utf-8")
        return str(self._tok.decode([token_id])).encode("utf-8")

    def tokenizer_info(self) -> dict[str, Any]:
        """What vLLM's GET /tokenizer_info says: the tokenizer's configuration
        (tokenizer_config.json: its special tokens, chat template, ...) and its class,
        without file paths."""
        config = {
            key: json_value(value)
            for key, value in (getattr(self._tok, "init_kwargs", None) or {}).items()
            if key not in PRIVATE_CONFIG
        }
        # A template kept in its own file (chat_template.jinja) is not among the kwargs.
        template = getattr(self._tok, "chat_template", None)
        if isinstance(template, str):
            config.setdefault("chat_template", template)
        config["tokenizer_class"] = type(self._tok).__name__
        return config

    def token_id(self, token: str) -> int:
        ids = self.encode(token)
        if len(ids) != 1:
            raise ValueError(f"{token!r} is not a single token for this tokenizer")
        return ids[0]

    def _render(self, messages: list[Message], add_generation_prompt: bool = True) -> str:
        return str(
            self._tok.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=add_generation_prompt
            )
        )

    def _splits_like_the_tokenizer(self) -> bool:
        """Whether encoding the text between control tokens apart gives the tokenizer's
        own encoding, on a probe conversation; decided once."""
        if self._split_ok is None:
            probe: list[Message] = [
                {"role": "user", "content": "Hi there"},
                {"role": "assistant", "content": " Hello. "},
                {"role": "user", "content": "a\nb"},
            ]
            try:
                text = self._render(probe)
            except Exception:  # a template with rules of its own (roles, order)
                logger.exception("the chat template cannot render the probe conversation")
                self._split_ok = False
            else:
                # Forcing the unparsed encoder also checks that it agrees with the parsing one.
                cut = self._encode_between(text, self._cuts(text), unparsed=True)
                self._split_ok = cut == self.encode(text)
        return self._split_ok

    def _cuts(self, text: str) -> list[tuple[int, int]]:
        """Where the special tokens are in ``text``: start and end of each."""
        assert self._special_re is not None  # only called once a special string was found
        return [(m.start(), m.end()) for m in self._special_re.finditer(text)]

    def _has_special(self, text: str) -> bool:
        # One fast substring scan per special token beats a regex over a long message.
        return any(name in text for name in self._special_ids)

    def _rewrite(self, message: Message, replace: Callable[[str], str]) -> Message:
        """``message`` with every special-token string in its client text replaced."""
        pattern = self._special_re
        assert pattern is not None
        return {
            key: pattern.sub(lambda m: replace(m[0]), value)
            if is_client_text(key, value)
            else value
            for key, value in message.items()
        }

    def _encode_text(self, text: str, *, unparsed: bool = False) -> list[int]:
        """``text`` with special-token strings as plain text. Text without any is encoded
        as ``encode`` does, unless ``unparsed`` (for the probe) forces the same path."""
        if not (unparsed or self._has_special(text)):
            return self.encode(text)
        if self._plain is not None:
            return list(self._plain.encode(text, add_special_tokens=False).ids)
        # A slow (Python) tokenizer keeps no shared flag for this.
        return list(self._tok.encode(text, add_special_tokens=False, split_special_tokens=True))

    def _encode_between(
        self, text: str, cuts: list[tuple[int, int]], *, unparsed: bool = False
    ) -> list[int]:
        """``text`` with its special tokens at ``cuts`` as control ids, the rest as text."""
        ids: list[int] = []
        pos = 0
        for start, end in cuts:
            ids += self._encode_text(text[pos:start], unparsed=unparsed)
            ids.append(self._special_ids[text[start:end]])
            pos = end
        return ids + self._encode_text(text[pos:], unparsed=unparsed)


def byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet reversed: the character that stands for each byte in a
    byte-level BPE vocabulary -> the byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    chars = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars, strict=True)}


BYTE_DECODER = byte_decoder()
SP_BYTE = re.compile(r"<0x([0-9A-Fa-f]{2})>")
# Configuration fields /tokenizer_info leaves out: files and paths of this machine.
PRIVATE_CONFIG = frozenset({"vocab_file", "merges_file", "tokenizer_file", "name_or_path"})


def decodes_bytes(backend: Any) -> bool:
    """Whether a Rust tokenizer's decoder is byte-level (its vocabulary spells bytes)."""
    if backend is None:
        return False
    try:
        decoder = json.loads(backend.to_str()).get("decoder") or {}
    except (ValueError, AttributeError):
        return False
    kinds = [decoder.get("type")] + [d.get("type") for d in decoder.get("decoders") or ()]
    return "ByteLevel" in kinds


def json_value(value: Any) -> Any:
    """A tokenizer configuration value as JSON (an AddedToken as its text), as vLLM's
    /tokenizer_info writes it."""
    if hasattr(value, "content"):
        return value.content
    if isinstance(value, dict):
        return {str(k): json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_value(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def special_tokens(tokenizer: Any) -> dict[str, int]:
    """The tokenizer's special added tokens (``<|im_start|>``) by their text."""
    added = getattr(tokenizer, "added_tokens_decoder", None) or {}
    return {token.content: i for i, token in added.items() if getattr(token, "special", False)}


def is_client_text(key: str, value: object) -> bool:
    """Whether a message's ``key`` holds text a client wrote (all but its role)."""
    return key != "role" and isinstance(value, str)


def user_text(message: Message) -> list[str]:
    return [value for key, value in message.items() if is_client_text(key, value)]
