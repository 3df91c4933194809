"""Liveness, readiness, and the background checks readiness reads.

``/health`` (liveness) is local: it answers while the process and its event loop run and
never calls a dependency, so an outage of a remote engine or reward model cannot make the
orchestrator restart every replica at once, and a flood of probes costs nothing upstream.
It fails only once the process is exiting (a fatal error, below).

``/ready`` (readiness) covers the dependencies from a cached state: :class:`HealthMonitor`
checks the policy engine, every reward that can check itself (``HealthChecked``, found
through the server's wrappers, ``Wrapping``) and the DPO/reference scorers every
``health_interval_s``, each bounded by ``health_timeout_s``. A hung dependency then holds
neither a probe nor the generation connection pool. Bodies name the failed component ("engine",
"reward:NAME", "dpo", "reference") with a fixed phrase; what went wrong goes to the log,
at most one failure line a minute per component, so a flapping dependency cannot flood it.

Fatal errors end the process with status 1, so the orchestrator restarts it (a server
that answers 503 forever is never replaced): an in-process engine that died, as in
vLLM's server (``terminate_if_errored``), and a runtime that failed to load. ``fatal``
records the reason on ``app.state.fatal`` (which ``server.shutdown`` turns into the exit
status) and calls ``app.state.exit_server``, which the serving loop sets.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response

from search.protocols import DeathWatched, HealthChecked, Wrapping
from server.errors import error_body
from server.openapi_docs import OPS_ERRORS

logger = logging.getLogger(__name__)

# The fixed phrases of a failed component: never exception text, which can carry URLs.
TIMED_OUT = "did not answer its health check in time"
FAILED = "failed its health check"
STOPPED = "has stopped"
LOG_EVERY_S = 60.0


@dataclass(frozen=True)
class Check:
    """One component: ``run`` raises (or hangs) when it is unhealthy; ``is_dead`` says,
    cheaply, that it died for good (an in-process engine); ``on_death`` registers a
    callback for a death a request runs into."""

    name: str
    run: Callable[[], Awaitable[None]] | None = None
    is_dead: Callable[[], bool] | None = None
    on_death: Callable[[Callable[[], None]], None] | None = None


def health_check_of(model: object) -> Callable[[], Awaitable[None]] | None:
    """A reward's ``check_health`` (``HealthChecked``), looked up through the wrappers
    (``TimedReward``, ``MicroBatcher``: ``Wrapping``) that keep the model as ``inner``."""
    for _ in range(8):  # wrappers nest a couple of levels; a cycle must not hang
        if isinstance(model, HealthChecked):
            return model.check_health
        if not isinstance(model, Wrapping):
            return None
        model = model.inner
    return None


def engine_check(name: str, engine: object, run: Callable[[], Awaitable[None]] | None) -> Check:
    """``engine``'s death flag and callbacks when it can die for good (``DeathWatched``)."""
    if not isinstance(engine, DeathWatched):
        return Check(name, run=run)
    return Check(name, run=run, is_dead=engine.is_dead, on_death=engine.on_death)


def checks_of(runtime: Any) -> list[Check]:
    """What readiness covers for a runtime: the policy engine, each named reward and PRM
    with a health check, and each DPO scorer that is not the policy engine itself."""
    checks = [engine_check("engine", runtime.generator, runtime.health_check)]
    if runtime.rewards is not None:
        for name, model in runtime.rewards.models.items():
            run = health_check_of(model)
            if run is not None:
                checks.append(Check(f"reward:{name}", run=run))
    for name, prm in getattr(runtime, "prms", {}).items():  # a remote PRM (--prm)
        run = health_check_of(prm)
        if run is not None:
            checks.append(Check(f"prm:{name}", run=run))
    for role, scorer in (("dpo", runtime.dpo), ("reference", runtime.reference)):
        if scorer is not None and scorer is not runtime.generator:
            run = scorer.check_health if isinstance(scorer, HealthChecked) else None
            checks.append(engine_check(role, scorer, run))
    return checks


