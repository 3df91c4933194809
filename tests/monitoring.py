"""The PromQL that ops will run against alignserve: the Grafana dashboard's queries and the
alert rules' expressions, parsed with a real PromQL parser, and the metric names they use;
and the Prometheus binaries (Debian's `prometheus` package) that evaluate them for real."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml

from tests.conftest import ROOT

CHART = ROOT / "deploy" / "helm" / "alignserve"
DASHBOARD = CHART / "files" / "grafana-dashboard.json"
ALERT_RULES = CHART / "files" / "alert-rules.yaml"
# promtool's unit tests of ALERT_RULES.
ALERT_TESTS = ROOT / "deploy" / "prometheus" / "alert-rules.test.yaml"
# Grafana's interval variables, as Prometheus would receive them.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}


def dashboard_targets(
    path: Path = DASHBOARD, variables: Mapping[str, str] = GRAFANA_VARIABLES
) -> list[tuple[str, str]]:
    """(panel title and target refId, query) for every target of every panel, with
    ``variables`` ({"$name": value}) substituted; others are left as they are."""
    dashboard = json.loads(path.read_text())
    # Longest first, so a variable is never cut short by another it starts with.
    ordered = sorted(variables.items(), key=lambda item: -len(item[0]))
    targets = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable, value in ordered:
                expr = expr.replace(variable, value)
            targets.append((f"{panel['title']} [{target.get('refId', '?')}]", expr))
    return targets


def dashboard_queries(
    path: Path = DASHBOARD, variables: Mapping[str, str] = GRAFANA_VARIABLES
) -> list[str]:
    return [expr for _, expr in dashboard_targets(path, variables)]


def alert_rules(path: Path = ALERT_RULES) -> list[dict[str, Any]]:
    groups = yaml.safe_load(path.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def metric_names(expr: str) -> dict[str, set[str]]:
    """Every series name the expression selects, with the label names it matches on
    (raises if the expression is not valid PromQL)."""
    names: dict[str, set[str]] = {}

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            if node.name:
                labels = {m.name for m in node.matchers.matchers if m.name != "__name__"}
                names.setdefault(node.name, set()).update(labels)
        elif isinstance(node, promql_parser.MatrixSelector):
            visit(node.vector_selector)
        elif isinstance(node, promql_parser.Call):
            for arg in node.args:
                visit(arg)
        elif isinstance(node, promql_parser.BinaryExpr):
            visit(node.lhs)
            visit(node.rhs)
        elif isinstance(node, promql_parser.AggregateExpr):
            visit(node.expr)
            if node.param is not None:
                visit(node.param)
        elif isinstance(
            node, promql_parser.ParenExpr | promql_parser.UnaryExpr | promql_parser.SubqueryExpr
        ):
            visit(node.expr)

    visit(promql_parser.parse(expr))
    return names


def monitored_names() -> dict[str, set[str]]:
    """metric name -> the label names the dashboard and the alert rules match it on."""
    used: dict[str, set[str]] = {}
    for expr in [*dashboard_queries(), *(rule["expr"] for rule in alert_rules())]:
        for name, labels in metric_names(expr).items():
            used.setdefault(name, set()).update(labels)
    return used


def measured_values(expr: str) -> list[str]:
    """The parts of an alert expression that measure something, without the thresholds
    they are compared with: ``a > 0.8 or b > 0`` gives ``a`` and ``b``; an ``absent()``
    gives nothing (it measures no series: it has data only when the targets are gone)."""
    node = promql_parser.parse(expr)
    return [str(part) for part in _measured(node)]


def _measured(node: Any) -> list[Any]:
    while isinstance(node, promql_parser.ParenExpr):
        node = node.expr
    if isinstance(node, promql_parser.Call) and node.func.name in ("absent", "absent_over_time"):
        return []
    if isinstance(node, promql_parser.BinaryExpr):
        op = str(node.op)
        if op in ("or", "and", "unless"):
            return [*_measured(node.lhs), *_measured(node.rhs)]
        if op in ("==", "!=", ">", "<", ">=", "<="):
            return _measured(node.lhs)
    return [node]


def prometheus_tool(name: str) -> str:
    """The path of ``prometheus`` or ``promtool`` (Debian's prometheus package, which
    scripts/setup_env.sh installs). Without it the test fails in CI, whose setup must
    have installed it, and is skipped elsewhere, saying why."""
    path = shutil.which(name)
    if path:
        return path
    message = (
        f"{name} is not installed: scripts/setup_env.sh installs it with "
        "`apt-get install --no-install-recommends prometheus` (as root or with sudo)"
    )
    if os.environ.get("CI", "").lower() not in ("", "0", "false"):
        pytest.fail(message)
    pytest.skip(message)
