"""Logprobs over fakes: OpenAI's shapes for chat (``logprobs``, ``top_logprobs``) and
completions (``logprobs: k``, ``echo``, ``max_tokens: 0``), streamed and not, the chosen
answer's numbers as the engine gave them for every algorithm (stitched ones included),
and the refusals and limits.

The fake model (search.fakes.LogprobGenerator) gives each token a fixed logprob
(``token_logprob``) and finds a space the most likely token everywhere
(``alternatives``); the CharTokenizer makes one token of each character.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import pytest

from search.fakes import (
    LIKELIEST_LOGPROB,
    CharTokenizer,
    LogprobGenerator,
    TablePRM,
    TableReward,
    WordOverlapUtility,
    alternatives,
    stepped,
    token_logprob,
)
from search.registry import STRATEGIES
from search.types import Candidate, Completion, SamplingConfig
from server.logprobs import TokenLogprobs, chat_choice_content, clamp, completion_logprobs
from server.pieces import token_spans
from server.settings import Settings
from tests.unit.conftest import REWARDS, make_runtime, scripted

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
USER = [{"role": "user", "content": "hi"}]


def logprob_runtime(**kw: Any) -> Any:
    gen = LogprobGenerator(scripted())
    return gen, make_runtime(gen, TableReward(REWARDS), **kw)


def chat_body(**kw: Any) -> dict[str, Any]:
    return {"model": "m", "messages": USER, **kw}


def expected_content(text: str, k: int) -> list[dict[str, Any]]:
    """What the fake model's logprobs of ``text`` look like in a chat choice."""
    out = []
    for ch in text:
        tok = ord(ch)
        top = sorted(alternatives(tok, k).items(), key=lambda item: (-item[1], item[0]))[:k]
        out.append(
            {
                "token": ch,
                "logprob": token_logprob(tok),
                "bytes": list(ch.encode()),
                "top_logprobs": [
                    {"token": chr(t), "logprob": lp, "bytes": list(chr(t).encode())}
                    for t, lp in top
                ],
            }
        )
    return out


# -- chat -----------------------------------------------------------------------------
async def test_chat_logprobs_of_the_chosen_answer(serve_app: Any) -> None:
    gen, runtime = logprob_runtime()
    async with serve_app(runtime) as client:
        r = await client.post(CHAT, json=chat_body(logprobs=True, top_logprobs=2))
    assert r.status_code == 200, r.text
    (choice,) = r.json()["choices"]
    assert choice["message"]["content"] == "three"
    assert choice["logprobs"] == {"content": expected_content("three", 2), "refusal": None}
    # The space leads every position's alternatives, most likely first.
    first = choice["logprobs"]["content"][0]["top_logprobs"]
    assert [e["token"] for e in first] == [" ", "t"]
    assert first[0]["logprob"] == LIKELIEST_LOGPROB
    # Every sample was asked for them (the answer is one of them).
    params: SamplingConfig = gen.inner.calls[0][1]
    assert (params.logprobs, params.top_logprobs) == (True, 2)


async def test_chat_logprobs_without_top_logprobs(serve_app: Any) -> None:
    gen, runtime = logprob_runtime()
    async with serve_app(runtime) as client:
        r = await client.post(CHAT, json=chat_body(logprobs=True))
    content = r.json()["choices"][0]["logprobs"]["content"]
    assert content == expected_content("three", 0)
    assert all(e["top_logprobs"] == [] for e in content)
    params = gen.inner.calls[0][1]
    assert (params.logprobs, params.top_logprobs) == (True, 0)


async def test_chat_without_logprobs_asks_the_engine_for_none(serve_app: Any) -> None:
    gen, runtime = logprob_runtime()
    async with serve_app(runtime) as client:
        r = await client.post(CHAT, json=chat_body(logprobs=False, top_logprobs=0))
    assert r.json()["choices"][0]["logprobs"] is None
    params = gen.inner.calls[0][1]
    assert (params.logprobs, params.top_logprobs) == (False, 0)


async def test_chat_n_choices_each_have_their_own(serve_app: Any) -> None:
    _, runtime = logprob_runtime()
    async with serve_app(runtime) as client:
        r = await client.post(CHAT, json=chat_body(n=2, logprobs=True, top_logprobs=1))
    choices = r.json()["choices"]
    assert [c["message"]["content"] for c in choices] == ["three", "seven"]
    for choice in choices:
        text = choice["message"]["content"]
        assert choice["logprobs"]["content"] == expected_content(text, 1)


