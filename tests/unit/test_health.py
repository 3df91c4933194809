"""Health tells the truth: /health is local and cheap, /ready covers the engine, the rewards
and the DPO scorers from a cached state, a dead in-process engine ends the process with
status 1, and no body carries exception text."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from rewards.batcher import MicroBatcher
from rewards.guard import TimedReward
from rewards.openai_judge import OpenAIJudgeReward
from rewards.prm_remote import RemotePRM
from rewards.remote import RemoteReward
from search.fakes import ScriptedGenerator
from search.protocols import AsyncClosable, DeathWatched, HealthChecked, Wrapping
from server.app import create_app
from server.health import Check, HealthMonitor, checks_of, health_check_of
from server.metrics import ServerMetrics
from server.runtime import Runtime
from server.settings import Settings
from tests.conftest import ROOT

FAST = Settings(health_interval_s=0.02, health_timeout_s=0.2)
SECRET = "http://10.1.2.3:9000/pooling"


class MortalEngine(ScriptedGenerator, HealthChecked, DeathWatched):
    """A generator with the in-process engine's death interface (``VLLMGenerator``)."""

    def __init__(self) -> None:
        super().__init__([])
        self.dead = False
        self.callbacks: list[Callable[[], None]] = []
        self.health_calls = 0

    def is_dead(self) -> bool:
        return self.dead

    def on_death(self, callback: Callable[[], None]) -> None:
        self.callbacks.append(callback)

    async def check_health(self) -> None:
        self.health_calls += 1
        if self.dead:
            raise RuntimeError(f"EngineCore died; see {SECRET}")


class CheckedReward(HealthChecked):
    """A reward model with a server behind it: ``mode`` is "ok", "fail" or "hang"."""

    bounds = None
    takes_token_ids = False

    def __init__(self, mode: str = "ok") -> None:
        self.mode = mode
        self.checks = 0

    async def score(self, _conversation: Any, responses: Any, **_: Any) -> list[float]:
        return [0.5 for _ in responses]

    async def check_health(self) -> None:
        self.checks += 1
        if self.mode == "hang":
            await asyncio.sleep(3600)
        if self.mode == "fail":
            raise ConnectionError(f"connection refused: {SECRET}")


@asynccontextmanager
async def running(
    runtime: Runtime, settings: Settings = FAST
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient, list[int]]]:
    """The app with its lifespan (so the monitor runs); the list records exit requests."""
    app = create_app(settings, runtime=runtime)
    exits: list[int] = []
    app.state.exit_server = lambda: exits.append(1)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            yield app, client, exits


async def eventually(predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.005)


def assert_no_leak(response: httpx.Response) -> None:
    text = response.text
    for leak in ("10.1.2.3", "http://", "Error", "refused", "EngineCore"):
        assert leak not in text, text


# -- the dead engine -----------------------------------------------------------------------


async def test_a_dead_engine_makes_ready_503_at_once_and_asks_to_exit(runtime_of: Any) -> None:
    engine = MortalEngine()
    slow = Settings(health_interval_s=3600)  # only the probe itself can notice
    async with running(runtime_of(engine, health_check=engine.check_health), slow) as (
        app,
        client,
        exits,
    ):
        assert (await client.get("/ready")).status_code == 200
        engine.dead = True
        ready = await client.get("/ready")
        health = await client.get("/health")
    assert ready.status_code == 503
    assert ready.json()["error"]["message"] == "engine has stopped; the server is exiting"
    # The process is on its way out: liveness says so too.
    assert health.status_code == 503
    assert app.state.fatal == "engine has stopped"
    assert exits == [1]
    assert_no_leak(ready)


async def test_a_request_that_finds_the_engine_dead_ends_the_server(runtime_of: Any) -> None:
    engine = MortalEngine()
    async with running(runtime_of(engine), Settings(health_interval_s=3600)) as (app, _, exits):
        [report] = engine.callbacks  # VLLMGenerator calls these on EngineDeadError
        report()
        report()  # once is enough
    assert exits == [1]
    assert app.state.fatal == "engine has stopped"


async def test_closing_the_engine_at_shutdown_is_not_a_death(runtime_of: Any) -> None:
    engine = MortalEngine()
    rt = runtime_of(engine, closers=[lambda: setattr(engine, "dead", True)])
    async with running(rt) as (app, _, exits):
        pass
    for report in engine.callbacks:
        report()
    assert exits == [] and app.state.fatal is None


