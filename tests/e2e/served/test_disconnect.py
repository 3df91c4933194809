"""A client that hangs up mid-search, on the real engine over real HTTP: the search is
cancelled, every engine request it started is aborted within a second (the engine's own
running and waiting gauges go back to zero), and the server counts the cancellation."""

from __future__ import annotations

import json
import re
import socket
import time
from urllib.parse import urlparse

import httpx
import pytest

from tests.conftest import engine_requests
from tests.e2e.conftest import MODEL, question

pytestmark = pytest.mark.e2e


def cancellations(url: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    match = re.search(r"^alignserve_cancellations_total (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


def open_request(url: str, stream: bool) -> socket.socket:
    """Send a long Best-of-4 request on a raw socket and leave it waiting for the answer."""
    body = json.dumps(
        {
            "model": MODEL,
            "messages": question(3),
            "max_tokens": 1500,
            "stream": stream,
            "search": {"algorithm": "bon", "n": 4},
        }
    ).encode()
    parsed = urlparse(url)
    sock = socket.create_connection((parsed.hostname, parsed.port), timeout=10)
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {parsed.netloc}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    sock.sendall(head.encode() + body)
    return sock


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_hanging_up_aborts_the_engine_work_within_a_second(server: str, stream: bool) -> None:
    assert engine_requests(server) == 0, "engine busy before the test"
    cancelled_before = cancellations(server)
    sock = open_request(server, stream)
    deadline = time.time() + 60
    while engine_requests(server) == 0:
        assert time.time() < deadline, "the search never reached the engine"
        time.sleep(0.05)
    time.sleep(0.5)  # well into generation (1500 tokens x 4 take far longer)
    sock.close()
    hung_up = time.perf_counter()
    while engine_requests(server) > 0:
        assert time.perf_counter() - hung_up < 5, "engine requests still running 5 s after"
        time.sleep(0.02)
    stopped_after = time.perf_counter() - hung_up
    print(f"engine work stopped {stopped_after:.3f} s after the client hung up")
    assert stopped_after < 1.0
    deadline = time.time() + 5
    while cancellations(server) != cancelled_before + 1:
        assert time.time() < deadline, "the cancellation was not counted"
        time.sleep(0.05)
