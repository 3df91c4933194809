"""A real Prometheus (Debian's `prometheus`, as scripts/setup_env.sh installs it) scrapes
the running server every second with the alert rules loaded: every query of the Grafana
dashboard returns data after a few requests, the rules load and evaluate cleanly, what
each alert measures has data, and none is pending on the healthy server."""

from __future__ import annotations

import json
import math
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml

from tests.conftest import free_port
from tests.e2e.conftest import MODEL, question
from tests.monitoring import (
    ALERT_RULES,
    DASHBOARD,
    alert_rules,
    dashboard_targets,
    measured_values,
    prometheus_tool,
)

pytestmark = pytest.mark.e2e

JOB = "alignserve"  # compose's job name, which the alert rules' job=~".*alignserve.*" matches
# The dashboard's variables as Grafana sends them with its defaults for a 15 s scrape
# interval ($__rate_interval: 4 scrapes); $job as if the user picked this job.
VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "15s",
    "$__range": "5m",
    "${job}": JOB,
    "$job": JOB,
}
# Dashboard targets ("panel title [refId]") that cannot have a finite value after a few
# ordinary requests, and why. Keep this short: each entry is a panel nobody has seen work.
NO_DATA_EXPECTED: dict[str, str] = {}
# Alerts whose measured value has no series on a healthy server, and why.
NO_VALUE_EXPECTED = {
    "AlignserveHighErrorRate": (
        "its numerator selects 5xx responses, a series the healthy server never creates; "
        "the quotient is empty, so the alert stays quiet (promtool's tests cover it firing)"
    ),
}
SEARCH = {"algorithm": "bon", "n": 2}


@dataclass
class Prometheus:
    url: str
    log: Path

    def api(self, path: str, **params: str) -> Any:
        reply = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=10)
        body = reply.json()
        assert reply.status_code == 200 and body["status"] == "success", (path, params, body)
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", (expr, data)
        return list(data["result"])

    def wait_for_scrape(self, after: float, timeout_s: float = 15) -> None:
        """Until a scrape of the server that started after ``after`` (epoch seconds) is in."""
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            stamps = self.query(f'timestamp(up{{job="{JOB}"}} == 1)')
            if stamps and float(stamps[0]["value"][1]) > after:
                return
            time.sleep(0.2)
        pytest.fail(f"no successful scrape after {after:.1f} in {timeout_s} s; {self.tail()}")

    def tail(self) -> str:
        lines = self.log.read_text(errors="replace").splitlines()
        return "prometheus log:\n" + "\n".join(lines[-20:])


