"""N5 (review 2026-12-07): inputs a client controls that gave 500s get 400 (lone
surrogates in any string, a 400-digit reward weight) or 503 (a reward model answering
a 400-digit integer), never a 500."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.unit.conftest import USER, make_runtime
from tests.unit.test_reward_hardening import Returns

HUGE = 10**400


@pytest.mark.parametrize(
    ("url", "body", "param"),
    [
        (
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": "hi \ud800"}]},
            "messages",
        ),
        ("/v1/chat/completions", {"messages": USER, "stop": ["\udfff"]}, "stop"),
        ("/v1/completions", {"prompt": "hi", "stop": ["\udfff"]}, "stop"),
        ("/v1/responses", {"input": "hi \ud800"}, "input"),
        ("/v1/responses", {"input": [{"role": "user", "content": "\udc00"}]}, "input"),
        ("/v1/responses", {"input": "hi", "instructions": "\ud800"}, "instructions"),
    ],
)
async def test_n5_lone_surrogates_are_400s(
    serve_app: Any, url: str, body: dict[str, Any], param: str
) -> None:
    async with serve_app() as client:
        # Escaped (\\ud800), as a JSON client sends it: valid JSON, not valid text.
        raw = json.dumps({"model": "m", "max_tokens": 2, **body}).encode()
        reply = await client.post(url, content=raw, headers={"content-type": "application/json"})
    assert reply.status_code == 400, reply.text
    assert "lone surrogate" in reply.json()["error"]["message"]
    assert reply.json()["error"]["param"] == param


async def test_n5_paired_surrogate_escapes_are_text(serve_app: Any) -> None:
    body = {"messages": [{"role": "user", "content": "hi \U0001f600"}], "max_tokens": 2}
    async with serve_app() as client:
        reply = await client.post("/v1/chat/completions", json=body)
    assert reply.status_code == 200, reply.text


async def test_n5_a_huge_integer_weight_is_a_400(serve_app: Any) -> None:
    body = {"messages": USER, "search": {"reward": {"judge": HUGE}}}
    async with serve_app() as client:
        reply = await client.post("/v1/chat/completions", json=body)
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"]["param"] == "search.reward"


async def test_n5_a_reward_of_a_huge_integer_is_a_503_non_finite(serve_app: Any) -> None:
    body = {"messages": USER, "search": {"n": 2}}
    async with serve_app(make_runtime(reward=Returns([HUGE, 0.5]))) as client:
        reply = await client.post("/v1/chat/completions", json=body)
    assert reply.status_code == 503, reply.text
    assert "non-finite" in reply.json()["error"]["message"]
