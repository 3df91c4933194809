"""End to end, with the official openai client and plain HTTP against the server started
as the README starts it: the chosen answer's logprobs under a search (chat, streamed and
not; completions with echo), and vLLM's tokenizer routes in vLLM's shapes."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.e2e.conftest import MODEL, question

pytestmark = pytest.mark.e2e

EOS = "<|im_end|>"


def joined(entries: list[object]) -> str:
    """The entries' own bytes, joined: the answer's exact text (the end-of-sequence token
    spelled out when the answer stopped on it)."""
    return bytes(b for e in entries for b in e.bytes).decode("utf-8")  # type: ignore[attr-defined]


def test_chat_logprobs_of_the_answer_a_search_chose(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model=MODEL,
        messages=question(3),
        max_tokens=16,
        logprobs=True,
        top_logprobs=2,
        extra_body={"search": {"algorithm": "bon", "n": 4}},
    )
    choice = r.choices[0]
    text = choice.message.content
    assert choice.logprobs is not None and choice.logprobs.content
    content = choice.logprobs.content
    assert len(content) == r.usage.completion_tokens
    # The tokens join to the answer text (the end of turn's token after it if it stopped):
    # their bytes always, their texts unless a character is split over tokens.
    expected = text + EOS if choice.finish_reason == "stop" else text
    assert joined(content) == expected
    tokens = "".join(e.token for e in content)
    assert tokens == expected or "\ufffd" in tokens
    for entry in content:
        assert entry.logprob <= 0.0
        assert [t.logprob for t in entry.top_logprobs] == sorted(
            (t.logprob for t in entry.top_logprobs), reverse=True
        )
        assert len(entry.top_logprobs) == 2
    assert r.model_extra["search"]["algorithm"] == "bon"


def test_chat_stream_logprobs(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model=MODEL,
        messages=question(4),
        max_tokens=12,
        stream=True,
        logprobs=True,
        top_logprobs=1,
        extra_body={"search": {"algorithm": "bon", "n": 2}},
    )
    text, entries, finish = "", [], None
    for chunk in stream:  # OpenAI's loop, as its docs write it
        choice = chunk.choices[0]
        text += choice.delta.content or ""
        if choice.logprobs and choice.logprobs.content:
            entries += choice.logprobs.content
        finish = choice.finish_reason or finish
    assert entries
    assert joined(entries) == (text + EOS if finish == "stop" else text)


def test_completions_echo_scores_the_prompt(client: openai.OpenAI) -> None:
    prompt = "The three primary colors are red, blue and"
    r = client.completions.create(model=MODEL, prompt=prompt, echo=True, logprobs=1, max_tokens=0)
    choice = r.choices[0]
    assert choice.text == prompt
    lp = choice.logprobs
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    assert all(x <= 0.0 for x in lp.token_logprobs[1:])
    assert "".join(lp.tokens) == prompt
    assert r.usage.completion_tokens == 0


def test_tokenize_and_detokenize_in_vllms_shapes(server: str, client: openai.OpenAI) -> None:
    with httpx.Client(base_url=server, timeout=30) as http:
        prompt = http.post(
            "/tokenize",
            json={"model": MODEL, "prompt": "Hello world", "return_token_strs": True},
        )
        chat = http.post("/tokenize", json={"model": MODEL, "messages": question(0)})
        back = http.post("/detokenize", json={"model": MODEL, "tokens": prompt.json()["tokens"]})
        info = http.get("/tokenizer_info")
    assert prompt.status_code == chat.status_code == back.status_code == info.status_code == 200
    body = prompt.json()
    assert set(body) == {"count", "max_model_len", "tokens", "token_strs"}
    assert body["count"] == len(body["tokens"]) == len(body["token_strs"]) > 0
    assert back.json() == {"prompt": "Hello world"}
    # A conversation's ids are the ones a chat request starts from.
    answer = client.chat.completions.create(
        model=MODEL, messages=question(0), max_tokens=1, temperature=0
    )
    assert chat.json()["count"] == answer.usage.prompt_tokens
    assert info.json()["eos_token"] == EOS and info.json()["tokenizer_class"]
