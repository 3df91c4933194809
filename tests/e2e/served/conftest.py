"""One server for every test in this package, started exactly as the README starts it
(`make serve`, the port from ALIGNSERVE_PORT), and the official openai client for it.
The e2e files that start servers of their own (other flags, or a server they end) live
one level up, so this one is stopped before they start theirs."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from tests.conftest import free_port, running_server


# Package scope: the server stops when the last test here is done, so its ~4 GB engine
# is not idle beside the next file's.
@pytest.fixture(scope="package")
def served(cpu_env: dict[str, str], model_path: str) -> Iterator[tuple[str, int]]:
    """(url, pid of `make serve`, whose process tree is the server)."""
    port = free_port()
    # Not the outer make's command-line variables: `make test ARGS=-x` would hand its ARGS
    # to `make serve` (through MAKEFLAGS), and the server would refuse pytest's flags.
    outer = ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "ARGS")
    env = {k: v for k, v in cpu_env.items() if k not in outer} | {"ALIGNSERVE_PORT": str(port)}
    url = f"http://127.0.0.1:{port}"
    with running_server(["make", "serve"], env, url, "/ready", timeout_s=400) as proc:
        yield url, proc.pid


@pytest.fixture(scope="package")
def server(served: tuple[str, int]) -> str:
    return served[0]


@pytest.fixture
def client(server: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0)