async def test_chat_stream_sends_each_tokens_logprobs_with_its_text(
    serve_app: Any, parse_sse: Any
) -> None:
    _, runtime = logprob_runtime()
    async with serve_app(runtime) as client:
        whole = (await client.post(CHAT, json=chat_body(logprobs=True, top_logprobs=2))).json()
        r = await client.post(CHAT, json=chat_body(stream=True, logprobs=True, top_logprobs=2))
    chunks = parse_sse(r.text)
    assert chunks[-1] == "[DONE]"
    chunks = chunks[:-1]
    assert all(c["choices"] for c in chunks)  # OpenAI's loop never meets an empty one
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    content = [
        e
        for c in chunks
        if c["choices"][0]["logprobs"]
        for e in c["choices"][0]["logprobs"]["content"]
    ]
    assert text == "three"
    assert content == whole["choices"][0]["logprobs"]["content"]
    # A chunk's entries are its own text's tokens.
    for c in chunks:
        choice = c["choices"][0]
        if choice["logprobs"]:
            joined = "".join(e["token"] for e in choice["logprobs"]["content"])
            assert joined == choice["delta"].get("content", "")
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop" and "search" in chunks[-1]


async def test_chat_stream_with_logprobs_commits_nothing_early(
    serve_app: Any, parse_sse: Any
) -> None:
    """A search that streams its committed text does not with logprobs: the chunks carry
    the chosen answer's own logprobs, known at the end."""
    text = "ab\n\ncd"

    class Steps:
        async def generate(
            self, prompt_ids: Sequence[int], params: SamplingConfig, n: int = 1
        ) -> list[Completion]:
            done = len(CharTokenizer().decode(prompt_ids).split("<assistant>", 1)[1])
            return [stepped(text[done:], params) for _ in range(n)]

    gen = LogprobGenerator(Steps())
    runtime = make_runtime(gen, TableReward({}), prms={"p": TablePRM({})}, default_prm="p")
    search = {"algorithm": "beam_search", "n": 2, "beam_width": 2, "max_step_tokens": 8}
    async with serve_app(runtime) as client:
        r = await client.post(
            CHAT, json=chat_body(stream=True, logprobs=True, search=search, max_tokens=8)
        )
    chunks = parse_sse(r.text)[:-1]
    with_text = [c for c in chunks if c["choices"][0]["delta"].get("content")]
    assert all(c["choices"][0]["logprobs"] for c in with_text)
    content = [
        e
        for c in chunks
        if c["choices"][0]["logprobs"]
        for e in c["choices"][0]["logprobs"]["content"]
    ]
    assert "".join(e["token"] for e in content) == text


class AnyPrompt:
    """Answers every call with "First, 2 and 2.\\n\\nThe answer: 4." as vLLM would under the
    call's stop strings and max_tokens, continuing what the prompt already holds of it."""

    TEXT = "First, 2 and 2.\n\nThe answer: 4."

    async def generate(
        self, prompt_ids: Sequence[int], params: SamplingConfig, n: int = 1
    ) -> list[Completion]:
        prompt = CharTokenizer().decode(prompt_ids)
        done = prompt.rsplit("<assistant>", 1)[1] if "<assistant>" in prompt else ""
        rest = self.TEXT[len(done) :] if self.TEXT.startswith(done) else self.TEXT
        return [stepped(rest, params) for _ in range(n)]


SEARCHES = {
    "bon": {"n": 2},
    "none": {},
    "rbon_kl": {"n": 2},
    "rbon_wd": {"n": 2, "utility": "chrf"},
    "srbon": {"n": 2, "utility": "chrf"},
    "mbr": {"n": 2, "utility": "chrf"},
    "majority": {"n": 2},
    "treebon": {"n": 2, "layers": 2, "branching": 2},
    "spec_rejection": {"n": 2, "n_initial": 2, "decision_tokens": 4},
    "darwin": {"mutations": 1, "cycles": 1, "top_k": 2, "replacement_period": 4},
    "adaptive_bon": {"n": 4, "round_size": 2},
    "beam_search": {"n": 2, "beam_width": 2, "max_step_tokens": 8},
    "dvts": {"n": 2, "beam_width": 2, "max_step_tokens": 8},
    "particle_filtering": {"n": 2, "max_step_tokens": 8},
}


def test_every_algorithm_is_covered() -> None:
    assert set(SEARCHES) == set(STRATEGIES)


