"""Every series the Grafana dashboard and the alert rules query exists in the running
server's /metrics, with the labels they match on: a renamed metric breaks this test, not
a dashboard in production."""

from __future__ import annotations

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import MODEL, question
from tests.monitoring import monitored_names

pytestmark = pytest.mark.e2e

# Series Prometheus itself attaches (not the server's): `up`, and the target labels.
PROMETHEUS_SERIES = {"up"}
TARGET_LABELS = {"job", "instance"}


def exposed_series(text: str) -> dict[str, set[str]]:
    """sample name -> the label names it carries, from the exposition format."""
    series: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            series.setdefault(sample.name, set()).update(sample.labels)
    return series


def test_dashboard_and_alerts_use_only_exposed_series(server: str, client: openai.OpenAI) -> None:
    # A plain and a streamed search, so the per-algorithm series have samples.
    for algorithm in ("bon", "treebon"):
        client.chat.completions.create(
            model=MODEL,
            messages=question(1),  # type: ignore[arg-type]
            max_tokens=8,
            extra_body={"search": {"algorithm": algorithm, "n": 4}},
        )
    stream = client.chat.completions.create(
        model=MODEL,
        messages=question(2),
        max_tokens=8,
        stream=True,  # type: ignore[arg-type]
    )
    assert list(stream)
    series = exposed_series(httpx.get(f"{server}/metrics", timeout=10).text)

    used = monitored_names()
    assert len(used) > 20, sorted(used)  # the parse found the queries
    missing = sorted(set(used) - set(series) - PROMETHEUS_SERIES)
    assert not missing, f"queried but not exposed: {missing}"
    for name, labels in used.items():
        if name in PROMETHEUS_SERIES:
            continue
        unknown = labels - series[name] - TARGET_LABELS
        assert not unknown, f"{name} is matched on labels it does not have: {unknown}"
