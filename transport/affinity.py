"""Search affinity: one routing key for every upstream call of one search.

Behind a router (vLLM Router, an ingress with a consistent-hash policy) over several vLLM
replicas, the calls of one search share a prompt and each other's prefixes: the N samples,
TreeBoN's layers and step rounds continue partial responses, and the judge's continuation
layout (rewards/judge.py) re-reads the generation prompt and the response, which only the
replica that generated them holds in its prefix cache. A search whose calls scatter over
replicas recomputes those prefixes on cold replicas.

The server gives each search a fresh random key (``scope``), held in a context variable:
the tasks a search starts inherit it, so the engine (engines/remote.py) sends it as a
header on every call without the algorithms knowing. Work that leaves the search's task
tree (the reward micro-batcher's worker, rewards/batcher.py) carries the key with the item
(``current``) and re-enters it (``scope``) per key. The key is random, never client data.
"""

from __future__ import annotations

import contextvars
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

_current: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "search_affinity", default=None
)


def new_key() -> str:
    return uuid.uuid4().hex


def current() -> str | None:
    """The running search's key; None outside a search."""
    return _current.get()


@contextmanager
def scope(key: str | None) -> Iterator[str | None]:
    """Runs the block (and the tasks it starts) under ``key``; None runs it keyless."""
    token = _current.set(key)
    try:
        yield key
    finally:
        _current.reset(token)