@pytest.mark.parametrize("algorithm", sorted(SEARCHES))
async def test_every_algorithm_answers_with_the_engines_logprobs(
    serve_app: Any, algorithm: str
) -> None:
    """Sampled once or stitched from several engine calls (tree and step searches,
    DARWIN's beams), the chosen answer has one entry per token, the engine's."""
    gen = LogprobGenerator(AnyPrompt())
    utilities = {"chrf": WordOverlapUtility(), "embedding": WordOverlapUtility()}
    runtime = make_runtime(
        gen,
        TableReward({}, default=0.5),
        utilities=utilities,
        prms={"p": TablePRM({}, default=0.5)},
        default_prm="p",
    )
    search = {"algorithm": algorithm, **SEARCHES[algorithm]}
    async with serve_app(runtime) as client:
        r = await client.post(
            CHAT, json=chat_body(max_tokens=40, logprobs=True, top_logprobs=1, search=search)
        )
    assert r.status_code == 200, r.text
    data = r.json()
    (choice,) = data["choices"]
    text = choice["message"]["content"]
    content = choice["logprobs"]["content"]
    assert len(content) == data["usage"]["completion_tokens"]
    assert "".join(e["token"] for e in content) == text
    assert [e["logprob"] for e in content] == [token_logprob(ord(c)) for c in text]
    assert all(len(e["top_logprobs"]) == 1 for e in content)


def test_an_answer_without_the_engines_logprobs_has_none() -> None:
    """An answer the deadline cut is rebuilt from its text: its choice says null rather
    than make numbers up."""
    rebuilt = Completion((104, 105), "hi", "length")
    assert TokenLogprobs.of(rebuilt) is None

    prepared = SimpleNamespace(
        request=SimpleNamespace(logprobs=True, top_logprobs=2),
        context=SimpleNamespace(tokenizer=CharTokenizer()),
    )
    assert chat_choice_content(prepared, Candidate(rebuilt, 0.5)) is None  # type: ignore[arg-type]


def test_minus_infinity_is_sent_as_openais_minus_9999() -> None:
    assert clamp(float("-inf")) == -9999.0
    assert clamp(float("nan")) == -9999.0
    assert clamp(-3.5) == -3.5


def test_token_spans_cover_every_token_once() -> None:
    tok = CharTokenizer()
    ids = [ord(c) for c in "abc"] + [0]  # "abc" then a token with no text of its own
    spans = list(token_spans(tok, ids, "abc"))
    assert "".join(p for p, _ in spans) == "abc"
    assert [end for _, end in spans] == [1, 2, 3]
    # The stop string "c" cut from the text: its token is left for the finish chunk.
    assert list(token_spans(tok, ids, "ab")) == [("a", 1), ("b", 2)]


def test_completion_logprobs_shape_and_offsets() -> None:
    tok = CharTokenizer()
    tokens = TokenLogprobs(
        (104, 105, 33),
        (None, -0.5, float("-inf")),
        (None, {105: -0.5, 32: -0.1, 106: -2.0}, {33: float("-inf"), 32: -0.1}),
    )
    out = completion_logprobs(tok, tokens, 1)
    assert out == {
        "tokens": ["h", "i", "!"],
        "token_logprobs": [None, -0.5, -9999.0],
        # The most likely token and the chosen one (k + 1 at most).
        "top_logprobs": [None, {" ": -0.1, "i": -0.5}, {" ": -0.1, "!": -9999.0}],
        "text_offset": [0, 1, 2],
    }


def test_text_offsets_count_characters_of_split_bytes() -> None:
    """A character split over two tokens: both tokens are at its position."""

    class ByteTokens(CharTokenizer):
        def token_bytes(self, token_id: int) -> bytes:
            return {1: b"a", 2: b"\xc3", 3: b"\xa9", 4: b"b"}[token_id]

    tokens = TokenLogprobs((1, 2, 3, 4), (-1.0,) * 4, (None,) * 4)
    out = completion_logprobs(ByteTokens(), tokens, 0)
    assert out["text_offset"] == [0, 1, 1, 2]
    assert out["tokens"] == ["a", "\ufffd", "\ufffd", "b"]


# -- completions --------------------------------------------------------------------
def completion_body(**kw: Any) -> dict[str, Any]:
    return {"model": "m", "prompt": "hi", **kw}


async def test_completions_logprobs_k(serve_app: Any) -> None:
    gen, runtime = logprob_runtime()
    async with serve_app(runtime) as client:
        r = await client.post(COMPLETIONS, json=completion_body(logprobs=2))
    assert r.status_code == 200, r.text
    (choice,) = r.json()["choices"]
    assert choice["text"] == "three"
    lp = choice["logprobs"]
    assert lp["tokens"] == list("three")
    assert lp["token_logprobs"] == [token_logprob(ord(c)) for c in "three"]
    assert lp["text_offset"] == [0, 1, 2, 3, 4]
    # The 2 most likely, the chosen one among them (else it would be a third).
    assert lp["top_logprobs"][0] == {" ": LIKELIEST_LOGPROB, "t": token_logprob(ord("t"))}
    assert all(len(top) <= 3 for top in lp["top_logprobs"])
    params = gen.inner.calls[0][1]
    assert (params.logprobs, params.top_logprobs) == (True, 2)


