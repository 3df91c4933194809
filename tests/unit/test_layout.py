"""The packages' import direction (the README's architecture section):

    search  <-  engines  <-  rewards  <-  server  <-  tools

A package imports only itself and the packages to its left, at module level or inside a
function alike; ``search`` imports no engine, HTTP or model library at all."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ORDER = ["search", "engines", "rewards", "server", "tools"]
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


@pytest.mark.parametrize("package", ORDER)
def test_each_package_imports_only_those_to_its_left(package: str) -> None:
    allowed = set(ORDER[: ORDER.index(package) + 1])
    wrong = {
        str(path.relative_to(ROOT)): sorted((imported_roots(path, package) & set(ORDER)) - allowed)
        for path in modules(package)
    }
    assert {k: v for k, v in wrong.items() if v} == {}


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
