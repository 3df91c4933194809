"""Two xdist workers, each test file run whole on one of them, and the files that share an
engine on the same one (`make test` runs ``pytest -n 2 --dist loadgroup``).

xdist's own ``loadgroup`` reads ``xdist_group`` marks by appending the group to each
item's ``_nodeid``, which pytest 9.2 no longer reads (``nodeid`` comes from ``_id``), so
every test became its own group and both workers started every shared engine. Here the
workers write the groups they computed at collection to a file the controller named, and
the controller's scheduler (xdist's load-scope scheduler, keyed by those groups) reads it.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest
from xdist.scheduler import LoadScopeScheduling

ENV = "ALIGNSERVE_TEST_GROUPS"  # the file's path, set by the controller for its workers

# Engines that several test files share, started once per pytest process: their users
# run on one worker, one after another.
SHARED_ENGINES = {"served": "e2e-server", "engine": "engines", "vllm_server": "engines"}


def group_items(items: list[pytest.Item]) -> dict[str, str]:
    """Each item's group, keyed by node id: the files that use a shared engine get that
    engine's group, every other file its own (its module-scoped servers start once). Then
    ``items`` is reordered longest first, so two workers end together: the shared-engine
    groups, then the other files that start engines (integration, e2e), then the rest, in
    collection order within each. A shared engine's users stay contiguous, so it starts
    once with or without xdist."""
    group_of_file: dict[str, str] = {}
    for item in items:
        path = item.nodeid.split("::", 1)[0]
        for name in item.fixturenames if isinstance(item, pytest.Function) else ():
            if name in SHARED_ENGINES:
                group_of_file.setdefault(path, SHARED_ENGINES[name])
    groups = {}
    for item in items:
        path = item.nodeid.split("::", 1)[0]
        groups[item.nodeid] = group_of_file.get(path, path)

    def weight(item: pytest.Item) -> int:
        group = groups[item.nodeid]
        if group in SHARED_ENGINES.values():
            return 0
        return 1 if group.startswith(("tests/e2e/", "tests/integration/")) else 2

    items.sort(key=weight)  # stable
    return groups


def name_the_file(config: pytest.Config) -> None:
    """On the controller of an xdist run: where the workers will write their groups."""
    if hasattr(config, "workerinput") or not config.getoption("numprocesses", None):
        return
    handle, path = tempfile.mkstemp(prefix="alignserve-test-groups-", suffix=".json")
    os.close(handle)
    os.environ[ENV] = path  # the workers start after pytest_configure and inherit it


def remove_the_file(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput") and os.environ.get(ENV):
        Path(os.environ.pop(ENV)).unlink(missing_ok=True)


def write_groups(groups: dict[str, str]) -> None:
    """On a worker: every worker collects the same items, so whichever writes last writes
    the same file; a rename makes each write whole."""
    path = os.environ.get(ENV)
    if not path or "PYTEST_XDIST_WORKER" not in os.environ:
        return
    tmp = Path(f"{path}.{os.environ['PYTEST_XDIST_WORKER']}")
    tmp.write_text(json.dumps(groups))
    tmp.replace(path)


class GroupScheduling(LoadScopeScheduling):
    """xdist's load-scope scheduling with the workers' groups as its scopes (a node id the
    file lacks is its own scope, as under plain ``--dist load``)."""

    _groups: dict[str, str] | None = None

    def _split_scope(self, nodeid: str) -> str:
        if self._groups is None:
            self._groups = json.loads(Path(os.environ[ENV]).read_text() or "{}")
        return self._groups.get(nodeid, nodeid)
