"""N8 (review 2026-12-07): client strings quoted in 400 messages are cut short, and every
error message and param is bounded, whatever the input's size."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.conftest import USER

URL = "/v1/chat/completions"
LONG = "x" * 100_000


@pytest.mark.parametrize(
    ("search", "param"),
    [
        ({"reward": LONG}, "search.reward"),
        ({"reward": {LONG: 1}}, "search.reward"),
        ({"constraints": [{"type": "language", "code": LONG}]}, "search.constraints[0]"),
        ({"constraints": [{"type": "lowercase", LONG: 1}]}, "search.constraints[0]"),
        ({"constraints": [{"type": LONG}]}, "search.constraints[0]"),
        ({LONG: 1}, None),
        ({"algorithm": LONG}, "search.algorithm"),
    ],
)
async def test_n8_client_strings_in_400s_are_bounded(
    serve_app: Any, search: dict[str, Any], param: str | None
) -> None:
    async with serve_app() as client:
        reply = await client.post(URL, json={"messages": USER, "search": search})
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert len(error["message"]) < 600, error["message"][:200]
    assert "x" * 50 not in error["message"]
    assert error["param"] is None or len(error["param"]) <= 128
    if param is not None:
        assert error["param"] == param