async def test_the_background_check_finds_the_death(runtime_of: Any) -> None:
    engine = MortalEngine()
    async with running(runtime_of(engine, health_check=engine.check_health)) as (app, _, exits):
        engine.dead = True
        await eventually(lambda: bool(exits))
    assert app.state.fatal == "engine has stopped"


# -- rewards and scorers -------------------------------------------------------------------


async def test_a_hanging_reward_check_is_not_ready_within_the_timeout(runtime_of: Any) -> None:
    reward = CheckedReward("hang")
    settings = Settings(health_interval_s=0.02, health_timeout_s=0.1, reward=["judge"])
    async with running(runtime_of(reward=reward), settings) as (_, client, exits):
        started = time.monotonic()
        while (ready := await client.get("/ready")).status_code == 200:
            assert time.monotonic() - started < 2, "still ready"
            await asyncio.sleep(0.01)
        waited = time.monotonic() - started
        health_started = time.monotonic()
        health = await client.get("/health")
        health_s = time.monotonic() - health_started
    assert waited < 1.0
    assert ready.json()["error"]["message"] == (
        "not ready: reward:judge did not answer its health check in time"
    )
    assert (health.status_code, health_s < 0.1) == (200, True)
    assert exits == []  # a reward outage is not fatal: the orchestrator must not restart


def remote_kinds(answer: Callable[[httpx.Request], httpx.Response]) -> list[Any]:
    """Each remote reward kind over one fake upstream (``answer``)."""
    client = partial(httpx.AsyncClient, transport=httpx.MockTransport(answer))
    base = "http://rm.test"
    return [
        RemoteReward(base, client=client(base_url=base)),
        RemotePRM(base, client=client(base_url=base)),
        OpenAIJudgeReward(base, model="j", client=client()),
    ]


@pytest.mark.parametrize("kind", [0, 1, 2], ids=["remote", "remote_prm", "openai_judge"])
async def test_m3_a_remote_reward_outage_turns_ready_503(runtime_of: Any, kind: int) -> None:
    # The review's server B: its reward answered 503 and /ready stayed 200; the reward
    # server got no health GET at all.
    status = {"code": 503}
    asked: list[str] = []

    def upstream(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.path)
        return httpx.Response(status["code"], json={"data": [{"id": "j"}]})

    model = remote_kinds(upstream)[kind]
    # A PRM is named with --prm, the others with --reward.
    component, runtime = (
        ("prm:steps", runtime_of(prms={"steps": model}, default_prm="steps"))
        if isinstance(model, RemotePRM)
        else ("reward:judge", runtime_of(reward=model))
    )
    async with running(runtime) as (app, client, exits):
        failed = app.state.health.failed
        await eventually(lambda: component in failed, timeout_s=10)
        ready = await client.get("/ready")
        assert ready.json()["error"]["message"] == f"not ready: {component} failed its health check"
        assert_no_leak(ready)
        status["code"] = 200
        await eventually(lambda: component not in failed, timeout_s=10)
        assert (await client.get("/ready")).status_code == 200
    assert set(asked) <= {"/health", "/v1/models"} and exits == []


async def test_a_failing_reward_then_recovering(runtime_of: Any) -> None:
    reward = CheckedReward("fail")
    async with running(runtime_of(reward=reward)) as (app, client, exits):
        # The failure recorded, not only the check made (one loop step apart).
        await eventually(lambda: "reward:judge" in app.state.health.failed)
        ready = await client.get("/ready")
        assert ready.json()["error"]["message"] == (
            "not ready: reward:judge failed its health check"
        )
        assert_no_leak(ready)
        reward.mode = "ok"
        await eventually(lambda: "reward:judge" not in app.state.health.failed)
        assert (await client.get("/ready")).status_code == 200
    assert exits == []


async def test_probes_make_no_upstream_calls(runtime_of: Any) -> None:
    engine = MortalEngine()
    reward = CheckedReward()
    settings = Settings(health_interval_s=3600)
    async with running(runtime_of(engine, reward, health_check=engine.check_health), settings) as (
        _,
        client,
        _exits,
    ):
        await eventually(lambda: reward.checks == 1 and engine.health_calls == 1)
        replies = await asyncio.gather(
            *(client.get(path) for path in ["/health"] * 100 + ["/ready"] * 100)
        )
    assert {r.status_code for r in replies} == {200}
    assert (engine.health_calls, reward.checks) == (1, 1)  # the monitor's first round only


