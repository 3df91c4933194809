"""The app around the chat route: models, health, readiness, metrics, loading, disconnects."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from rewards.guard import TimedReward
from search.fakes import TableReward
from server.app import create_app
from server.metrics import ServerMetrics
from server.runtime import Runtime
from server.serving_base import ClientDisconnected, cancel_on_disconnect
from server.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
USER = [{"role": "user", "content": "hi"}]
URL = "/v1/chat/completions"


def metric(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample in Prometheus text format (None if absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = re.escape(name) + (r"\{" + re.escape(want) + r"\}" if labels else "") + r" (\S+)$"
    for line in text.splitlines():
        m = re.match(pattern, line)
        if m:
            return float(m.group(1))
    return None


# -- models, ready, health ---------------------------------------------------------------


async def test_models_lists_the_served_model(serve_app: Any) -> None:
    async with serve_app() as client:
        r = await client.get("/v1/models")
    assert r.status_code == 200
    data = r.json()
    assert data["object"] == "list"
    assert len(data["data"]) == 1
    model = data["data"][0]
    assert (model["id"], model["object"], model["owned_by"]) == ("m", "model", "alignserve")
    assert isinstance(model["created"], int)


async def test_ready_and_health_with_injected_runtime(serve_app: Any) -> None:
    async with serve_app() as client:
        ready = await client.get("/ready")
        health = await client.get("/health")
    assert (ready.status_code, ready.json()) == (200, {"status": "ready", "model": "m"})
    assert (health.status_code, health.json()) == (200, {"status": "ok"})


async def test_an_unhealthy_engine_is_not_ready_but_alive(runtime_of: Any) -> None:
    calls: list[int] = []

    async def sick() -> None:
        calls.append(1)
        raise RuntimeError("gpu fell off at http://10.0.0.7:8000/health")

    app = create_app(Settings(), runtime=runtime_of(health_check=sick))
    async with app.router.lifespan_context(app):
        # The failure recorded, not only the check called: the monitor records it a loop
        # step after the check raised, and /ready could be asked in between.
        await wait_for(lambda: calls and app.state.health.failed)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            health = await client.get("/health")
            ready = await client.get("/ready")
    # Liveness is local: an engine outage must not get the process restarted.
    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    assert ready.status_code == 503
    # The component and a fixed phrase; the exception text (with its URL) stays in the log.
    assert ready.json()["error"]["message"] == "not ready: engine failed its health check"


async def never_loads(_: Settings) -> Runtime:
    raise AssertionError("the lifespan is not run in this test")


async def test_not_ready_while_loading() -> None:
    app = create_app(Settings(served_model_name="srv"), loader=never_loads)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        ready = await client.get("/ready")
        health = await client.get("/health")
        models = await client.get("/v1/models")
        chat = await client.post(URL, json={"messages": USER})
    assert ready.status_code == 503
    assert ready.json()["error"]["message"] == "loading the model"
    assert health.status_code == 200
    assert models.json()["data"][0]["id"] == "srv"
    assert chat.status_code == 503
    assert chat.json()["error"]["type"] == "service_unavailable"


async def wait_for(predicate: Any, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s  # time, not steps: a loaded machine is slow
    while time.monotonic() < deadline:
        if predicate():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("condition not reached")


async def test_lifespan_loads_then_closes(runtime_of: Any) -> None:
    closed: list[str] = []

    async def aclose() -> None:
        closed.append("async")

    rt = runtime_of(closers=[lambda: closed.append("sync"), aclose])

    async def loader(_: Settings) -> Runtime:
        return rt

    app = create_app(Settings(), loader=loader)
    async with app.router.lifespan_context(app):
        await wait_for(lambda: app.state.runtime is not None)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            assert (await client.get("/ready")).status_code == 200
            r = await client.post(URL, json={"messages": USER})
            assert r.json()["choices"][0]["message"]["content"] == "three"
    # Closers run in reverse order of registration.
    assert closed == ["async", "sync"]


async def test_lifespan_load_failure_ends_the_server(caplog: pytest.LogCaptureFixture) -> None:
    async def loader(_: Settings) -> Runtime:
        raise RuntimeError("no such model:\n  /models/secret-path")

    exits: list[int] = []
    app = create_app(Settings(), loader=loader)
    app.state.exit_server = lambda: exits.append(1)
    async with app.router.lifespan_context(app):
        await wait_for(lambda: app.state.fatal is not None)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            ready = await client.get("/ready")
            health = await client.get("/health")
    assert exits == [1]  # the server is asked to stop (and exits 1: see test_health.py)
    for r in (ready, health):
        assert r.status_code == 503
        assert r.json()["error"]["message"] == "loading failed; the server is exiting"
    # The reason is in the log, on one line.
    [line] = [r.getMessage() for r in caplog.records if r.levelname == "CRITICAL"]
    assert "RuntimeError: no such model: /models/secret-path" in line
    assert "\n" not in line


async def test_runtime_close_order(runtime_of: Any) -> None:
    order: list[int] = []

    async def two() -> None:
        order.append(2)

    rt = runtime_of(closers=[lambda: order.append(1), two, lambda: order.append(3)])
    await rt.close()
    assert order == [3, 2, 1]


# -- metrics -----------------------------------------------------------------------------


async def test_metrics_after_requests(serve_app: Any) -> None:
    bon = {"algorithm": "bon", "api": "chat"}
    async with serve_app() as client:
        before = (await client.get("/metrics")).text
        assert metric(before, "alignserve_requests_total", **bon, status="200") is None
        assert (await client.post(URL, json={"messages": USER})).status_code == 200
        r = await client.get("/metrics")
        assert (await client.post(URL, json={"messages": USER, "n": 9})).status_code == 400
        assert (await client.post(URL, json={"messages": USER, "stream": True})).status_code == 200
        after = (await client.get("/metrics")).text
    assert r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert metric(text, "alignserve_requests_total", **bon, status="200") == 1.0
    assert metric(text, "alignserve_generated_tokens_total", algorithm="bon") == 18.0
    assert metric(text, "alignserve_candidates_generated_total", algorithm="bon") == 4.0
    # Best-of-4 is one engine request with n=4.
    assert metric(text, "alignserve_engine_calls_per_search_count", algorithm="bon") == 1.0
    assert metric(text, "alignserve_engine_calls_per_search_sum", algorithm="bon") == 1.0
    assert metric(text, "alignserve_chosen_reward_count", algorithm="bon") == 1.0
    # (no _sum sample: prometheus_client omits it for histograms with negative buckets)
    assert metric(text, "alignserve_chosen_reward_bucket", algorithm="bon", le="0.7") == 0.0
    assert metric(text, "alignserve_chosen_reward_bucket", algorithm="bon", le="0.8") == 1.0
    # Chosen 0.8 against the mean of 0.1, 0.8, 0.8, 0.5.
    assert metric(text, "alignserve_reward_gain_bucket", algorithm="bon", le="0.2") == 0.0
    assert metric(text, "alignserve_reward_gain_bucket", algorithm="bon", le="0.5") == 1.0
    assert metric(text, "alignserve_reward_latency_seconds_count", reward="judge") == 1.0
    assert metric(text, "alignserve_reward_batch_size_sum", reward="judge") == 4.0
    assert metric(text, "alignserve_request_latency_seconds_count", **bon) == 1.0
    # A finished stream is counted too; the 400 (n over the server's limit, refused while
    # its search was parsed) under no algorithm, and not in the latency.
    assert metric(after, "alignserve_requests_total", **bon, status="200") == 2.0
    assert metric(after, "alignserve_requests_total", **bon, status="400") is None
    assert metric(after, "alignserve_requests_total", algorithm="", api="chat", status="400") == 1
    assert metric(after, "alignserve_request_latency_seconds_count", **bon) == 2.0
    assert metric(after, "alignserve_generated_tokens_total", algorithm="bon") == 36.0


async def test_metrics_are_per_app(serve_app: Any, runtime_of: Any) -> None:
    async with serve_app(runtime_of()) as first:
        await first.post(URL, json={"messages": USER})
    async with serve_app(runtime_of()) as second:
        text = (await second.get("/metrics")).text
    bon = {"algorithm": "bon", "api": "chat"}
    assert metric(text, "alignserve_requests_total", **bon, status="200") is None


async def test_reward_label_follows_the_spec(serve_app: Any) -> None:
    async with serve_app(settings=Settings(reward="remote:http://h:1")) as client:
        await client.post(URL, json={"messages": USER})
        text = (await client.get("/metrics")).text
    assert metric(text, "alignserve_reward_latency_seconds_count", reward="remote") == 1.0
    assert metric(text, "alignserve_reward_latency_seconds_count", reward="judge") is None


async def test_timed_reward_passes_through() -> None:
    metrics = ServerMetrics()
    inner = TableReward({"a": 2.0})
    timed = TimedReward(inner, metrics.reward_observers("x"))
    assert await timed.score([], ["a", "b", "c"], partial=True) == [2.0, 0.0, 0.0]
    assert inner.calls == [(["a", "b", "c"], True)]
    text = metrics.render().decode()
    assert metric(text, "alignserve_reward_batch_size_sum", reward="x") == 3.0


# -- client disconnects ------------------------------------------------------------------


class FakeRequest:
    def __init__(self, messages: list[dict[str, str]]) -> None:
        self.messages = messages

    async def receive(self) -> dict[str, str]:
        if self.messages:
            return self.messages.pop(0)
        await asyncio.Event().wait()  # nothing more from the client
        raise AssertionError


async def test_cancel_on_disconnect_returns_the_result() -> None:
    async def work() -> int:
        await asyncio.sleep(0.01)
        return 42

    assert await cancel_on_disconnect(FakeRequest([]), work()) == 42  # type: ignore[arg-type]


async def test_cancel_on_disconnect_cancels_the_work() -> None:
    state: list[str] = []

    async def work() -> int:
        try:
            await asyncio.sleep(0.2)
        except asyncio.CancelledError:
            state.append("cancelled")
            raise
        return 1

    request = FakeRequest([{"type": "http.request"}, {"type": "http.disconnect"}])
    with pytest.raises(ClientDisconnected):
        await cancel_on_disconnect(request, work())  # type: ignore[arg-type]
    assert state == ["cancelled"]


async def test_cancel_on_disconnect_propagates_errors() -> None:
    async def work() -> int:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        await cancel_on_disconnect(FakeRequest([]), work())  # type: ignore[arg-type]


# -- import hygiene ----------------------------------------------------------------------


def imported_heavy(modules: list[str]) -> str:
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in modules)
        + "print(sorted(m for m in ('torch', 'vllm') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_server_imports_neither_torch_nor_vllm() -> None:
    assert imported_heavy(["server.app", "search.registry", "rewards.spec"]) == "[]"


def test_unit_tested_modules_import_neither_torch_nor_vllm() -> None:
    modules = [
        "server.cli",
        "engines.remote",
        "engines.vllm_local",
        "engines.tokenizer",
        "rewards.judge",
        "rewards.remote",
        "search.fakes",
    ]
    assert imported_heavy(modules) == "[]"
