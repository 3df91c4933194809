"""POST /v1/chat/completions over fakes: the answer, usage, the search report, streaming.

The default runtime (conftest) generates ["one", "three", "three", "seven"] with rewards
one 0.1, three 0.8, seven 0.5; the CharTokenizer prompt for [user: "hi"] is 19 tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from search.errors import EngineUnavailable
from search.fakes import CharTokenizer, PromptTableGenerator, TableReward, completion_of
from search.types import Completion, SamplingConfig
from server.settings import Settings
from tests.unit.conftest import make_runtime

USER = [{"role": "user", "content": "hi"}]
URL = "/v1/chat/completions"


def body(**kw: Any) -> dict[str, Any]:
    return {"model": "m", "messages": USER, **kw}


async def test_answers_with_the_highest_reward(serve_app: Any) -> None:
    async with serve_app() as client:
        r = await client.post(URL, json=body())
    assert r.status_code == 200
    data = r.json()
    assert data["object"] == "chat.completion"
    assert data["model"] == "m"
    assert data["id"].startswith("chatcmpl-")
    assert isinstance(data["created"], int)
    assert data["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "three"},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ]
    assert data["usage"] == {"prompt_tokens": 19, "completion_tokens": 5, "total_tokens": 24}


async def test_search_report(serve_app: Any) -> None:
    async with serve_app() as client:
        r = await client.post(URL, json=body())
    report = r.json()["search"]
    assert set(report["timings"]) == {"generate", "score", "total"}
    del report["timings"]
    assert report == {
        "algorithm": "bon",
        "candidates_generated": 4,
        "generated_tokens": 3 + 5 + 5 + 5,
        "engine_calls": 1,
        "reward_calls": 1,
        "chosen_reward": 0.8,
        "chosen_index": 1,
        "details": {},
    }


async def test_model_may_be_omitted(serve_app: Any) -> None:
    async with serve_app() as client:
        r = await client.post(URL, json={"messages": USER})
    assert r.status_code == 200
    assert r.json()["choices"][0]["message"]["content"] == "three"


# The fake engine's log pi(y|x): -0.1 per token, summed.
LP = {k: -0.1 * k for k in (3, 5)}


async def test_return_candidates(serve_app: Any) -> None:
    async with serve_app() as client:
        r = await client.post(URL, json=body(search={"n": 4, "return_candidates": True}))
    expected = [("one", 0.1, 3), ("three", 0.8, 5), ("three", 0.8, 5), ("seven", 0.5, 5)]
    assert r.json()["search"]["candidates"] == [
        {
            "index": i,
            "text": text,
            "reward": reward,
            "finish_reason": "stop",
            "tokens": tokens,
            "logprob": LP[tokens],
        }
        for i, (text, reward, tokens) in enumerate(expected)
    ]


async def test_candidates_absent_unless_asked(serve_app: Any) -> None:
    async with serve_app() as client:
        r = await client.post(URL, json=body(search={"return_candidates": False}))
    assert "candidates" not in r.json()["search"]


async def test_openai_n_returns_top_distinct(serve_app: Any) -> None:
    async with serve_app() as client:
        r = await client.post(URL, json=body(n=2))
    data = r.json()
    assert [c["message"]["content"] for c in data["choices"]] == ["three", "seven"]
    assert [c["index"] for c in data["choices"]] == [0, 1]
    assert data["usage"] == {"prompt_tokens": 19, "completion_tokens": 10, "total_tokens": 29}


async def test_openai_n_repeats_fill_in(serve_app: Any) -> None:
    async with serve_app() as client:
        r = await client.post(URL, json=body(n=4))
    texts = [c["message"]["content"] for c in r.json()["choices"]]
    assert texts == ["three", "seven", "one", "three"]
    assert r.json()["usage"]["completion_tokens"] == 5 + 5 + 3 + 5


async def test_usage_counts_rendered_prompt(serve_app: Any) -> None:
    messages = [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "What is 2+2?"},
    ]
    async with serve_app() as client:
        r = await client.post(URL, json={"messages": messages})
    usage = r.json()["usage"]
    rendered = "<system>Be terse.<user>What is 2+2?<assistant>"
    assert usage["prompt_tokens"] == len(rendered) == len(CharTokenizer().render_chat(messages))
    assert usage["completion_tokens"] == len("three")
    assert usage["total_tokens"] == len(rendered) + 5


async def test_sampling_parameters_reach_the_generator(
    serve_app: Any, runtime_of: Any, script: Any
) -> None:
    gen = script()
    async with serve_app(runtime_of(gen)) as client:
        r = await client.post(
            URL,
            json=body(max_tokens=7, temperature=0.3, top_p=0.9, seed=11, stop=["x", "y"]),
        )
    assert r.status_code == 200
    prompt = [ord(c) for c in "<user>hi<assistant>"]
    assert gen.calls == [
        (
            prompt,
            SamplingConfig(max_tokens=7, temperature=0.3, top_p=0.9, seed=11, stop=("x", "y")),
            4,
        )
    ]


async def test_sampling_defaults_and_search_n(serve_app: Any, runtime_of: Any, script: Any) -> None:
    gen = script()
    settings = Settings(default_max_tokens=33, default_n=3)
    async with serve_app(runtime_of(gen), settings) as client:
        await client.post(URL, json=body())
        await client.post(URL, json=body(search={"n": 2}, max_completion_tokens=5, stop="END"))
    assert [(c[1], c[2]) for c in gen.calls] == [
        (SamplingConfig(max_tokens=33), 3),
        (SamplingConfig(max_tokens=5, stop=("END",)), 2),
    ]


async def test_reward_sees_the_conversation_and_all_candidates(
    serve_app: Any, runtime_of: Any
) -> None:
    reward = TableReward({"three": 1.0})
    async with serve_app(runtime_of(reward=reward)) as client:
        await client.post(URL, json=body())
    assert reward.calls == [(["one", "three", "three", "seven"], False)]


class LengthGenerator:
    """Every sample hits max_tokens."""

    async def generate(
        self, prompt_ids: Sequence[int], params: SamplingConfig, n: int = 1
    ) -> list[Completion]:
        return [completion_of("abcdefgh"[: params.max_tokens], "length") for _ in range(n)]


async def test_length_finish_reason(serve_app: Any, runtime_of: Any) -> None:
    async with serve_app(runtime_of(LengthGenerator())) as client:
        r = await client.post(URL, json=body(max_tokens=3, search={"return_candidates": True}))
    data = r.json()
    assert data["choices"][0]["finish_reason"] == "length"
    assert data["choices"][0]["message"]["content"] == "abc"
    assert [c["finish_reason"] for c in data["search"]["candidates"]] == ["length"] * 4


# -- streaming ---------------------------------------------------------------------------


async def test_stream_matches_the_non_streamed_answer(serve_app: Any, parse_sse: Any) -> None:
    async with serve_app() as client:
        plain = (await client.post(URL, json=body())).json()
        r = await client.post(URL, json=body(stream=True))
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    assert r.text.endswith("data: [DONE]\n\n")
    events = parse_sse(r.text)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert all(c["model"] == "m" for c in chunks)
    deltas = [ch["delta"] for c in chunks for ch in c["choices"]]
    assert deltas[0] == {"role": "assistant", "content": ""}
    text = "".join(d.get("content", "") for d in deltas)
    assert text == plain["choices"][0]["message"]["content"] == "three"
    # One chunk per token (CharTokenizer: per character).
    assert [d.get("content") for d in deltas[1:-1]] == list("three")
    finals = [ch["finish_reason"] for c in chunks for ch in c["choices"]]
    assert finals == [None] * 6 + ["stop"]
    # Without include_usage every chunk has a choice (OpenAI's ``chunk.choices[0]`` loop);
    # the last one, the finish chunk, carries the search report as an extension field.
    assert all(len(c["choices"]) == 1 for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["search"]["chosen_reward"] == 0.8
    assert [c for c in chunks if "search" in c] == [chunks[-1]]
    assert all("usage" not in c for c in chunks)
    assert r.headers["x-accel-buffering"] == "no"


async def test_stream_sends_committed_text_while_the_search_runs(
    serve_app: Any, parse_sse: Any
) -> None:
    # spec_rejection over 6 tokens, a decision every 2: once "dd33" alone survives its
    # text is final and goes out as one delta, then "dd3344" adds "44"; the final pass
    # sends nothing twice.
    table = {
        "<user>hi<assistant>": ["aaXXXX", "bbYYYY", "ccWWWW", "ddZZZZ"],
        "<user>hi<assistant>bb": ["11XX"],
        "<user>hi<assistant>dd": ["33XX"],
        "<user>hi<assistant>dd33": ["44XX"],
    }
    rewards = {"bb": 0.9, "dd": 0.8, "bb11": 0.2, "dd33": 0.7, "dd3344": 0.5}
    runtime = make_runtime(PromptTableGenerator(table), TableReward(rewards))
    search = {"algorithm": "spec_rejection", "n": 2, "n_initial": 4, "decision_tokens": 2}
    async with serve_app(runtime) as client:
        r = await client.post(URL, json=body(stream=True, max_tokens=6, search=search))
    chunks = parse_sse(r.text)[:-1]
    deltas = [ch["delta"] for c in chunks for ch in c["choices"]]
    assert deltas[0] == {"role": "assistant", "content": ""}
    assert [d.get("content") for d in deltas[1:]] == ["dd33", "44", None]
    assert chunks[-1]["search"]["candidates_generated"] == 1


async def test_stream_usage_when_asked(serve_app: Any, parse_sse: Any) -> None:
    async with serve_app() as client:
        r = await client.post(URL, json=body(stream=True, stream_options={"include_usage": True}))
    chunks = parse_sse(r.text)[:-1]
    with_usage = [c for c in chunks if "usage" in c]
    assert len(with_usage) == 1
    assert with_usage[0] is chunks[-1]
    assert with_usage[0]["choices"] == []
    assert "search" not in chunks[-1]
    # The report is on the finish chunk, just before the usage chunk.
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-2]["search"]["chosen_reward"] == 0.8
    assert [c for c in chunks if c["choices"] == []] == [chunks[-1]]
    assert with_usage[0]["usage"] == {
        "prompt_tokens": 19,
        "completion_tokens": 5,
        "total_tokens": 24,
    }


async def test_stream_n2(serve_app: Any, parse_sse: Any) -> None:
    async with serve_app() as client:
        r = await client.post(
            URL, json=body(n=2, stream=True, stream_options={"include_usage": True})
        )
    chunks = parse_sse(r.text)[:-1]
    text: dict[int, str] = {0: "", 1: ""}
    finish: dict[int, str] = {}
    for c in chunks:
        for ch in c["choices"]:
            text[ch["index"]] += ch["delta"].get("content", "")
            if ch["finish_reason"]:
                finish[ch["index"]] = ch["finish_reason"]
    assert text == {0: "three", 1: "seven"}
    assert finish == {0: "stop", 1: "stop"}
    assert chunks[-1]["usage"]["completion_tokens"] == 10
    # The report rides on the last choice's finish chunk, the last chunk with a choice.
    assert [c for c in chunks if "search" in c] == [chunks[-2]]
    assert chunks[-2]["choices"] == [
        {"index": 1, "delta": {}, "logprobs": None, "finish_reason": "stop"}
    ]


async def test_stream_keepalive_while_searching(
    serve_app: Any, runtime_of: Any, script: Any, parse_sse: Any
) -> None:
    gen = script(delay_s=0.15)
    async with serve_app(runtime_of(gen), Settings(keepalive_s=0.04)) as client:
        r = await client.post(URL, json=body(stream=True))
    assert r.text.startswith(": keep-alive\n\n")
    data = parse_sse(r.text)
    assert "".join(ch["delta"].get("content", "") for c in data[:-1] for ch in c["choices"]) == (
        "three"
    )


class DownGenerator:
    async def generate(
        self, prompt_ids: Sequence[int], params: SamplingConfig, n: int = 1
    ) -> list[Completion]:
        raise EngineUnavailable("engine is down")


async def test_stream_domain_error_becomes_an_error_event(
    serve_app: Any, runtime_of: Any, parse_sse: Any
) -> None:
    async with serve_app(runtime_of(DownGenerator())) as client:
        r = await client.post(URL, json=body(stream=True))
    assert r.status_code == 200
    assert parse_sse(r.text) == [
        {
            "error": {
                "message": "engine is down",
                "type": "service_unavailable",
                "param": None,
                "code": 503,
            }
        },
        "[DONE]",
    ]


async def test_stream_validation_errors_are_plain_json(serve_app: Any) -> None:
    async with serve_app() as client:
        r = await client.post(URL, json=body(stream=True, search={"algorithm": "nope"}))
    assert r.status_code == 400
    assert r.headers["content-type"] == "application/json"
    assert r.json()["error"]["param"] == "search.algorithm"


@pytest.mark.parametrize("search_n", [1, 64])
async def test_search_n_bounds_accepted(
    serve_app: Any, runtime_of: Any, script: Any, search_n: int
) -> None:
    gen = script(["a"] * 64)
    async with serve_app(runtime_of(gen)) as client:
        r = await client.post(URL, json=body(search={"n": search_n}))
    assert r.status_code == 200
    assert gen.calls[0][2] == search_n
    assert r.json()["search"]["candidates_generated"] == search_n


async def test_temperature_0_without_search_is_one_greedy_answer(
    serve_app: Any, runtime_of: Any, script: Any
) -> None:
    gen = script()
    async with serve_app(runtime_of(gen)) as client:
        r = await client.post(URL, json=body(temperature=0))
        refused = await client.post(URL, json=body(temperature=0, search={"n": 4}))
    assert r.status_code == 200, r.text
    assert [(c[1].temperature, c[2]) for c in gen.calls] == [(0.0, 1)]
    report = r.json()["search"]
    assert report["algorithm"] == "none"
    assert (report["reward_calls"], report["chosen_reward"]) == (0, None)
    assert refused.status_code == 400
    assert refused.json()["error"]["param"] == "temperature"


@pytest.mark.parametrize(
    "search",
    [
        {"algorithm": "particle_filtering", "n": 4},
        {"algorithm": "beam_search", "n": 4, "beam_width": 1},
        {"algorithm": "dvts", "n": 2, "beam_width": 1},
    ],
)
async def test_s8_greedy_step_searches_of_n_identical_paths_are_refused(
    serve_app: Any, runtime_of: Any, script: Any, search: dict[str, Any]
) -> None:
    # S8: particle_filtering samples one step per request and beam_width 1 one per beam, so
    # the per-call guard let temperature 0 through: N identical greedy paths at N x cost.
    gen = script()
    async with serve_app(runtime_of(gen)) as client:
        r = await client.post(URL, json=body(temperature=0, search=search))
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == "temperature"
    assert f"samples {search['n']} from the same text" in r.json()["error"]["message"]
    assert gen.calls == []  # refused before the search ran


@pytest.mark.parametrize(
    "fields, named",
    [
        ({"temperature": 0, "n": 2}, ("n is 2", "temperature")),
        ({"n": 5}, ("n (5)",)),  # over the default search's 4 candidates
    ],
)
async def test_n_refusals_without_search_name_the_fields_sent(
    serve_app: Any, fields: dict[str, Any], named: tuple[str, ...]
) -> None:
    """A client that sent n, not a search object, reads about n and temperature, never
    about search.n."""
    async with serve_app() as client:
        r = await client.post(URL, json=body(**fields))
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == "n"
    assert all(word in error["message"] for word in named), error
    assert "search.n" not in error["message"], error


async def test_algorithm_none_is_one_response_of_n_1(serve_app: Any) -> None:
    async with serve_app() as client:
        r = await client.post(URL, json=body(search={"algorithm": "none"}))
        bad = await client.post(URL, json=body(search={"algorithm": "none", "n": 2}))
    assert r.status_code == 200 and r.json()["search"]["candidates_generated"] == 1
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "search.n"


async def test_a_default_spec_rejection_start_fits_a_lowered_live_limit(serve_app: Any) -> None:
    # 8n = 16 by default, but this server keeps at most 4 alive: the default takes 4; a
    # client's own n_initial above the limit is still a 400.
    gen = PromptTableGenerator({}, fallback=lambda _: ["abcdef"] * 16)
    settings = Settings(max_live_candidates=4)
    search = {"algorithm": "spec_rejection", "n": 2}
    async with serve_app(make_runtime(gen), settings) as client:
        ok = await client.post(URL, json=body(max_tokens=4, search=search))
        own = {**search, "n_initial": 8}
        over = await client.post(URL, json=body(max_tokens=4, search=own))
    assert ok.status_code == 200, ok.text
    assert gen.calls[0][3] == 4
    assert over.status_code == 400 and over.json()["error"]["param"] == "search"
