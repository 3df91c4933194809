"""One server for the whole e2e package, started exactly as the README starts it
(`make serve`, the port from ALIGNSERVE_PORT), and the official openai client for it."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from tests.conftest import free_port, mt_bench_prompts, running_server

MODEL = "SmolLM2-135M-Instruct"


# Package scope: the server stops when the last e2e test is done, so its ~4 GB engine is
# not idle beside the next package's engines.
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


def question(i: int = 0) -> list[dict[str, str]]:
    return [{"role": "user", "content": mt_bench_prompts()[i]}]
