"""One GET that says whether a remote dependency answers (finding M3 of the 2026-12-07
review: no remote reward had a health check, so a reward outage left ``/ready`` at 200).

The health monitor (``server.health``) calls a dependency's ``check_health`` every
``--health-interval-s`` under ``--health-timeout-s``; this is the body those checks share.
The error says what failed and never the URL (``/ready`` shows it; the log has the rest).
"""

from __future__ import annotations

import logging

import httpx

from search.errors import RewardUnavailable

logger = logging.getLogger(__name__)


async def answers_get(client: httpx.AsyncClient, url: str, what: str) -> None:
    """Raises RewardUnavailable unless ``GET url`` answers 200."""
    try:
        reply = await client.get(url)
    except httpx.HTTPError as exc:
        logger.debug("health GET %s: %r", url, exc)
        raise RewardUnavailable(f"{what} health check failed: {type(exc).__name__}") from exc
    if reply.status_code != 200:
        raise RewardUnavailable(f"{what} health check answered HTTP {reply.status_code}")
