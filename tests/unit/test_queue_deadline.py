"""L1 (review 2026-12-07): a request's deadline counts from its arrival, so one that
waits in the queue for a slot gets 504 at its own deadline instead of waiting for a
slot and then running its whole deadline."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from server.settings import Settings
from tests.unit.conftest import USER, make_runtime, scripted

URL = "/v1/chat/completions"


async def test_l1_a_queued_request_honours_its_own_deadline(serve_app: Any) -> None:
    settings = Settings(max_concurrent_searches=1, max_queued_searches=2)
    runtime = make_runtime(scripted(delay_s=3))
    async with serve_app(runtime, settings) as client:
        slow = asyncio.ensure_future(client.post(URL, json={"messages": USER, "search": {"n": 2}}))
        await asyncio.sleep(0.3)  # the slow one holds the only slot
        start = time.perf_counter()
        queued = await client.post(
            URL, json={"messages": USER, "search": {"n": 2, "timeout_s": 0.5}}
        )
        waited = time.perf_counter() - start
        assert (await slow).status_code == 200
        metrics = (await client.get("/metrics")).text
    assert queued.status_code == 504, queued.text
    assert queued.json()["error"]["param"] == "search.timeout_s"
    assert "did not start within 0.5 s" in queued.json()["error"]["message"]
    # Before: 504 after the slot came free (about 3 s) plus its own 0.5 s.
    assert waited < 1.5
    assert 'alignserve_deadline_hits_total{outcome="error"} 1.0' in metrics