@pytest.fixture(scope="module")
def prometheus(server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    binary = prometheus_tool("prometheus")
    work = tmp_path_factory.mktemp("prometheus")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(ALERT_RULES)],
        "scrape_configs": [
            {
                "job_name": JOB,
                "scrape_timeout": "1s",
                "static_configs": [{"targets": [server.removeprefix("http://")]}],
            }
        ],
    }
    (work / "prometheus.yaml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = work / "prometheus.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={work / 'prometheus.yaml'}",
                f"--storage.tsdb.path={work / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    running = Prometheus(f"http://127.0.0.1:{port}", log)
    try:
        deadline = time.time() + 30
        while True:
            assert proc.poll() is None, (
                f"prometheus exited with {proc.returncode}; {running.tail()}"
            )
            try:
                if httpx.get(f"{running.url}/-/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.time() < deadline, f"prometheus not ready in 30 s; {running.tail()}"
            time.sleep(0.2)
        yield running
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def traffic(prometheus: Prometheus, server: str) -> None:
    """Two rounds of a plain search, a streamed one and a 400, each round scraped: a
    counter's first sample already holds the first round, and rate() needs it to grow."""
    client = openai.OpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0)
    prometheus.wait_for_scrape(after=time.time())
    for i in range(2):
        reply = client.chat.completions.create(
            model=MODEL,
            messages=question(i),  # type: ignore[arg-type]
            max_tokens=16,
            extra_body={"search": SEARCH},
        )
        assert reply.choices[0].message.content
        stream = client.chat.completions.create(
            model=MODEL,
            messages=question(i + 2),  # type: ignore[arg-type]
            max_tokens=16,
            stream=True,
            extra_body={"search": SEARCH},
        )
        assert list(stream)
        with pytest.raises(openai.BadRequestError):
            client.chat.completions.create(
                model=MODEL,
                messages=question(i),  # type: ignore[arg-type]
                max_tokens=16,
                extra_body={"search": {**SEARCH, "n": 0}},
            )
        prometheus.wait_for_scrape(after=time.time())


def test_the_server_is_scraped_cleanly(prometheus: Prometheus, traffic: None) -> None:
    targets = prometheus.api("targets")["activeTargets"]
    assert [(t["labels"]["job"], t["health"], t["lastError"]) for t in targets] == [
        (JOB, "up", "")
    ], targets


def test_every_dashboard_query_has_data(prometheus: Prometheus, traffic: None) -> None:
    targets = dashboard_targets(variables=VARIABLES)
    assert len(targets) > 20, targets
    missing, unexpected = [], []
    for title, expr in targets:
        assert "$" not in expr, f"{title}: a dashboard variable this test does not set: {expr}"
        result = prometheus.query(expr)
        finite = [s for s in result if math.isfinite(float(s["value"][1]))]
        if not finite and title not in NO_DATA_EXPECTED:
            missing.append(f"{title}: {expr} -> {result}")
        elif finite and title in NO_DATA_EXPECTED:
            unexpected.append(title)
    assert not missing, "dashboard queries without a finite value:\n" + "\n".join(missing)
    assert not unexpected, f"these have data now: take them off NO_DATA_EXPECTED: {unexpected}"


def test_the_dashboard_job_variable_lists_the_job(prometheus: Prometheus, traffic: None) -> None:
    variables = json.loads(DASHBOARD.read_text())["templating"]["list"]
    queries = [v for v in variables if v["type"] == "query"]
    assert queries, variables
    for variable in queries:
        # Grafana's label_values(metric, label) is Prometheus's label values API.
        match = re.fullmatch(r"label_values\((\w+), *(\w+)\)", variable["definition"])
        assert match, f"a variable query this test cannot run: {variable['definition']}"
        metric, label = match.groups()
        values = prometheus.api(f"label/{label}/values", **{"match[]": metric})
        assert JOB in values, (variable["name"], values)


def test_alert_rules_load_and_evaluate(prometheus: Prometheus, traffic: None) -> None:
    expected = {rule["alert"] for rule in alert_rules()}
    groups = prometheus.api("rules")["groups"]
    assert [g["name"] for g in groups] == ["alignserve"], groups
    rules = {r["name"]: r for g in groups for r in g["rules"]}
    assert set(rules) == expected
    for name, rule in rules.items():
        assert rule["type"] == "alerting", rule
        assert rule["health"] == "ok" and not rule.get("lastError"), rule
        assert not rule["lastEvaluation"].startswith("0001"), f"{name} never evaluated"


def test_every_alert_measures_live_series(prometheus: Prometheus, traffic: None) -> None:
    """What each alert compares with its threshold has data: a label mismatch between the
    two sides of a quotient, or a renamed metric, would leave it empty and the alert mute."""
    empty, unexpected = [], []
    for rule in alert_rules():
        values = measured_values(rule["expr"])
        if not values:
            continue  # absent(): data only when every target is gone
        has_data = all(prometheus.query(v) for v in values)
        if not has_data and rule["alert"] not in NO_VALUE_EXPECTED:
            empty.append(f"{rule['alert']}: {values}")
        elif has_data and rule["alert"] in NO_VALUE_EXPECTED:
            unexpected.append(rule["alert"])
    assert not empty, "alerts measuring nothing:\n" + "\n".join(empty)
    assert not unexpected, f"these have data now: take them off NO_VALUE_EXPECTED: {unexpected}"


def test_no_alert_is_pending_on_the_healthy_server(prometheus: Prometheus, traffic: None) -> None:
    assert prometheus.api("alerts")["alerts"] == []
