"""Schema-driven fuzzing of the HTTP API (schemathesis over the server's own OpenAPI
document) against a server on the real engine: no 5xx, every status, content type,
header and body as documented, on thousands of generated requests.

The server runs with tight limits (max_tokens <= 4, N <= 2) so the requests the fuzzer
makes valid stay cheap on a CPU; the limits themselves are part of what is exercised.
Schema-valid requests that the server still refuses (over a limit, an unknown search
algorithm in the free-form ``search`` object) are expected: that check is excluded.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import positive_data_acceptance

from tests.conftest import free_port, running_server

pytestmark = pytest.mark.e2e

EXAMPLES = 500  # per operation and mode: about 3,000 requests in all


@pytest.fixture(scope="module")
def fuzz_server(cpu_env: dict[str, str], model_path: str) -> Iterator[str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [
        ".venv/bin/alignserve",
        "serve",
        "--port",
        str(port),
        "--max-tokens-limit",
        "4",
        "--default-max-tokens",
        "4",
        "--max-n",
        "2",
        "--default-n",
        "2",
        "--max-live-candidates",
        "4",
        "--request-timeout-s",
        "30",
        "--log-level",
        "warning",
    ]
    with running_server(cmd, cpu_env, url, "/ready", timeout_s=400):
        yield url


@pytest.mark.parametrize("mode", list(schemathesis.GenerationMode), ids=str)
def test_api_never_fails_and_matches_its_schema(
    fuzz_server: str, mode: schemathesis.GenerationMode
) -> None:
    """Positive mode: schema-valid requests; negative mode: requests that break the schema
    (which must come back as documented 4xx errors, never 5xx)."""
    api = schemathesis.openapi.from_url(f"{fuzz_server}/openapi.json")
    operations = [result.ok() for result in api.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/chat/completions", "/v1/models", "/ready"}
    if mode is schemathesis.GenerationMode.NEGATIVE:
        # Only a request body can be made invalid; GET routes without parameters cannot.
        operations = [op for op in operations if len(op.body)]
    sent = 0
    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            # The same examples on every run: CI is reproducible; widen EXAMPLES to explore.
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        def check(case: schemathesis.Case) -> None:
            nonlocal sent
            sent += 1
            # The server cuts every search at --request-timeout-s 30 (then 504, documented);
            # the client waits longer, so a loaded machine's slow 200 is not a failure.
            case.call_and_validate(excluded_checks=[positive_data_acceptance], timeout=60)

        check()
    assert sent >= EXAMPLES  # hypothesis may stop early on small input spaces
