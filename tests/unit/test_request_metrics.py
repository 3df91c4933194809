"""alignserve_requests_total and alignserve_request_latency_seconds by API
(server.request_metrics): each search API counts in its own ``api`` series, and a request
refused before its search was parsed is counted under no algorithm and kept out of the
latency histogram, wherever it was refused (key gate, body limit, schema, search options,
model)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from search.errors import EngineUnavailable
from search.types import Completion, SamplingConfig
from server.app import create_app
from server.request_metrics import API_ROUTES
from server.settings import Settings
from tests.unit.conftest import make_runtime

USER = [{"role": "user", "content": "hi"}]
CHAT, COMPLETIONS, RESPONSES = "/v1/chat/completions", "/v1/completions", "/v1/responses"


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """sorted labels -> value, for every sample called ``name``."""
    return {
        tuple(sorted(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    }


def requests(text: str) -> dict[tuple[str, str, str], float]:
    """(api, algorithm, status) -> alignserve_requests_total."""
    return {
        (d["api"], d["algorithm"], d["status"]): v
        for labels, v in samples(text, "alignserve_requests_total").items()
        for d in [dict(labels)]
    }


def latency_counts(text: str) -> dict[tuple[str, str], float]:
    """(api, algorithm) -> alignserve_request_latency_seconds_count."""
    return {
        (d["api"], d["algorithm"]): v
        for labels, v in samples(text, "alignserve_request_latency_seconds_count").items()
        for d in [dict(labels)]
    }


async def test_each_api_counts_in_its_own_series(serve_app: Any) -> None:
    async with serve_app() as client:
        chat = await client.post(CHAT, json={"messages": USER})
        completions = await client.post(COMPLETIONS, json={"prompt": "hi", "best_of": 2})
        responses = await client.post(RESPONSES, json={"input": "hi"})
        streamed = await client.post(RESPONSES, json={"input": "hi", "stream": True})
        text = (await client.get("/metrics")).text
    assert [r.status_code for r in (chat, completions, responses, streamed)] == [200] * 4
    assert requests(text) == {
        ("chat", "bon", "200"): 1.0,
        ("completions", "bon", "200"): 1.0,
        ("responses", "bon", "200"): 2.0,
    }
    assert latency_counts(text) == {
        ("chat", "bon"): 1.0,
        ("completions", "bon"): 1.0,
        ("responses", "bon"): 2.0,
    }


async def test_refusals_before_the_search_is_parsed_have_no_algorithm(serve_app: Any) -> None:
    async with serve_app() as client:
        refused = [
            # the search options: an unknown algorithm, a Best-of-N over the server's limit
            await client.post(CHAT, json={"messages": USER, "search": {"algorithm": "x"}}),
            await client.post(CHAT, json={"messages": USER, "search": {"n": 1000}}),
            # the body's schema, before any handler runs
            await client.post(CHAT, json={"messages": []}),
            await client.post(CHAT, content=b"{not json"),
            # another model
            await client.post(CHAT, json={"messages": USER, "model": "gpt-9"}),
            # the completions API's own refusals (suffix), and its schema's
            await client.post(COMPLETIONS, json={"prompt": "hi", "suffix": "end"}),
            await client.post(COMPLETIONS, json={"prompt": []}),
            await client.post(RESPONSES, json={"input": "hi", "previous_response_id": "r"}),
        ]
        text = (await client.get("/metrics")).text
    assert [r.status_code for r in refused] == [400, 400, 400, 400, 404, 400, 400, 400]
    assert requests(text) == {
        ("chat", "", "400"): 4.0,
        ("chat", "", "404"): 1.0,
        ("completions", "", "400"): 2.0,
        ("responses", "", "400"): 1.0,
    }
    # No search ran: the latency histogram has no observation at all.
    assert latency_counts(text) == {}


async def test_the_key_gate_and_the_body_limit_are_counted(serve_app: Any) -> None:
    settings = Settings(api_key=["k"], max_body_bytes=1024)
    key = {"Authorization": "Bearer k"}
    async with serve_app(settings=settings) as client:
        unauthorized = await client.post(COMPLETIONS, json={"prompt": "hi"})
        too_large = await client.post(CHAT, json={"messages": USER * 100}, headers=key)
        served = await client.post(CHAT, json={"messages": USER}, headers=key)
        models = await client.get("/v1/models", headers=key)
        elsewhere = await client.post("/v1/chat/completion", json={}, headers=key)
        text = (await client.get("/metrics")).text
    statuses = [r.status_code for r in (unauthorized, too_large, served, models, elsewhere)]
    assert statuses == [401, 413, 200, 200, 404]
    # /v1/models and a mistyped route are not search API requests: not counted.
    assert requests(text) == {
        ("completions", "", "401"): 1.0,
        ("chat", "", "413"): 1.0,
        ("chat", "bon", "200"): 1.0,
    }
    assert latency_counts(text) == {("chat", "bon"): 1.0}


class DownGenerator:
    async def generate(
        self, prompt_ids: Sequence[int], params: SamplingConfig, n: int = 1
    ) -> list[Completion]:
        raise EngineUnavailable("engine is down")


async def test_a_search_that_fails_keeps_its_algorithm_and_a_door_refusal_has_none() -> None:
    app = create_app(Settings(), runtime=make_runtime(DownGenerator()))
    transport = httpx.ASGITransport(app=app)
    search = {"messages": USER, "search": {"algorithm": "srbon", "n": 2}}
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        failed = await client.post(CHAT, json=search)
        app.state.admission.draining = True  # every new search is refused at the door
        draining = await client.post(CHAT, json=search)
        text = (await client.get("/metrics")).text
    assert (failed.status_code, draining.status_code) == (503, 503)
    # The failed search ran: its algorithm and its latency. The draining refusal did not.
    assert requests(text) == {("chat", "srbon", "503"): 1.0, ("chat", "", "503"): 1.0}
    assert latency_counts(text) == {("chat", "srbon"): 1.0}


def test_every_search_api_route_has_an_api_label() -> None:
    app = create_app(Settings())
    posts = {
        route.path
        for route in app.routes
        if "POST" in getattr(route, "methods", ()) and route.path.startswith("/v1/")
    }
    assert posts == set(API_ROUTES)
    assert set(API_ROUTES.values()) == {"chat", "completions", "responses"}