class HealthMonitor:
    """Runs the checks in the background and caches the outcome (see the module doc).
    ``on_fatal(component)`` is called once, when an engine is found dead."""

    def __init__(
        self,
        checks: Sequence[Check],
        *,
        interval_s: float,
        timeout_s: float,
        on_fatal: Callable[[str], None],
        log_every_s: float = LOG_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.checks = list(checks)
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.on_fatal = on_fatal
        self.log_every_s = log_every_s
        self.clock = clock
        # component -> its fixed failure phrase, in check order when read.
        self.failed: dict[str, str] = {}
        self.dead: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopped = False
        self._last_logged: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self._episode_logged: dict[str, bool] = {}

    def start(self) -> None:
        for check in self.checks:
            if check.on_death is not None:
                check.on_death(partial(self.died, check.name))
        self._task = asyncio.create_task(self._loop(), name="health-monitor")

    async def stop(self) -> None:
        """Before the runtime closes: an engine shut down on purpose is not a death."""
        self._stopped = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def problem(self) -> str | None:
        """Why the server is not ready ("reward:judge failed its health check"), or None.
        Reads the engines' death flags at once; everything else is cached."""
        self.poll_deaths()
        for check in self.checks:
            phrase = self.failed.get(check.name)
            if phrase is not None:
                return f"{check.name} {phrase}"
        return None

    def poll_deaths(self) -> None:
        for check in self.checks:
            if check.is_dead is not None and check.name != self.dead and check.is_dead():
                self.died(check.name)

    def died(self, name: str) -> None:
        """An engine died: not ready from now on, and the process should exit."""
        if self._stopped or self.dead is not None:
            return
        self.dead = name
        self.failed[name] = STOPPED
        self.on_fatal(name)

    async def check_once(self) -> None:
        self.poll_deaths()
        runs = [c for c in self.checks if c.run is not None and c.name != self.dead]
        await asyncio.gather(*(self._check(c) for c in runs))

    async def _check(self, check: Check) -> None:
        assert check.run is not None
        try:
            await asyncio.wait_for(check.run(), self.timeout_s)
        except TimeoutError:
            self._failure(check.name, TIMED_OUT, f"no answer within {self.timeout_s:g} s")
        except Exception as exc:
            self._failure(check.name, FAILED, describe(exc))
        else:
            self._recovered(check.name)

    async def _loop(self) -> None:
        while True:
            try:
                await self.check_once()
            except Exception:  # a bug here must not end the checks for good
                logger.exception("health: the checks failed")
            await asyncio.sleep(self.interval_s)

    def _failure(self, name: str, phrase: str, detail: str) -> None:
        if name == self.dead:
            return
        new = name not in self.failed
        self.failed[name] = phrase
        now = self.clock()
        if now - self._last_logged.get(name, -math.inf) < self.log_every_s:
            self._suppressed[name] = self._suppressed.get(name, 0) + 1
            if new:
                self._episode_logged[name] = False
            return
        more = self._suppressed.pop(name, 0)
        logger.warning(
            "health: %s %s: %s%s",
            name,
            phrase,
            detail,
            f" ({more} more failed checks not logged)" if more else "",
        )
        self._last_logged[name] = now
        self._episode_logged[name] = True

    def _recovered(self, name: str) -> None:
        # A recovery is logged when its failure was, so the log pairs them.
        if self.failed.pop(name, None) is not None and self._episode_logged.pop(name, False):
            logger.info("health: %s recovered", name)


def describe(exc: BaseException) -> str:
    """For the log only: the exception and its cause, on one line."""
    text = f"{type(exc).__name__}: {exc}"
    if exc.__cause__ is not None:
        text += f" (from {type(exc.__cause__).__name__}: {exc.__cause__})"
    return " ".join(text.split())[:1000]


def fatal(app: FastAPI, reason: str, detail: str = "") -> None:
    """Record a fatal error (``reason``: a fixed phrase, shown on /ready and /health),
    log it with ``detail`` on one line, and ask the server to exit with status 1. Without
    ``app.state.exit_server`` (set by ``server.shutdown.run_draining``; absent under another
    ASGI server or in tests) the app only reports it, on both probes."""
    if app.state.fatal is not None:
        return
    app.state.fatal = reason
    line = " ".join(f"{reason}: {detail}".split()) if detail else reason
    logger.critical("%s; exiting with status 1", line)
    exit_server = getattr(app.state, "exit_server", None)
    if exit_server is not None:
        exit_server()


def start_monitor(app: FastAPI, runtime: Any) -> HealthMonitor:
    settings = app.state.settings

    def engine_died(name: str) -> None:
        fatal(
            app,
            f"{name} {STOPPED}",
            "the in-process vLLM engine died (its error is logged above)",
        )

    monitor = HealthMonitor(
        checks_of(runtime),
        interval_s=settings.health_interval_s,
        timeout_s=settings.health_timeout_s,
        on_fatal=engine_died,
    )
    monitor.start()
    app.state.health = monitor
    return monitor


def unavailable(message: str) -> JSONResponse:
    return JSONResponse(error_body(message, "service_unavailable", 503), status_code=503)


def install_health_routes(app: FastAPI, model_name: Callable[[], str]) -> None:
    """/health and /ready on ``app`` (state: ``fatal``, ``runtime``, ``health``,
    ``admission``)."""
    app.state.fatal = None
    app.state.health = None

    @app.get("/health", responses=OPS_ERRORS)
    async def health() -> Response:
        if app.state.fatal is not None:
            return unavailable(f"{app.state.fatal}; the server is exiting")
        return JSONResponse({"status": "ok"})

    @app.get("/ready", responses=OPS_ERRORS)
    async def ready() -> Response:
        monitor: HealthMonitor | None = app.state.health
        if monitor is not None:
            monitor.poll_deaths()  # a flag read: a dead engine is not ready a moment later
        if app.state.fatal is not None:
            return unavailable(f"{app.state.fatal}; the server is exiting")
        if app.state.admission.draining:
            return unavailable("shutting down: draining the searches in flight")
        if app.state.runtime is None:
            return unavailable("loading the model")
        problem = monitor.problem() if monitor is not None else None
        if problem is not None:
            return unavailable(f"not ready: {problem}")
        return JSONResponse({"status": "ready", "model": model_name()})