async def test_completions_logprobs_0_is_the_chosen_tokens_alone(serve_app: Any) -> None:
    _, runtime = logprob_runtime()
    async with serve_app(runtime) as client:
        r = await client.post(COMPLETIONS, json=completion_body(logprobs=0))
    lp = r.json()["choices"][0]["logprobs"]
    assert lp["top_logprobs"] == [{c: token_logprob(ord(c))} for c in "three"]


async def test_completions_stream_logprobs_match_the_whole_answer(
    serve_app: Any, parse_sse: Any
) -> None:
    _, runtime = logprob_runtime()
    async with serve_app(runtime) as client:
        whole = (await client.post(COMPLETIONS, json=completion_body(logprobs=1))).json()
        r = await client.post(COMPLETIONS, json=completion_body(logprobs=1, stream=True))
    chunks = parse_sse(r.text)[:-1]
    assert all(c["choices"] for c in chunks)
    merged: dict[str, list[Any]] = {
        "tokens": [],
        "token_logprobs": [],
        "top_logprobs": [],
        "text_offset": [],
    }
    for c in chunks:
        lp = c["choices"][0]["logprobs"]
        if lp:
            for key in merged:
                merged[key] += lp[key]
    assert merged == whole["choices"][0]["logprobs"]
    assert "".join(c["choices"][0]["text"] for c in chunks) == "three"


async def test_echo_with_max_tokens_0_scores_the_prompt_and_runs_no_search(
    serve_app: Any,
) -> None:
    gen, runtime = logprob_runtime()
    async with serve_app(runtime) as client:
        r = await client.post(
            COMPLETIONS, json=completion_body(prompt="hi!", echo=True, max_tokens=0, logprobs=1)
        )
    assert r.status_code == 200, r.text
    data = r.json()
    (choice,) = data["choices"]
    assert choice["text"] == "hi!"
    assert choice["finish_reason"] == "length"
    lp = choice["logprobs"]
    assert lp["tokens"] == ["h", "i", "!"]
    # The first token has no context: null, as OpenAI and vLLM send it.
    assert lp["token_logprobs"] == [None, token_logprob(ord("i")), token_logprob(ord("!"))]
    assert lp["top_logprobs"][0] is None
    assert lp["top_logprobs"][1] == {" ": LIKELIEST_LOGPROB, "i": token_logprob(ord("i"))}
    assert lp["text_offset"] == [0, 1, 2]
    assert data["usage"] == {"prompt_tokens": 3, "completion_tokens": 0, "total_tokens": 3}
    report = data["search"]
    assert (report["algorithm"], report["generated_tokens"], report["engine_calls"]) == (
        "none",
        0,
        1,
    )
    assert gen.inner.calls == []  # nothing generated
    assert gen.prompts_scored == [([104, 105, 33], 1)]


async def test_lm_evals_loglikelihood_request(serve_app: Any) -> None:
    """What lm-eval's local-completions sends for loglikelihood: token-id prompts (a
    batch), echo, logprobs 1, max_tokens 1, temperature 0; it sums token_logprobs from the
    continuation's start to the last prompt token and checks greediness on top_logprobs."""
    gen, runtime = logprob_runtime()
    contexts = [[104, 105], [111, 107, 33]]
    continuations = [[32, 116], [32]]
    prompts = [c + x for c, x in zip(contexts, continuations, strict=True)]
    request = {
        "model": "m",
        "prompt": prompts,
        "temperature": 0,
        "max_tokens": 1,
        "logprobs": 1,
        "seed": 1234,
        "echo": True,
    }
    async with serve_app(runtime) as client:
        r = await client.post(COMPLETIONS, json=request)
    assert r.status_code == 200, r.text
    choices = sorted(r.json()["choices"], key=lambda c: c["index"])
    assert len(choices) == 2
    for choice, context, continuation in zip(choices, contexts, continuations, strict=True):
        lp = choice["logprobs"]
        assert len(lp["tokens"]) == len(context) + len(continuation) + 1  # one generated
        ctxlen = len(context)
        total = sum(lp["token_logprobs"][ctxlen:-1])
        assert total == pytest.approx(sum(token_logprob(t) for t in continuation))
        is_greedy = all(
            tok == max(top.values())
            for tok, top in zip(
                lp["token_logprobs"][ctxlen:-1], lp["top_logprobs"][ctxlen:-1], strict=True
            )
        )
        assert is_greedy == all(t == 32 for t in continuation)
        assert choice["text"].startswith("".join(chr(t) for t in context + continuation))
    assert r.json()["search"][0]["algorithm"] == "none"  # greedy: no search
    assert [k for _, k in gen.prompts_scored] == [1, 1]


