"""Schema-driven fuzzing (schemathesis over the server's own OpenAPI document) against a
server on the real engine: no 5xx, every status, content type, header and body as
documented.

The HTTP layer is fuzzed at full size in-process over the fake runtime
(tests/unit/test_fuzz_http.py, the same cases from tests/fuzz_cases.py). This smaller run
keeps what only the real engine shows: real sampling, tokenization and stop strings
under the fuzzer's requests, real searches for every algorithm, and the real server's
sockets and key check.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis

from tests.conftest import free_port, running_server
from tests.fuzz_cases import API_KEY, AUTH, OPTIONS, fuzz_schema, fuzz_searches, serve_flags

pytestmark = pytest.mark.e2e

EXAMPLES = 25  # per operation and mode: about 250 requests on the real engine
SEARCH_EXAMPLES = 4  # valid search objects per algorithm, each a real (tiny) search


@pytest.fixture(scope="module")
def fuzz_server(cpu_env: dict[str, str], model_path: str) -> Iterator[str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [".venv/bin/alignserve", "serve", "--port", str(port), *serve_flags()]
    with running_server([*cmd, "--log-level", "warning"], cpu_env, url, "/ready", 400):
        yield url


def load_schema(url: str) -> Any:
    """The server's OpenAPI document (guarded by the key, like the API), or the same app's
    built in-process where the server does not serve its docs."""
    reply = httpx.get(f"{url}/openapi.json", headers=AUTH, timeout=30)
    if reply.status_code == 200:
        document = reply.json()
    else:
        from server.app import create_app
        from server.settings import Settings

        document = create_app(Settings(api_key=[API_KEY])).openapi()
    return schemathesis.openapi.from_dict(document)


def test_the_api_needs_the_key(fuzz_server: str) -> None:
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": API_KEY}):
        chat = httpx.post(
            f"{fuzz_server}/v1/chat/completions", json=body, headers=headers, timeout=30
        )
        models = httpx.get(f"{fuzz_server}/v1/models", headers=headers, timeout=30)
        for reply in (chat, models):
            assert reply.status_code == 401, (headers, reply.url, reply.text)
            assert reply.json()["error"]["code"] == 401
    assert httpx.get(f"{fuzz_server}/v1/models", headers=AUTH, timeout=30).status_code == 200


@pytest.mark.parametrize("mode", list(schemathesis.GenerationMode), ids=str)
def test_api_never_fails_and_matches_its_schema(
    fuzz_server: str, mode: schemathesis.GenerationMode
) -> None:
    fuzz_schema(load_schema(fuzz_server), mode, EXAMPLES, base_url=fuzz_server)


@pytest.mark.parametrize("algorithm", sorted(OPTIONS))
def test_valid_search_objects_never_fail_and_match_the_schema(
    fuzz_server: str, algorithm: str
) -> None:
    fuzz_searches(load_schema(fuzz_server), algorithm, SEARCH_EXAMPLES, base_url=fuzz_server)
