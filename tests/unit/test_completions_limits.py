"""N4 (review 2026-12-07): the prompts of one /v1/completions request run under one
admission slot, so their worst cases together are checked against one search's limits."""

from __future__ import annotations

import re
from typing import Any

from server.settings import Settings

URL = "/v1/completions"


def limit_rejections(text: str, limit: str) -> float:
    found = re.search(rf'alignserve_limit_rejections_total\{{limit="{limit}"\}} (\S+)', text)
    return float(found.group(1)) if found else 0.0


async def test_n4_several_prompts_are_charged_together_against_the_search_limits(
    serve_app: Any,
) -> None:
    # Each prompt's search (bon, n 4, 16 tokens) may generate 64 tokens: one fits 100, and
    # so did 16 of them before, each checked on its own.
    settings = Settings(max_search_tokens=100)
    one = {"model": "m", "prompt": "hi", "max_tokens": 16, "search": {"n": 4}}
    async with serve_app(settings=settings) as client:
        ok = await client.post(URL, json=one)
        over = await client.post(URL, json={**one, "prompt": ["a"] * 16})
        two = await client.post(URL, json={**one, "prompt": ["a", "b"]})
        text = (await client.get("/metrics")).text
    assert ok.status_code == 200, ok.text
    for refused, total in ((over, "1,024"), (two, "128")):
        assert refused.status_code == 400, refused.text
        error = refused.json()["error"]
        assert error["param"] == "prompt"
        assert f"up to {total} generated tokens together" in error["message"]
        assert "--max-search-tokens" in error["message"]
    assert limit_rejections(text, "search_tokens") == 2


async def test_n4_prompts_within_the_limits_together_still_run(serve_app: Any) -> None:
    settings = Settings(max_search_tokens=128)
    request = {"model": "m", "prompt": ["a", "b"], "max_tokens": 16}
    async with serve_app(settings=settings) as client:
        reply = await client.post(URL, json=request)
    assert reply.status_code == 200, reply.text
    assert len(reply.json()["search"]) == 2
