"""Shared fixtures. The real engine and the default model are started once per session."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MT_BENCH = ROOT.parent / "shared" / "data" / "mt_bench_questions.jsonl"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def mt_bench_prompts(limit: int = 80) -> list[str]:
    """First turns of the MT-Bench questions (a built-in fallback keeps tests runnable)."""
    if not MT_BENCH.exists():
        return ["Compose an engaging travel blog post about a recent trip to Hawaii."]
    rows = [json.loads(line) for line in MT_BENCH.read_text().splitlines() if line.strip()]
    return [row["turns"][0] for row in rows][:limit]


@pytest.fixture(scope="session")
def model_path() -> str:
    from search.engines.default_model import ensure_default_model

    return str(ensure_default_model())


@pytest.fixture(scope="session")
def cpu_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    return env
