"""H4 (review 2026-12-07): bodies are parsed off the event loop, and the count caps run
before pydantic validates anything (server.body_parse)."""

from __future__ import annotations

import json
import time

import pytest
from fastapi.exceptions import RequestValidationError

from search.errors import LimitExceeded
from server.body_parse import MAX_FIELDS, parse
from server.protocol import ChatCompletionRequest


def test_h4_too_many_messages_are_refused_before_validation() -> None:
    big = json.dumps({"messages": [{"role": "user", "content": ""}] * 120_000}).encode()
    start = time.perf_counter()
    with pytest.raises(LimitExceeded) as info:
        parse(ChatCompletionRequest, big, 1024)
    # Parsing only (about 60 ms); validating it took another 340 ms.
    assert time.perf_counter() - start < 1
    assert (info.value.limit, info.value.param) == ("messages", "messages")
    assert "120000 messages" in info.value.message


def test_h4_too_many_fields_are_refused_before_validation() -> None:
    body = json.dumps({f"k{i}": 1 for i in range(MAX_FIELDS + 1)}).encode()
    with pytest.raises(LimitExceeded) as info:
        parse(ChatCompletionRequest, body, 1024)
    assert info.value.limit == "request_fields"


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        (b"", "missing"),
        (b"{", "json_invalid"),
        (b'{"messages": 3}', "list_type"),
    ],
)
def test_h4_errors_keep_fastapis_shape(body: bytes, kind: str) -> None:
    with pytest.raises(RequestValidationError) as info:
        parse(ChatCompletionRequest, body, 1024)
    first = info.value.errors()[0]
    assert first["type"] == kind
    assert first["loc"][0] == "body"
