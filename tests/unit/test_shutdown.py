"""SIGTERM drains: /ready turns 503 and new searches are refused with 503 while the in-flight
search finishes within the grace period; the process exits cleanly; past the grace, or on a
second signal, the search is cut off."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from typing import Any

import httpx
import pytest

from tests.conftest import ROOT, free_port

BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "search": {"n": 2}}


def start(delay_s: float, grace_s: int) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.unit.fake_server", str(port), str(delay_s), str(grace_s)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            if httpx.get(f"{url}/ready", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    pytest.fail("the fake server did not start")


def exited_cleanly(proc: subprocess.Popen[bytes]) -> str:
    """Wait for the exit; uvicorn re-raises the signal after a clean shutdown (the usual
    exit status of a SIGTERMed process), so -SIGTERM counts as clean with the log line."""
    out, _ = proc.communicate(timeout=15)
    log = out.decode(errors="replace")
    assert proc.returncode in (0, -signal.SIGTERM), log
    assert "Application shutdown complete" in log, log
    return log


def post_in_background(url: str) -> tuple[threading.Thread, dict[str, Any]]:
    outcome: dict[str, Any] = {}

    def post() -> None:
        try:
            outcome["status"] = httpx.post(
                f"{url}/v1/chat/completions", json=BODY, timeout=30
            ).status_code
        except httpx.HTTPError as exc:
            outcome["error"] = type(exc).__name__

    thread = threading.Thread(target=post)
    thread.start()
    time.sleep(0.3)  # the search is running
    return thread, outcome


def test_sigterm_drains_ready_turns_503_and_new_searches_are_refused() -> None:
    proc, url = start(delay_s=2.0, grace_s=10)
    thread, outcome = post_in_background(url)
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    ready = httpx.get(f"{url}/ready", timeout=2)
    assert ready.status_code == 503
    assert "shutting down" in ready.json()["error"]["message"]
    refused = httpx.post(f"{url}/v1/chat/completions", json=BODY, timeout=5)
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "1"
    assert refused.json()["error"]["type"] == "service_unavailable"
    thread.join(15)
    assert outcome == {"status": 200}  # the in-flight search finished
    log = exited_cleanly(proc)
    assert "draining" in log, log
    assert "Cancel" not in log, log


def test_sigterm_on_an_idle_server_exits_at_once() -> None:
    proc, _ = start(delay_s=0.1, grace_s=30)
    began = time.time()
    proc.send_signal(signal.SIGTERM)
    exited_cleanly(proc)
    assert time.time() - began < 5


def test_sigterm_cuts_off_searches_past_the_grace_period() -> None:
    proc, url = start(delay_s=30, grace_s=1)
    thread, outcome = post_in_background(url)
    began = time.time()
    proc.send_signal(signal.SIGTERM)
    log = exited_cleanly(proc)
    assert time.time() - began < 8
    assert "grace period over" in log, log
    thread.join(15)
    assert outcome.get("status", 503) >= 500 or "error" in outcome


def test_a_second_sigterm_cancels_at_once() -> None:
    proc, url = start(delay_s=30, grace_s=60)
    thread, outcome = post_in_background(url)
    began = time.time()
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    exited_cleanly(proc)
    assert time.time() - began < 8
    thread.join(15)
    assert outcome.get("status", 503) >= 500 or "error" in outcome


def test_n5_a_search_cut_at_the_grace_gets_503_with_retry_after() -> None:
    # It got uvicorn's plain-text 500 ("Exception in ASGI application") when cancelled.
    proc, url = start(delay_s=30, grace_s=1)
    outcome: dict[str, Any] = {}

    def post() -> None:
        reply = httpx.post(f"{url}/v1/chat/completions", json=BODY, timeout=30)
        outcome.update(status=reply.status_code, headers=reply.headers, body=reply.text)

    thread = threading.Thread(target=post)
    thread.start()
    time.sleep(0.5)  # the search is running
    proc.send_signal(signal.SIGTERM)
    log = exited_cleanly(proc)
    thread.join(15)
    assert outcome["status"] == 503, outcome
    assert outcome["headers"]["retry-after"] == "1"
    assert "shut down before the search finished" in outcome["body"]
    assert "Exception in ASGI application" not in log