async def test_echo_with_a_search(serve_app: Any) -> None:
    _, runtime = logprob_runtime()
    async with serve_app(runtime) as client:
        plain = await client.post(COMPLETIONS, json=completion_body(echo=True))
        scored = await client.post(COMPLETIONS, json=completion_body(echo=True, logprobs=0))
    assert plain.json()["choices"][0]["text"] == "hithree"
    assert plain.json()["choices"][0]["logprobs"] is None
    lp = scored.json()["choices"][0]["logprobs"]
    assert lp["tokens"] == list("hithree")
    assert lp["token_logprobs"][0] is None and len(lp["token_logprobs"]) == 7
    assert lp["text_offset"] == list(range(7))
    report = scored.json()["search"]
    assert (report["algorithm"], report["engine_calls"]) == ("bon", 2)  # + the prompt's


async def test_echo_with_max_tokens_0_without_logprobs_calls_no_engine(serve_app: Any) -> None:
    gen, runtime = logprob_runtime()
    async with serve_app(runtime) as client:
        r = await client.post(COMPLETIONS, json=completion_body(echo=True, max_tokens=0))
    assert r.json()["choices"][0] == {
        "index": 0,
        "text": "hi",
        "logprobs": None,
        "finish_reason": "length",
    }
    assert gen.inner.calls == [] and gen.prompts_scored == []


async def test_echo_repeats_a_token_prompt_as_text(serve_app: Any) -> None:
    _, runtime = logprob_runtime()
    async with serve_app(runtime) as client:
        r = await client.post(
            COMPLETIONS, json=completion_body(prompt=[104, 105], echo=True, max_tokens=0)
        )
    assert r.json()["choices"][0]["text"] == "hi"


async def test_echo_with_logprobs_needs_an_engine_that_scores_prompts(serve_app: Any) -> None:
    async with serve_app(make_runtime()) as client:  # ScriptedGenerator scores no prompt
        r = await client.post(COMPLETIONS, json=completion_body(echo=True, logprobs=1))
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "echo"


@pytest.mark.parametrize(
    ("url", "request_body", "param"),
    [
        # bon n=4 of 256 tokens: 1,024 tokens x 20 alternatives = 20,480 entries.
        (CHAT, chat_body(logprobs=True, top_logprobs=20), "top_logprobs"),
        (COMPLETIONS, completion_body(logprobs=5, best_of=4, max_tokens=1024), "logprobs"),
        (
            COMPLETIONS,
            completion_body(prompt="x" * 5000, echo=True, max_tokens=0, logprobs=5),
            "logprobs",
        ),
    ],
)
async def test_top_logprobs_are_bounded_per_request(
    serve_app: Any, url: str, request_body: dict[str, Any], param: str
) -> None:
    _, runtime = logprob_runtime(max_model_len=8000)
    settings = Settings(max_logprob_entries=20_000)
    async with serve_app(runtime, settings) as client:
        r = await client.post(url, json=request_body)
        fewer = await client.post(url, json={**request_body, **{param: 1}})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == param and "--max-logprob-entries" in error["message"]
    assert fewer.status_code == 200, fewer.text


async def test_refused_fields_are_not_logged_as_ignored(
    serve_app: Any, caplog: pytest.LogCaptureFixture
) -> None:
    async with serve_app() as client:
        r = await client.post(CHAT, json=chat_body(tools=[{"type": "function"}]))
    assert r.status_code == 400
    assert "ignoring unknown request fields" not in caplog.text


async def test_the_openapi_document_describes_the_logprobs(serve_app: Any) -> None:
    async with serve_app() as client:
        schema = (await client.get("/openapi.json")).json()
    parts = schema["components"]["schemas"]
    assert {"ChoiceLogprobs", "TokenLogprob", "TextLogprobs"} <= set(parts)
    chat = parts["ChatCompletionRequest"]["properties"]
    assert chat["top_logprobs"]["anyOf"][0]["maximum"] == 20
    text = parts["CompletionRequest"]["properties"]
    assert text["logprobs"]["anyOf"][0]["maximum"] == 5
    assert json.dumps(schema)  # serialisable