def test_reward_checks_are_found_through_the_server_wrappers() -> None:
    reward = CheckedReward()
    wrapped = TimedReward(MicroBatcher(reward), ServerMetrics().reward_observers("r"))  # type: ignore[arg-type]
    assert health_check_of(wrapped) == reward.check_health
    assert health_check_of(TimedReward(object())) is None  # type: ignore[arg-type]


def test_the_engines_and_wrappers_declare_what_they_can_do(runtime_of: Any) -> None:
    from engines.remote import RemoteGenerator
    from engines.vllm_local import VLLMGenerator

    assert issubclass(VLLMGenerator, HealthChecked) and issubclass(VLLMGenerator, DeathWatched)
    assert issubclass(RemoteGenerator, HealthChecked)
    assert not issubclass(RemoteGenerator, DeathWatched)
    assert issubclass(RemoteGenerator, AsyncClosable)
    assert isinstance(MicroBatcher(CheckedReward()), Wrapping)  # type: ignore[arg-type]
    checks = {c.name: c for c in checks_of(runtime_of(RemoteGenerator("http://e/v1", "m")))}
    assert checks["engine"].is_dead is None and checks["engine"].on_death is None


def test_scorers_are_checked_unless_they_are_the_policy_engine(runtime_of: Any) -> None:
    engine, reference = MortalEngine(), MortalEngine()
    rt = runtime_of(engine, dpo=engine, reference=reference, health_check=engine.check_health)
    checks = {c.name: c for c in checks_of(rt)}
    assert set(checks) == {"engine", "reference"}
    assert checks["reference"].is_dead == reference.is_dead
    assert checks["reference"].run == reference.check_health


# -- the log -------------------------------------------------------------------------------


async def test_a_flapping_dependency_does_not_flood_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    healthy = [True]

    async def flapping() -> None:
        healthy[0] = not healthy[0]
        if not healthy[0]:
            raise ConnectionError(SECRET)

    monitor = HealthMonitor(
        [Check("reward:r", run=flapping)],
        interval_s=5,
        timeout_s=1,
        on_fatal=lambda _: None,
        clock=lambda: now[0],
    )
    with caplog.at_level(logging.INFO, logger="server.health"):
        for _ in range(24):  # two minutes of 5 s checks, failing every other one
            await monitor.check_once()
            now[0] += 5
    lines = [r.getMessage() for r in caplog.records]
    failures = [line for line in lines if "failed its health check" in line]
    assert len(failures) == 2, lines  # one a minute
    assert SECRET in failures[0]  # the detail goes to the log
    assert "more failed checks not logged" in failures[1]
    assert len(lines) <= 4  # each logged failure with its recovery


# -- the process ---------------------------------------------------------------------------

SERVER = """
import sys
from search.fakes import CharTokenizer, ScriptedGenerator, TableReward
from search.protocols import DeathWatched
from server.app import create_app
from server.cli import serve
from server.runtime import Runtime
from server.settings import Settings

class Dies(ScriptedGenerator, DeathWatched):
    started = None
    def is_dead(self):
        import time
        self.started = self.started or time.monotonic()
        return time.monotonic() - self.started > 0.5
    def on_death(self, callback):
        pass

async def fail(_):
    raise OSError("model folder /nonexistent not found")

settings = Settings(port=int(sys.argv[1]), health_interval_s=0.1)
if sys.argv[2] == "dies":
    rt = Runtime(Dies([]), CharTokenizer(), TableReward({}), "m", 100)
    app = create_app(settings, runtime=rt)
else:
    app = create_app(settings, loader=fail)
sys.exit(serve(settings, app=app))
"""


@pytest.mark.parametrize("case", ["dies", "fails-to-load"])
def test_the_server_process_exits_with_status_1(case: str) -> None:
    from tests.conftest import free_port

    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(SERVER), str(free_port()), case],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 1, log
    [line] = [line for line in log.splitlines() if "exiting with status 1" in line]
    if case == "dies":
        assert "engine has stopped" in line
    else:
        assert "loading failed: OSError: model folder /nonexistent not found" in line
    assert "Application shutdown complete" in log  # the runtime was closed on the way out
