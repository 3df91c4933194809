"""Shared fakes and helpers for the unit tests: no engine, no model, no network."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import httpx
import httpx2
import openai
import pytest

from search.fakes import CharTokenizer, ScriptedGenerator, TableReward
from server.app import create_app
from server.runtime import Runtime
from server.settings import Settings

# Four candidates; "three" is the best (index 1), and repeated at index 2.
CANDIDATES = ["one", "three", "three", "seven"]
REWARDS = {"one": 0.1, "three": 0.8, "seven": 0.5}
USER = [{"role": "user", "content": "hi"}]
# CharTokenizer renders "<user>hi<assistant>": 6 + 2 + 11 characters.
USER_PROMPT_TOKENS = 19


def first_n(texts: Sequence[str]) -> Callable[[Sequence[int], int], list[str]]:
    """A script entry answering the first n of ``texts``."""

    def entry(_prompt: Sequence[int], n: int) -> list[str]:
        return list(texts[:n])

    return entry


def scripted(texts: Sequence[str] = CANDIDATES, calls: int = 20, **kw: Any) -> ScriptedGenerator:
    return ScriptedGenerator([first_n(texts) for _ in range(calls)], **kw)


def make_runtime(
    generator: Any = None, reward: Any = None, *, max_model_len: int = 3000, **kw: Any
) -> Runtime:
    return Runtime(
        generator=generator if generator is not None else scripted(),
        tokenizer=CharTokenizer(),
        reward=reward if reward is not None else TableReward(REWARDS),
        model_name="m",
        max_model_len=max_model_len,
        **kw,
    )


@asynccontextmanager
async def serve(
    runtime: Runtime | None = None,
    settings: Settings | None = None,
    *,
    raise_app_exceptions: bool = True,
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings or Settings(), runtime=runtime or make_runtime())
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=raise_app_exceptions)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        yield client


@asynccontextmanager
async def openai_client() -> AsyncIterator[openai.AsyncOpenAI]:
    """The official async client over the in-process app (default runtime), its lifespan
    run: for the tests of what OpenAI's own code does with the answers."""
    app = create_app(Settings(), runtime=make_runtime())
    async with app.router.lifespan_context(app):
        transport = httpx2.ASGITransport(app=app)
        async with httpx2.AsyncClient(transport=transport, base_url="http://t") as http:
            yield openai.AsyncOpenAI(
                base_url="http://t/v1", api_key="unused", http_client=http, max_retries=0
            )


def sse_events(body: str) -> list[str]:
    """The SSE events of a body, in order, without their trailing blank line."""
    assert body.endswith("\n\n"), body[-50:]
    return [event for event in body.split("\n\n") if event]


def sse_data(body: str) -> list[Any]:
    """JSON payloads of the ``data:`` events; ``[DONE]`` stays a string."""
    out: list[Any] = []
    for event in sse_events(body):
        if not event.startswith("data: "):
            continue
        payload = event.removeprefix("data: ")
        out.append(payload if payload == "[DONE]" else json.loads(payload))
    return out


@pytest.fixture(autouse=True)
def _no_alignserve_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings() reads ALIGNSERVE_* variables; a developer's shell must not change results."""
    for name in list(os.environ):
        if name.startswith("ALIGNSERVE_"):
            monkeypatch.delenv(name)


# Fixtures hand the helpers to the test modules (no imports between test files).
ServeFactory = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def serve_app() -> ServeFactory:
    return serve


@pytest.fixture
def runtime_of() -> Callable[..., Runtime]:
    return make_runtime


@pytest.fixture
def script() -> Callable[..., ScriptedGenerator]:
    return scripted


@pytest.fixture
def parse_sse() -> Callable[[str], list[Any]]:
    return sse_data
