"""What the server refuses before a search runs: missing keys (401), a full queue (429 with
Retry-After), oversized bodies (413). Over the fake runtime."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest

from server.auth import key_accepted
from server.cli import settings_from_args
from server.settings import Settings
from tests.unit.conftest import USER, make_runtime, scripted
from tests.unit.test_server_errors import assert_error
from tools.cli import build_parser

URL = "/v1/chat/completions"
GOOD = {"model": "m", "messages": USER, "search": {"n": 2}}


def metric(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    assert match, name
    return float(match.group(1))


# -- auth ----------------------------------------------------------------------------
def test_key_accepted_needs_a_bearer_with_a_configured_key() -> None:
    keys = ["k-one", "k-two"]
    assert key_accepted("Bearer k-two", keys)
    assert key_accepted("bearer k-one", keys)
    assert not key_accepted("Bearer k-three", keys)
    assert not key_accepted("k-one", keys)
    assert not key_accepted("Basic k-one", keys)
    assert not key_accepted(None, keys)
    assert not key_accepted("Bearer ", keys)


async def test_api_routes_need_a_key_and_ops_routes_stay_open(serve_app: Any) -> None:
    settings = Settings(api_key=["k-one", "k-two"])
    async with serve_app(settings=settings) as client:
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            r = await client.post(URL, json=GOOD, headers=headers)
            assert_error(r, 401, "authentication_error", None)
            assert r.headers["www-authenticate"] == "Bearer"
        assert (await client.get("/v1/models")).status_code == 401
        ok = await client.post(URL, json=GOOD, headers={"Authorization": "Bearer k-two"})
        assert ok.status_code == 200
        for route in ("/health", "/ready", "/metrics"):
            assert (await client.get(route)).status_code == 200, route


async def test_ops_routes_can_be_protected_too(serve_app: Any) -> None:
    settings = Settings(api_key=["k"], protect_ops_routes=True)
    async with serve_app(settings=settings) as client:
        assert (await client.get("/metrics")).status_code == 401
        r = await client.get("/metrics", headers={"Authorization": "Bearer k"})
        assert r.status_code == 200


def test_keys_from_env_comma_separated_and_repeated_flags(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ALIGNSERVE_API_KEY", "a, b ,c")
    assert Settings().api_key == ["a", "b", "c"]
    args = build_parser().parse_args(["serve", "--api-key", "x", "--api-key", "y"])
    assert settings_from_args(args).api_key == ["x", "y"]


async def test_l6_keys_from_a_file_not_from_the_command_line(
    serve_app: Any, tmp_path: Path
) -> None:
    path = tmp_path / "keys"
    path.write_text("# the team's keys\nk-file-1\n\n  k-file-2  \n")
    args = build_parser().parse_args(["serve", "--api-key-file", str(path), "--api-key", "k3"])
    settings = settings_from_args(args)
    assert settings.api_key == ["k3", "k-file-1", "k-file-2"]
    async with serve_app(settings=settings) as client:
        assert (await client.post(URL, json=GOOD)).status_code == 401
        ok = await client.post(URL, json=GOOD, headers={"Authorization": "Bearer k-file-2"})
        assert ok.status_code == 200


@pytest.mark.parametrize("text", [None, "", "# only a comment\n\n"])
def test_l6_a_missing_or_empty_key_file_refuses_to_start(tmp_path: Path, text: str | None) -> None:
    path = tmp_path / "keys"
    if text is not None:
        path.write_text(text)
    with pytest.raises(ValueError, match="api-key-file"):
        Settings(api_key_file=str(path))


async def test_l11_only_the_allowed_hosts_are_answered(serve_app: Any) -> None:
    settings = settings_from_args(
        build_parser().parse_args(["serve", "--allowed-hosts", "api.example.com,*.svc.local"])
    )
    async with serve_app(settings=settings) as client:
        for host, status in [
            ("api.example.com", 200),
            ("API.example.com:8000", 200),
            ("alignserve.ns.svc.local", 200),
            ("evil.example", 400),  # a DNS-rebinding page's own name
            ("127.0.0.1:8000", 400),
            ("svc.local.evil.example", 400),
        ]:
            r = await client.get("/health", headers={"Host": host})
            assert r.status_code == status, (host, r.text)
        refused = await client.post(URL, json=GOOD, headers={"Host": "evil.example"})
        assert_error(refused, 400, "invalid_request_error", None)
        assert "--allowed-hosts" in refused.json()["error"]["message"]


@pytest.mark.parametrize("env", ["", " , ", "a,,b", "a,"])
def test_m5_an_empty_key_in_the_environment_refuses_to_start(
    monkeypatch: pytest.MonkeyPatch, env: str
) -> None:
    monkeypatch.setenv("ALIGNSERVE_API_KEY", env)
    with pytest.raises(ValueError, match="API key is empty"):
        Settings()


def test_m5_an_empty_api_key_flag_refuses_to_start() -> None:
    args = build_parser().parse_args(["serve", "--api-key", "k", "--api-key", ""])
    with pytest.raises(ValueError, match="API key is empty"):
        settings_from_args(args)


# -- admission -----------------------------------------------------------------------
async def test_full_queue_is_429_with_retry_after(serve_app: Any) -> None:
    # One slot, one queue place: the third concurrent search is refused at once.
    settings = Settings(max_concurrent_searches=1, max_queued_searches=1, retry_after_s=3)
    runtime = make_runtime(scripted(delay_s=0.3))
    async with serve_app(runtime, settings) as client:
        first = asyncio.ensure_future(client.post(URL, json=GOOD))
        await asyncio.sleep(0.05)
        second = asyncio.ensure_future(client.post(URL, json=GOOD))
        await asyncio.sleep(0.05)
        text = (await client.get("/metrics")).text
        assert metric(text, "alignserve_searches_in_flight") == 1
        assert metric(text, "alignserve_queue_depth") == 1
        third = await client.post(URL, json=GOOD)
        assert_error(third, 429, "rate_limit_exceeded", None)
        assert third.headers["retry-after"] == "3"
        streamed = await client.post(URL, json={**GOOD, "stream": True})
        assert_error(streamed, 429, "rate_limit_exceeded", None)
        assert [(await t).status_code for t in (first, second)] == [200, 200]
        text = (await client.get("/metrics")).text
    assert metric(text, 'alignserve_rejections_total{reason="queue_full"}') == 2
    assert metric(text, "alignserve_searches_in_flight") == 0
    assert metric(text, "alignserve_queue_depth") == 0


async def test_slots_come_back_after_errors_and_streams(serve_app: Any) -> None:
    settings = Settings(max_concurrent_searches=1, max_queued_searches=0)
    async with serve_app(settings=settings) as client:
        bad = await client.post(URL, json={**GOOD, "search": {"algorithm": "nope"}})
        assert bad.status_code == 400
        for _ in range(3):
            r = await client.post(URL, json={**GOOD, "stream": True})
            assert r.status_code == 200 and r.text.endswith("data: [DONE]\n\n")
            assert (await client.post(URL, json=GOOD)).status_code == 200
        text = (await client.get("/metrics")).text
    assert metric(text, "alignserve_searches_in_flight") == 0


async def test_draining_refuses_new_searches_and_waits_for_running_ones(
    serve_app: Any,
) -> None:
    # What SIGTERM does (server.shutdown): the running search finishes, new ones get 503.
    runtime = make_runtime(scripted(delay_s=0.3))
    async with serve_app(runtime) as client:
        admission = client._transport.app.state.admission
        running = asyncio.ensure_future(client.post(URL, json=GOOD))
        await asyncio.sleep(0.05)
        admission.draining = True
        assert not await admission.wait_idle(0.01)
        assert (await client.get("/ready")).status_code == 503
        for body in (GOOD, {**GOOD, "stream": True}):
            refused = await client.post(URL, json=body)
            assert_error(refused, 503, "service_unavailable", None)
            assert refused.headers["retry-after"] == "1"
        assert (await running).status_code == 200
        assert await admission.wait_idle(1)
        text = (await client.get("/metrics")).text
    assert metric(text, 'alignserve_rejections_total{reason="shutting_down"}') == 2


# -- body size -----------------------------------------------------------------------
async def test_oversized_body_is_413(serve_app: Any) -> None:
    settings = Settings(max_body_bytes=2048)
    big = {**GOOD, "messages": [{"role": "user", "content": "x" * 4000}]}
    async with serve_app(settings=settings) as client:
        assert_error(await client.post(URL, json=big), 413, "invalid_request_error", None)

        async def chunks() -> Any:  # no Content-Length: counted as it arrives
            for _ in range(10):
                yield b" " * 500

        r = await client.post(URL, content=chunks(), headers={"content-type": "application/json"})
        assert_error(r, 413, "invalid_request_error", None)
        assert (await client.post(URL, json=GOOD)).status_code == 200


# -- deadlines -----------------------------------------------------------------------
class SlowAfterFirst:
    """Answers the first call at once and every later one after ``delay_s``; records
    which calls were cancelled (the engine work a deadline must abort)."""

    def __init__(self, texts: list[str], delay_s: float) -> None:
        self.inner = scripted(texts)
        self.delay_s = delay_s
        self.calls = 0
        self.cancelled = 0

    async def generate(self, prompt_ids: Any, params: Any, n: int = 1) -> Any:
        self.calls += 1
        if self.calls > 1:
            try:
                await asyncio.sleep(self.delay_s)
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
        return await self.inner.generate(prompt_ids, params, n)


TREE = {"algorithm": "treebon", "n": 4, "layers": 2}


async def test_deadline_answers_with_the_best_scored_so_far(serve_app: Any) -> None:
    # treebon: the roots come back and are scored (partially); the continuations hang.
    gen = SlowAfterFirst(["one", "three", "three", "seven"], delay_s=5)
    search = {**TREE, "timeout_s": 0.3, "return_candidates": True}
    async with serve_app(make_runtime(gen)) as client:
        r = await client.post(URL, json={**GOOD, "max_tokens": 4, "search": search})
        text = (await client.get("/metrics")).text
    assert r.status_code == 200, r.text
    data = r.json()
    # max_tokens 4 in 2 layers: the roots are "on", "th", "th", "se", all partially scored
    # 0 (unknown to the reward table), so the earliest one is the best so far.
    assert data["choices"][0]["message"]["content"] == "on"
    assert data["search"]["details"] == {"deadline_hit": True, "answer_was_partial": True}
    assert data["choices"][0]["finish_reason"] == "length"
    assert gen.cancelled >= 1
    assert metric(text, 'alignserve_deadline_hits_total{outcome="best_so_far"}') == 1


async def test_deadline_with_on_timeout_error_is_504(serve_app: Any) -> None:
    gen = SlowAfterFirst(["one", "three", "three", "seven"], delay_s=5)
    search = {**TREE, "timeout_s": 0.2, "on_timeout": "error"}
    async with serve_app(make_runtime(gen)) as client:
        r = await client.post(URL, json={**GOOD, "max_tokens": 4, "search": search})
        text = (await client.get("/metrics")).text
    assert_error(r, 504, "timeout", "search.timeout_s")
    assert gen.cancelled >= 1
    assert metric(text, 'alignserve_deadline_hits_total{outcome="error"}') == 1


async def test_deadline_before_anything_was_scored_is_504(serve_app: Any) -> None:
    runtime = make_runtime(scripted(delay_s=5))
    async with serve_app(runtime, Settings(request_timeout_s=0.2)) as client:
        r = await client.post(URL, json=GOOD)
    assert_error(r, 504, "timeout", "search.timeout_s")


@pytest.mark.parametrize(
    ("search", "param"),
    [
        ({"timeout_s": 0}, "search.timeout_s"),
        ({"timeout_s": "soon"}, "search.timeout_s"),
        ({"on_timeout": "wait"}, "search.on_timeout"),
    ],
)
async def test_deadline_options_are_validated(
    serve_app: Any, search: dict[str, Any], param: str
) -> None:
    async with serve_app() as client:
        r = await client.post(URL, json={**GOOD, "search": search})
    assert_error(r, 400, "invalid_request_error", param)


def test_m5_serve_with_an_empty_key_exits_with_the_reason(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from tools import cli

    with pytest.raises(SystemExit) as exit_:
        cli.main(["serve", "--api-key", ""])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "API key is empty" in err and "Traceback" not in err


# -- limits on one request's size and work -------------------------------------------
async def test_limits_on_messages_and_characters_are_400s_naming_them(serve_app: Any) -> None:
    settings = Settings(max_messages=3, max_request_chars=100)
    async with serve_app(make_runtime(), settings) as client:
        many = [{"role": "user", "content": "hi"}] * 4
        r = await client.post(URL, json={**GOOD, "messages": many})
        assert_error(r, 400, "invalid_request_error", "messages")
        long = [{"role": "user", "content": "x" * 101}]
        r = await client.post(URL, json={**GOOD, "messages": long})
        assert_error(r, 400, "invalid_request_error", "messages")
        text = (await client.get("/metrics")).text
    assert metric(text, 'alignserve_limit_rejections_total{limit="messages"}') == 1
    assert metric(text, 'alignserve_limit_rejections_total{limit="request_chars"}') == 1


async def test_h2_a_search_whose_worst_case_is_over_budget_is_a_400(serve_app: Any) -> None:
    settings = Settings(max_search_tokens=100)
    async with serve_app(make_runtime(), settings) as client:
        r = await client.post(URL, json={**GOOD, "max_tokens": 60, "search": {"n": 2}})
        assert_error(r, 400, "invalid_request_error", "search")
        assert "--max-search-tokens" in r.json()["error"]["message"]
        text = (await client.get("/metrics")).text
    assert metric(text, 'alignserve_limit_rejections_total{limit="search_tokens"}') == 1


async def test_h1_the_regex_budget_is_the_servers_setting(serve_app: Any) -> None:
    line = "The sea is wide and deep, and its waves roll on forever under the grey sky, ok!"
    settings = Settings(regex_timeout_s=0.05)
    runtime = make_runtime(scripted([line, line]))
    search = {"algorithm": "majority", "n": 2, "answer_regex": r"(?:\w+|\w+\s|.)*(\d)"}
    async with serve_app(runtime, settings) as client:
        r = await client.post(URL, json={**GOOD, "search": search})
        assert_error(r, 400, "invalid_request_error", "search.answer_regex")
        text = (await client.get("/metrics")).text
    assert metric(text, 'alignserve_limit_rejections_total{limit="regex_time"}') == 1
