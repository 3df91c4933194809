"""`alignserve serve` refuses to start, with a one-line reason and a non-zero exit, when
it is misconfigured: an empty API key (M5: it used to mean an open server that looks
protected), and a model that does not exist (it used to stay up, unready, forever)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time

import pytest

from tests.conftest import ROOT, free_port

pytestmark = pytest.mark.e2e


def serve(args: list[str], timeout_s: float) -> tuple[int, str, float]:
    """Run `alignserve serve ARGS` on a free port; (exit code, stderr + stdout, seconds).
    Fails the test if it is still running after ``timeout_s``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALIGNSERVE_")}
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    cmd = [".venv/bin/alignserve", "serve", "--port", str(free_port()), *args]
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=env,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(
            f"{' '.join(cmd)} still running after {timeout_s:.0f} s; it said:\n{err[-2000:]}"
        )
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # anything it left behind
    elapsed = time.perf_counter() - start
    print(f"exit {proc.returncode} after {elapsed:.1f} s; stderr tail:\n{err[-800:]}")
    return proc.returncode, err + out, elapsed


def test_m5_an_empty_api_key_is_refused_at_start() -> None:
    code, said, _ = serve(["--api-key", ""], timeout_s=60)
    assert code != 0
    assert "api key" in said.lower() or "api-key" in said.lower() or "api_key" in said.lower()
    assert "Traceback" not in said
    # Refused before anything was loaded.
    assert "EngineCore" not in said


def test_a_model_that_does_not_exist_ends_the_process_with_a_reason() -> None:
    code, said, _ = serve(["--model", "/nonexistent/model"], timeout_s=120)
    assert code != 0
    assert "Traceback" not in said, said[-3000:]
    reasons = [line for line in said.splitlines() if "/nonexistent/model" in line]
    assert reasons, said[-3000:]
