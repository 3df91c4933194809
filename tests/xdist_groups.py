"""How `make test` splits the suite between two xdist workers (``-n 2 --dist loadgroup``).

A group runs whole on one worker. The files that share an engine live in one package each
(tests/e2e/served/ for the `make serve` server, tests/integration/shared/ for the
in-process engine and `vllm serve`), and a package is one group, so each engine starts
once and stops when its package is done; every other file is a group by itself, so its
module-scoped servers start once too. The groups are queued longest first (the shared
engines, then the other files that start engines, then the rest) so the workers end
together.

xdist 3.8's own ``loadgroup`` reads ``xdist_group`` marks by appending the group to each
item's ``_nodeid``, which pytest 9.2 no longer reads (``nodeid`` comes from ``_id``): every
test became its own group and both workers started every shared engine. So the groups come
from the paths here, through a scheduler of our own.
"""

from __future__ import annotations

import pytest
from xdist.scheduler import LoadScopeScheduling

SHARED_ENGINE_PACKAGES = ("tests/e2e/served/", "tests/integration/shared/")
STARTS_ENGINES = ("tests/e2e/", "tests/integration/")


def group_of(nodeid: str) -> str:
    path = nodeid.split("::", 1)[0]
    return next((p for p in SHARED_ENGINE_PACKAGES if path.startswith(p)), path)


def longest_first(items: list[pytest.Item]) -> None:
    """Reorder ``items`` in place (stable, so collection order within each rank)."""

    def rank(item: pytest.Item) -> int:
        group = group_of(item.nodeid)
        if group in SHARED_ENGINE_PACKAGES:
            return 0
        return 1 if group.startswith(STARTS_ENGINES) else 2

    items.sort(key=rank)


class GroupScheduling(LoadScopeScheduling):
    """xdist's load-scope scheduling with our groups as its scopes."""

    def _split_scope(self, nodeid: str) -> str:
        return group_of(nodeid)
