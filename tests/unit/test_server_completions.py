"""POST /v1/completions over fakes: the prompt reaches the engine without a chat template,
best_of as Best-of-N, several prompts, streaming, and each refused field.

The default runtime (conftest) generates ["one", "three", "three", "seven"] with rewards
one 0.1, three 0.8, seven 0.5; the CharTokenizer encodes one token per character, so the
prompt "hi" is the two ids [104, 105] (without a chat template: no "<user>" around it).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Sequence
from typing import Any

import pytest

from search.errors import EngineUnavailable
from search.fakes import CharTokenizer, PromptTableGenerator, TableReward, completion_of
from search.protocols import VocabListing
from search.types import Completion, SamplingConfig
from server.completions.protocol import MAX_PROMPTS
from server.settings import Settings
from tests.unit.conftest import make_runtime

URL = "/v1/completions"
HI = [104, 105]


def body(**kw: Any) -> dict[str, Any]:
    return {"model": "m", "prompt": "hi", **kw}


async def test_answers_a_text_completion_with_the_best_candidate(serve_app: Any) -> None:
    async with serve_app() as client:
        r = await client.post(URL, json=body())
    assert r.status_code == 200
    data = r.json()
    assert data["id"].startswith("cmpl-")
    assert data["object"] == "text_completion"
    assert data["model"] == "m"
    assert isinstance(data["created"], int)
    assert data["choices"] == [
        {"index": 0, "text": "three", "logprobs": None, "finish_reason": "stop"}
    ]
    # The prompt's two tokens, not the 19 of a chat-rendered "hi".
    assert data["usage"] == {"prompt_tokens": 2, "completion_tokens": 5, "total_tokens": 7}
    report = data["search"]
    assert (report["algorithm"], report["candidates_generated"], report["chosen_reward"]) == (
        "bon",
        4,
        0.8,
    )


async def test_a_text_prompt_reaches_the_engine_without_a_chat_template(
    serve_app: Any, runtime_of: Any, script: Any
) -> None:
    gen, reward = script(), TableReward({"three": 0.8})
    async with serve_app(runtime_of(gen, reward)) as client:
        r = await client.post(URL, json=body(prompt="Once upon"))
    assert r.status_code == 200
    assert gen.calls[0][0] == [ord(c) for c in "Once upon"]
    # The rewards read the prompt as the user's message.
    assert reward.conversations[0] == [{"role": "user", "content": "Once upon"}]


async def test_a_token_id_prompt_reaches_the_engine_as_given(
    serve_app: Any, runtime_of: Any, script: Any
) -> None:
    gen, reward = script(), TableReward({"three": 0.8})
    async with serve_app(runtime_of(gen, reward)) as client:
        r = await client.post(URL, json=body(prompt=HI))
    assert r.status_code == 200
    assert gen.calls[0][0] == HI
    assert reward.conversations[0] == [{"role": "user", "content": "hi"}]
    assert r.json()["usage"]["prompt_tokens"] == 2


async def test_sampling_parameters_reach_the_engine(
    serve_app: Any, runtime_of: Any, script: Any
) -> None:
    gen = script()
    fields = dict(
        max_tokens=7,
        temperature=0.5,
        top_p=0.9,
        top_k=20,
        presence_penalty=0.5,
        frequency_penalty=-0.5,
        seed=3,
        stop=["\n"],
    )
    async with serve_app(runtime_of(gen)) as client:
        r = await client.post(URL, json=body(**fields))
    assert r.status_code == 200
    params = gen.calls[0][1]
    assert (params.max_tokens, params.temperature, params.top_p, params.top_k) == (7, 0.5, 0.9, 20)
    assert (params.presence_penalty, params.frequency_penalty) == (0.5, -0.5)
    assert (params.seed, params.stop) == (3, ("\n",))


async def test_without_max_tokens_the_server_default_applies(
    serve_app: Any, runtime_of: Any, script: Any
) -> None:
    gen = script()
    async with serve_app(runtime_of(gen), Settings(default_max_tokens=9)) as client:
        await client.post(URL, json=body())
    assert gen.calls[0][1].max_tokens == 9


# -- best_of -------------------------------------------------------------------------------


async def test_best_of_is_best_of_n_over_best_of_samples(
    serve_app: Any, runtime_of: Any, script: Any
) -> None:
    gen = script()
    # The server's default would be one greedy-like "none" response: best_of overrides it.
    async with serve_app(runtime_of(gen), Settings(default_algorithm="none")) as client:
        r = await client.post(URL, json=body(best_of=3, n=2))
    assert r.status_code == 200, r.text
    assert gen.calls[0][2] == 3
    data = r.json()
    assert data["search"]["algorithm"] == "bon"
    assert data["search"]["candidates_generated"] == 3
    assert [c["text"] for c in data["choices"]] == ["three", "one"]


async def test_best_of_1_leaves_the_default_search(
    serve_app: Any, runtime_of: Any, script: Any
) -> None:
    gen = script()
    async with serve_app(runtime_of(gen)) as client:
        r = await client.post(URL, json=body(best_of=1, search={"n": 2}))
    assert r.status_code == 200, r.text
    assert gen.calls[0][2] == 2


@pytest.mark.parametrize(
    "fields",
    [
        {"best_of": 2, "n": 3},
        {"best_of": 1, "n": 2},
        {"best_of": 3, "search": {"algorithm": "bon", "n": 3}},
        {"best_of": 65},  # over --max-n 64
    ],
)
async def test_best_of_refusals_name_best_of(serve_app: Any, fields: dict[str, Any]) -> None:
    async with serve_app() as client:
        r = await client.post(URL, json=body(**fields))
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "best_of"


@pytest.mark.parametrize(
    "fields, param, named",
    [
        # lm-eval's generate_until with best_of in --gen_kwargs: temperature 0 and best_of.
        ({"temperature": 0, "best_of": 4}, "best_of", ("best_of", "temperature")),
        ({"temperature": 0, "best_of": 4, "n": 2}, "best_of", ("best_of", "temperature")),
        ({"temperature": 0, "n": 2}, "n", ("n is 2", "temperature")),
        ({"n": 5}, "n", ("n (5)",)),  # over the default search's 4 candidates
    ],
)
async def test_greedy_and_n_refusals_name_the_fields_sent(
    serve_app: Any, fields: dict[str, Any], param: str, named: tuple[str, ...]
) -> None:
    """A client that sent best_of or n, not a search object, reads about best_of, n and
    temperature, never about search.n."""
    async with serve_app() as client:
        r = await client.post(URL, json=body(**fields))
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == param
    assert all(word in error["message"] for word in named), error
    assert "search.n" not in error["message"], error


async def test_a_best_of_over_a_search_limit_names_best_of(serve_app: Any) -> None:
    """The search the server runs for best_of is over a limit: the client reads about the
    best_of it sent, not about a search object it never sent."""
    async with serve_app(settings=Settings(max_search_tokens=100)) as client:
        r = await client.post(URL, json=body(best_of=4, max_tokens=50))
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == "best_of"


# -- several prompts -----------------------------------------------------------------------

TABLE = {"a": ["a1", "a22", "a1"], "bb": ["b1", "b333", "b22"]}
TABLE_REWARDS = {"a1": 0.1, "a22": 0.9, "b1": 0.2, "b333": 0.7, "b22": 0.5}


def table_runtime(generator: Any = None) -> Any:
    return make_runtime(generator or PromptTableGenerator(TABLE), TableReward(TABLE_REWARDS))


@pytest.mark.parametrize("prompt", [["a", "bb"], [[97], [98, 98]]])
async def test_several_prompts_answer_prompt_major(serve_app: Any, prompt: list[Any]) -> None:
    async with serve_app(table_runtime()) as client:
        r = await client.post(URL, json=body(prompt=prompt, n=2, search={"n": 3}))
    assert r.status_code == 200, r.text
    data = r.json()
    assert [(c["index"], c["text"]) for c in data["choices"]] == [
        (0, "a22"),
        (1, "a1"),
        (2, "b333"),
        (3, "b22"),
    ]
    # Prompt tokens of both prompts, completion tokens of all four choices.
    assert data["usage"] == {"prompt_tokens": 3, "completion_tokens": 12, "total_tokens": 15}
    reports = data["search"]
    assert [s["chosen_reward"] for s in reports] == [0.9, 0.7]
    assert all(s["candidates_generated"] == 3 for s in reports)


async def test_a_list_of_one_prompt_has_one_report(serve_app: Any) -> None:
    async with serve_app(table_runtime()) as client:
        r = await client.post(URL, json=body(prompt=["a"], search={"n": 3}))
    assert isinstance(r.json()["search"], dict)
    assert r.json()["choices"][0]["text"] == "a22"


class Concurrency:
    """Answers "x" after a pause and records how many calls overlapped at most."""

    def __init__(self) -> None:
        self.running = self.peak = 0

    async def generate(
        self, prompt_ids: Sequence[int], params: SamplingConfig, n: int = 1
    ) -> list[Completion]:
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            await asyncio.sleep(0.05)
        finally:
            self.running -= 1
        return [completion_of("x")] * n


async def test_several_prompts_run_at_once_under_one_admission_slot(serve_app: Any) -> None:
    gen = Concurrency()
    settings = Settings(max_concurrent_searches=1, max_queued_searches=0)
    async with serve_app(make_runtime(gen), settings) as client:
        r = await client.post(URL, json=body(prompt=["a", "b", "c"]))
        metrics = (await client.get("/metrics")).text
    assert r.status_code == 200, r.text
    assert gen.peak == 3
    # One request in the request metrics, three searches in the search metrics.
    assert (
        'alignserve_requests_total{algorithm="bon",api="completions",status="200"} 1.0'
    ) in metrics
    assert 'alignserve_candidates_generated_total{algorithm="bon"} 12.0' in metrics


async def test_several_prompts_share_the_live_candidate_limit(serve_app: Any) -> None:
    settings = Settings(max_live_candidates=8)
    async with serve_app(settings=settings) as client:
        ok = await client.post(URL, json=body(prompt=["a", "b"], search={"n": 4}))
        over = await client.post(URL, json=body(prompt=["a", "b", "c"], search={"n": 4}))
    assert ok.status_code == 200
    assert over.status_code == 400
    assert over.json()["error"]["param"] == "prompt"
    assert "12 candidates" in over.json()["error"]["message"]


async def test_a_default_start_takes_each_prompts_share_of_the_live_limit(
    serve_app: Any,
) -> None:
    # spec_rejection's default start, 8n = 16, is fitted to the server's 8 live candidates
    # and then to each prompt's share, 4: two prompts fit; a client's own n_initial is
    # never lowered, so 2 x 8 is refused.
    gen = PromptTableGenerator({}, fallback=lambda _: ["abcdef"] * 16)
    settings = Settings(max_live_candidates=8)
    default = {"algorithm": "spec_rejection", "n": 2}
    async with serve_app(make_runtime(gen), settings) as client:
        ok = await client.post(URL, json=body(prompt=["a", "b"], max_tokens=4, search=default))
        own = {**default, "n_initial": 8}
        over = await client.post(URL, json=body(prompt=["a", "b"], max_tokens=4, search=own))
    assert ok.status_code == 200, ok.text
    assert sorted(n for prompt, _, _, n in gen.calls if prompt in ("a", "b")) == [4, 4]
    assert over.status_code == 400 and "16 candidates" in over.json()["error"]["message"]


class FailsOn:
    """Fails the prompt ``bad``; the others wait until cancelled, which is recorded."""

    def __init__(self, bad: str) -> None:
        self.bad = bad
        self.cancelled = 0

    async def generate(
        self, prompt_ids: Sequence[int], params: SamplingConfig, n: int = 1
    ) -> list[Completion]:
        if CharTokenizer().decode(prompt_ids) == self.bad:
            await asyncio.sleep(0.01)
            raise EngineUnavailable("engine is down")
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        raise AssertionError("never cancelled")


async def test_one_failed_prompt_fails_the_request_and_cancels_the_rest(serve_app: Any) -> None:
    gen = FailsOn("b")
    async with serve_app(make_runtime(gen)) as client:
        r = await client.post(URL, json=body(prompt=["a", "b", "c"]))
    assert r.status_code == 503
    assert r.json()["error"]["message"] == "engine is down"
    assert gen.cancelled == 2


# -- streaming -----------------------------------------------------------------------------


def streamed(chunks: list[dict[str, Any]]) -> dict[int, str]:
    text: dict[int, str] = {}
    for c in chunks:
        for ch in c["choices"]:
            text[ch["index"]] = text.get(ch["index"], "") + ch["text"]
    return text


async def test_stream_matches_the_non_streamed_answer(serve_app: Any, parse_sse: Any) -> None:
    async with serve_app() as client:
        plain = (await client.post(URL, json=body())).json()
        r = await client.post(URL, json=body(stream=True))
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    events = parse_sse(r.text)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert {c["object"] for c in chunks} == {"text_completion"}
    assert len({c["id"] for c in chunks}) == 1 and chunks[0]["id"].startswith("cmpl-")
    assert streamed(chunks) == {0: plain["choices"][0]["text"]} == {0: "three"}
    # One chunk per token (CharTokenizer: per character), then the finish with the report.
    choices = [ch for c in chunks for ch in c["choices"]]
    assert [ch["text"] for ch in choices] == [*"three", ""]
    assert [ch["finish_reason"] for ch in choices] == [None] * 5 + ["stop"]
    assert all(ch["logprobs"] is None for ch in choices)
    # Without include_usage every chunk has a choice (OpenAI's ``chunk.choices[0]`` loop).
    assert all(len(c["choices"]) == 1 for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["search"]["chosen_reward"] == 0.8
    assert [c for c in chunks if "search" in c] == [chunks[-1]]
    assert all("usage" not in c for c in chunks)
    assert r.headers["x-accel-buffering"] == "no"


async def test_stream_usage_when_asked(serve_app: Any, parse_sse: Any) -> None:
    async with serve_app() as client:
        r = await client.post(
            URL, json=body(stream=True, n=2, stream_options={"include_usage": True})
        )
    chunks = parse_sse(r.text)[:-1]
    assert streamed(chunks) == {0: "three", 1: "seven"}
    assert [c for c in chunks if "usage" in c] == [chunks[-1]]
    assert chunks[-1]["usage"] == {"prompt_tokens": 2, "completion_tokens": 10, "total_tokens": 12}
    assert [c for c in chunks if c["choices"] == []] == [chunks[-1]]
    # The report rides on the last choice's finish chunk, just before the usage chunk.
    assert [c for c in chunks if "search" in c] == [chunks[-2]]
    assert chunks[-2]["choices"] == [
        {"index": 1, "text": "", "logprobs": None, "finish_reason": "stop"}
    ]


async def test_stream_sends_committed_text_while_the_search_runs(
    serve_app: Any, parse_sse: Any
) -> None:
    # As chat's test of spec_rejection, on the bare prompt "hi": once "dd33" alone
    # survives its text goes out whole, then "44", with nothing sent twice.
    table = {
        "hi": ["aaXXXX", "bbYYYY", "ccWWWW", "ddZZZZ"],
        "hibb": ["11XX"],
        "hidd": ["33XX"],
        "hidd33": ["44XX"],
    }
    rewards = {"bb": 0.9, "dd": 0.8, "bb11": 0.2, "dd33": 0.7, "dd3344": 0.5}
    runtime = make_runtime(PromptTableGenerator(table), TableReward(rewards))
    search = {"algorithm": "spec_rejection", "n": 2, "n_initial": 4, "decision_tokens": 2}
    async with serve_app(runtime) as client:
        r = await client.post(URL, json=body(stream=True, max_tokens=6, search=search))
    choices = [ch for c in parse_sse(r.text)[:-1] for ch in c["choices"]]
    assert [ch["text"] for ch in choices] == ["dd33", "44", ""]


async def test_stream_error_is_an_error_event(
    serve_app: Any, runtime_of: Any, parse_sse: Any
) -> None:
    async with serve_app(runtime_of(FailsOn("hi"))) as client:
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


# -- refusals ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"echo": True, "stream": True}, "echo"),
        ({"logprobs": 6}, "logprobs"),  # OpenAI's most: 5
        ({"logprobs": -1}, "logprobs"),
        ({"logprobs": True}, "logprobs"),
        ({"top_logprobs": 2}, "top_logprobs"),  # chat's; here logprobs: k
        ({"echo": True, "max_tokens": 0, "best_of": 2}, "best_of"),
        ({"echo": True, "max_tokens": 0, "search": {"n": 2}}, "search"),
        ({"echo": True, "max_tokens": 0, "n": 2}, "n"),
        ({"suffix": "end"}, "suffix"),
        ({"logit_bias": {"50256": -100}}, "logit_bias"),
        ({"messages": [{"role": "user", "content": "hi"}]}, "messages"),
        ({"max_completion_tokens": 5}, "max_completion_tokens"),
        ({"response_format": {"type": "xml"}}, "response_format.type"),
        ({"prompt": ""}, "prompt"),
        ({"prompt": []}, "prompt"),
        ({"prompt": [[]]}, "prompt"),
        ({"prompt": ["a", ""]}, "prompt"),
        ({"prompt": [104, -1]}, "prompt"),
        ({"prompt": [104, True]}, "prompt"),
        ({"prompt": [104, 1.5]}, "prompt"),
        ({"prompt": [[104], "hi"]}, "prompt"),
        ({"prompt": {"text": "hi"}}, "prompt"),
        ({"prompt": ["a"] * (MAX_PROMPTS + 1)}, "prompt"),
        ({"prompt": [[97]] * (MAX_PROMPTS + 1)}, "prompt"),
        ({"prompt": ["a", "b"], "stream": True}, "stream"),
        ({"n": 5}, "n"),  # beyond the default search's 4 candidates
        ({"temperature": 2.5}, "temperature"),
        ({"stop": [""]}, "stop"),
        ({"max_tokens": 0}, "max_tokens"),
    ],
)
async def test_refusals_name_the_field(serve_app: Any, fields: dict[str, Any], param: str) -> None:
    async with serve_app() as client:
        r = await client.post(URL, json=body(**fields))
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert (error["type"], error["param"]) == ("invalid_request_error", param)


async def test_defaults_of_the_refused_fields_are_accepted(serve_app: Any) -> None:
    defaults = {"echo": False, "logprobs": None, "suffix": None, "logit_bias": {}}
    async with serve_app() as client:
        r = await client.post(URL, json=body(**defaults))
    assert r.status_code == 200, r.text


async def test_unknown_fields_are_logged_and_ignored(
    serve_app: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="server.search_service"):
        async with serve_app() as client:
            r = await client.post(URL, json=body(min_tokens=3))
    assert r.status_code == 200
    assert "ignoring unknown request fields: 'min_tokens'" in caplog.text


class AsciiTokenizer(CharTokenizer, VocabListing):
    """A tokenizer that lists its vocabulary: ids 0 to 127."""

    def vocab(self) -> dict[str, int]:
        return {chr(i): i for i in range(128)}


async def test_token_ids_outside_the_vocabulary_are_refused(serve_app: Any) -> None:
    runtime = dataclasses.replace(make_runtime(), tokenizer=AsciiTokenizer())
    async with serve_app(runtime) as client:
        inside = await client.post(URL, json=body(prompt=[104, 127]))
        outside = await client.post(URL, json=body(prompt=[[104], [104, 128]]))
    assert inside.status_code == 200
    assert outside.status_code == 400
    assert outside.json()["error"]["param"] == "prompt"
    assert "128" in outside.json()["error"]["message"]


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"prompt": "x" * 30}, "prompt"),  # fills the context on its own
        ({"prompt": [120] * 30}, "prompt"),
        ({"prompt": "x" * 20, "max_tokens": 15}, "max_tokens"),
    ],
)
async def test_context_length_refusals(serve_app: Any, fields: dict[str, Any], param: str) -> None:
    async with serve_app(make_runtime(max_model_len=30)) as client:
        r = await client.post(URL, json=body(**fields))
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param


async def test_a_prompt_over_the_character_limit_is_refused(serve_app: Any) -> None:
    async with serve_app(settings=Settings(max_request_chars=10)) as client:
        r = await client.post(URL, json=body(prompt="x" * 11))
        metrics = (await client.get("/metrics")).text
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "prompt"
    assert 'alignserve_limit_rejections_total{limit="request_chars"} 1.0' in metrics


async def test_a_lone_surrogate_is_refused_not_a_500(serve_app: Any) -> None:
    # Valid JSON, but no tokenizer encodes it: the HF tokenizer raises TypeError.
    raw = b'{"model": "m", "prompt": ["ok", "a\\ud800b"]}'
    async with serve_app() as client:
        r = await client.post(URL, content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "prompt"
    assert "surrogate" in r.json()["error"]["message"]


async def test_the_character_limit_counts_every_prompt_of_a_request(serve_app: Any) -> None:
    async with serve_app(settings=Settings(max_request_chars=10)) as client:
        ok = await client.post(URL, json=body(prompt=["x" * 5, "y" * 5]))
        over = await client.post(URL, json=body(prompt=["x" * 5, "y" * 6]))
    assert ok.status_code == 200
    assert over.status_code == 400
    assert "11 characters" in over.json()["error"]["message"]
