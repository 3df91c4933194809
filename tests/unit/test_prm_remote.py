"""RemotePRM against a fake vLLM pooling server: a real uvicorn server on 127.0.0.1 that
renders the messages into word tokens (the separator one token of its own) and answers
``/pooling`` as vLLM does for a PRM, with STEP pooling (one row per separator) or ALL
pooling (one row per token), and ``/tokenize`` with the same tokens."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from rewards import prm_remote
from rewards.prm_format import QWEN_PRM_SYSTEM
from rewards.prm_remote import RemotePRM
from search.errors import RewardUnavailable
from tests.conftest import free_port

SEP = "<extra_0>"
CONV = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+3?"}]
# The fake PRM's logits at the separator after a step, by the step's text.
LOGITS = {"2+3=5.": [0.0, math.log(3.0)], "So 5.": [math.log(3.0), 0.0], "Hmm.": [0.0, 0.0]}
# Every other token: a row whose reading would be plainly wrong (probability about 0).
OTHER_ROW = [30.0, -30.0]


def fake_tokens(messages: list[dict[str, str]]) -> list[str]:
    tokens: list[str] = []
    for message in messages:
        tokens += ["<|im_start|>", message["role"], "\n"]
        for i, piece in enumerate(message["content"].split(SEP)):
            tokens += [SEP] * (i > 0) + piece.split(" ")
        tokens.append("<|im_end|>")
    return tokens


def fake_rows(tokens: list[str], step_pooling: bool) -> list[list[float]]:
    rows: list[list[float]] = []
    words: list[str] = []
    for token in tokens:
        if token == SEP:
            rows.append(LOGITS.get(" ".join(w for w in words if w), [5.0, 5.0]))
            words = []
        else:
            words = [] if token in ("<|im_start|>", "\n") else [*words, token]
            if not step_pooling:
                rows.append(OTHER_ROW)
    return rows


@dataclass
class FakePRMServer:
    url: str = ""
    step_pooling: bool = True
    requests: list[tuple[str, dict[str, Any], dict[str, str]]] = field(default_factory=list)
    # Scripted replies, taking the place of the fake PRM's answer while they last.
    pooling_replies: list[Response] = field(default_factory=list)
    tokenize: Callable[[list[str]], list[str]] = lambda tokens: tokens

    async def handle(self, request: Request) -> Response:
        body = await request.json()
        self.requests.append((request.url.path, body, dict(request.headers)))
        tokens = fake_tokens(body["messages"])
        if request.url.path.endswith("/tokenize"):
            strs = self.tokenize(tokens)
            return JSONResponse({"count": len(strs), "tokens": [0] * len(strs), "token_strs": strs})
        if self.pooling_replies:
            return self.pooling_replies.pop(0)
        rows = fake_rows(tokens, self.step_pooling)
        return JSONResponse({"object": "list", "data": [{"index": 0, "data": rows}]})

    def paths(self) -> list[str]:
        return [path for path, _, _ in self.requests]


@asynccontextmanager
async def serving(routes: list[Route]) -> AsyncIterator[str]:
    config = uvicorn.Config(
        Starlette(routes=routes), host="127.0.0.1", port=0, log_level="warning", lifespan="off"
    )
    server = uvicorn.Server(config)
    task = asyncio.ensure_future(server.serve())
    while not server.started:
        assert not task.done(), "the fake server did not start"
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@pytest.fixture(scope="module")
async def fake_server() -> AsyncIterator[list[FakePRMServer]]:
    current = [FakePRMServer()]

    async def handle(request: Request) -> Response:
        return await current[0].handle(request)

    paths = ["/pooling", "/tokenize", "/v1/pooling", "/v1/tokenize"]
    async with serving([Route(p, handle, methods=["POST"]) for p in paths]) as url:
        current[0].url = url
        yield current


@pytest.fixture
def fake(fake_server: list[FakePRMServer], monkeypatch: pytest.MonkeyPatch) -> FakePRMServer:
    monkeypatch.setattr(prm_remote, "BACKOFF_S", 0.0)
    fake_server[0] = FakePRMServer(url=fake_server[0].url)
    return fake_server[0]


@pytest.fixture
async def prm(fake: FakePRMServer) -> AsyncIterator[RemotePRM]:
    client = RemotePRM(fake.url)
    yield client
    await client.aclose()


STEPS = [["2+3=5.\n\n", "So 5."], ["2+3=5.\n\n"], ["Hmm.\n\n", "\n\n"]]
EXPECTED = [0.25, 0.75, 0.5]


async def test_step_pooling_reads_the_last_row(fake: FakePRMServer, prm: RemotePRM) -> None:
    assert await prm.score_last_steps(CONV, STEPS) == pytest.approx(EXPECTED)
    assert fake.paths() == ["/pooling"] * 3
    bodies = sorted((b for _, b, _ in fake.requests), key=lambda b: b["messages"][2]["content"])
    assert bodies[0] == {
        "messages": [
            {"role": "system", "content": QWEN_PRM_SYSTEM},
            {"role": "user", "content": "What is 2+3?"},
            {"role": "assistant", "content": f"2+3=5.{SEP}"},
        ],
        "task": "token_classify",
        "use_activation": False,
    }
    assert [b["messages"][2]["content"] for b in bodies] == [
        f"2+3=5.{SEP}",
        f"2+3=5.{SEP}So 5.{SEP}",
        f"Hmm.{SEP}",
    ]


async def test_all_pooling_reads_the_row_at_the_last_separator(
    fake: FakePRMServer, prm: RemotePRM
) -> None:
    fake.step_pooling = False
    assert await prm.score_last_steps(CONV, STEPS) == pytest.approx(EXPECTED)
    assert sorted(fake.paths()) == ["/pooling"] * 3 + ["/tokenize"] * 3
    pooled = {json.dumps(b["messages"]) for p, b, _ in fake.requests if p == "/pooling"}
    for path, body, _ in fake.requests:
        if path == "/tokenize":
            assert body["add_generation_prompt"] is False
            assert body["return_token_strs"] is True
            assert json.dumps(body["messages"]) in pooled


async def test_all_pooling_refuses_tokens_that_do_not_match(
    fake: FakePRMServer, prm: RemotePRM
) -> None:
    fake.step_pooling = False
    fake.tokenize = lambda tokens: tokens[:-1]
    with pytest.raises(RewardUnavailable) as info:
        await prm.score_last_steps(CONV, STEPS[:1])
    assert info.value.reason == "bad_value"


async def test_all_pooling_refuses_a_separator_that_is_not_one_token(
    fake: FakePRMServer, prm: RemotePRM
) -> None:
    fake.step_pooling = False
    fake.tokenize = lambda tokens: ["<extra" if t == SEP else t for t in tokens]
    with pytest.raises(RewardUnavailable) as info:
        await prm.score_last_steps(CONV, STEPS[:1])
    assert info.value.reason == "bad_value"


def pooling(data: Any) -> Response:
    return JSONResponse({"data": [{"index": 0, "data": data}]})


@pytest.mark.parametrize(
    "reply",
    [
        pooling([[0.0, 1.0]]),  # one row for two steps: the input was truncated
        pooling([0.0, 1.0]),  # a sequence classifier's flat answer
        pooling([[0.0, 1.0, 2.0], [0.0, 1.0, 2.0]]),
        pooling([["0", "1"], ["0", "1"]]),
        pooling("base64=="),
        JSONResponse({"data": []}),
        JSONResponse({"object": "error"}),
        JSONResponse([1, 2]),
        Response("not json", media_type="application/json"),
    ],
)
async def test_a_bad_shape_is_bad_value(
    fake: FakePRMServer, prm: RemotePRM, reply: Response
) -> None:
    fake.pooling_replies = [reply]
    with pytest.raises(RewardUnavailable) as info:
        await prm.score_last_steps(CONV, STEPS[:1])
    assert info.value.reason == "bad_value"


@pytest.mark.parametrize("rows", ["[[0, 1], [NaN, 0]]", "[[0, 1], [0, Infinity]]"])
async def test_non_finite_logit(fake: FakePRMServer, prm: RemotePRM, rows: str) -> None:
    text = '{"data": [{"index": 0, "data": ' + rows + "}]}"
    fake.pooling_replies = [Response(text, media_type="application/json")]
    with pytest.raises(RewardUnavailable) as info:
        await prm.score_last_steps(CONV, STEPS[:1])
    assert info.value.reason == "non_finite"


async def test_http_error_keeps_the_servers_text_out(fake: FakePRMServer, prm: RemotePRM) -> None:
    fake.pooling_replies = [Response("secret path /models/x", status_code=400)]
    with pytest.raises(RewardUnavailable) as info:
        await prm.score_last_steps(CONV, STEPS[:1])
    assert info.value.reason == "error"
    assert info.value.message == "the remote process reward model failed (HTTP 400)"
    assert fake.paths() == ["/pooling"], "a 400 is the request's fault: no retry"


async def test_overload_is_retried(fake: FakePRMServer, prm: RemotePRM) -> None:
    fake.pooling_replies = [Response("busy", status_code=503)]
    assert await prm.score_last_steps(CONV, STEPS[1:2]) == pytest.approx([0.75])
    assert fake.paths() == ["/pooling", "/pooling"]
    fake.pooling_replies = [Response("busy", status_code=503)] * 3
    with pytest.raises(RewardUnavailable) as info:
        await prm.score_last_steps(CONV, STEPS[1:2])
    assert info.value.message.endswith("(HTTP 503)")


async def test_connection_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prm_remote, "BACKOFF_S", 0.0)
    prm = RemotePRM(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(RewardUnavailable) as info:
        await prm.score_last_steps(CONV, STEPS[:1])
    assert info.value.reason == "error"
    assert info.value.message == "the remote process reward model failed (ConnectError)"
    await prm.aclose()


@pytest.mark.parametrize("streamed", [False, True])
async def test_reply_size_is_bounded(
    fake: FakePRMServer, prm: RemotePRM, monkeypatch: pytest.MonkeyPatch, streamed: bool
) -> None:
    monkeypatch.setattr(prm_remote, "MAX_REPLY_BYTES", 1000)
    text = json.dumps({"data": [{"data": [[0.0, 1.0]] * 200}]})
    chunks = [text[i : i + 100].encode() for i in range(0, len(text), 100)]
    fake.pooling_replies = [
        StreamingResponse(iter(chunks)) if streamed else Response(text, media_type="text/json")
    ]
    with pytest.raises(RewardUnavailable) as info:
        await prm.score_last_steps(CONV, STEPS[:1])
    assert info.value.reason == "bad_value"
    assert "size limit" in info.value.message


async def test_url_with_path_and_api_key(fake: FakePRMServer) -> None:
    prm = RemotePRM(fake.url + "/v1/pooling/", api_key="k")
    assert await prm.score_last_steps(CONV, STEPS[1:2]) == pytest.approx([0.75])
    path, _, headers = fake.requests[0]
    assert path == "/v1/pooling"
    assert headers["authorization"] == "Bearer k"
    await prm.aclose()


async def test_declares_bounds_and_no_token_ids(prm: RemotePRM) -> None:
    assert prm.bounds == (0.0, 1.0)
    assert not prm.takes_token_ids
    assert await prm.score_last_steps(CONV, []) == []
