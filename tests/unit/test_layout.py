"""The packages' import direction (DESIGN.md's layout):

    tools  ->  server  ->  {engines, rewards}  ->  search
                                  |
                                  v
                              transport

A package imports only itself and the packages below it, at module level or inside a
function alike. ``engines`` and ``rewards`` are siblings: neither imports the other (what a
reward needs of a tokenizer is a protocol in search.protocols; HTTP retries live in
``transport``, below both). ``search`` imports none of them, and no engine, HTTP or model
library at all; ``transport`` imports none of server, engines, rewards or tools."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# What each package may import besides itself.
ALLOWED = {
    "search": set(),
    "transport": set(),
    "engines": {"search", "transport"},
    "rewards": {"search", "transport"},
    "server": {"search", "transport", "engines", "rewards"},
    "tools": {"search", "transport", "engines", "rewards", "server"},
}
PACKAGES = set(ALLOWED)
# What "pure asyncio algorithms" rules out, at any depth of search/.
NOT_IN_SEARCH = {"vllm", "httpx", "torch", "transformers", "fastapi", "uvicorn"}


def imported_roots(path: Path, package: str) -> set[str]:
    """Top-level names of every module ``path`` (in ``package``) imports; a relative
    import is its own package's."""
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                roots.add(package)
            elif node.module:
                roots.add(node.module.split(".")[0])
    return roots


def modules(package: str) -> list[Path]:
    found = sorted((ROOT / package).rglob("*.py"))
    assert found, f"no modules under {package}/"
    return found


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_each_package_imports_only_those_below_it(package: str) -> None:
    allowed = ALLOWED[package] | {package}
    wrong = {
        str(path.relative_to(ROOT)): sorted((imported_roots(path, package) & PACKAGES) - allowed)
        for path in modules(package)
    }
    assert {k: v for k, v in wrong.items() if v} == {}


def test_engines_and_rewards_are_siblings() -> None:
    assert "rewards" not in ALLOWED["engines"] and "engines" not in ALLOWED["rewards"]


def test_the_direction_has_no_cycle() -> None:
    """Each package's allowed imports are allowed to its importers too (a layered order)."""
    for package, below in ALLOWED.items():
        for lower in below:
            assert ALLOWED[lower] <= below, (package, lower)
            assert package not in ALLOWED[lower]


def test_search_imports_no_engine_http_or_model_library() -> None:
    wrong = {
        str(path.relative_to(ROOT)): sorted(imported_roots(path, "search") & NOT_IN_SEARCH)
        for path in modules("search")
    }
    assert {k: v for k, v in wrong.items() if v} == {}


def test_server_holds_only_the_http_server() -> None:
    tools = ("bench", "eval", "loadgen", "tail_check", "export")
    names = [p.stem for p in modules("server")]
    assert [n for n in names if n.startswith(tools)] == []


def test_the_checker_sees_imports_inside_functions(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(
        "def f():\n    import httpx\n    from server.app import x\n    from . import y\n"
    )
    assert imported_roots(probe, "search") == {"httpx", "server", "search"}
