"""The PromQL that ops will run against alignserve: the Grafana dashboard's queries and the
alert rules' expressions, parsed with a real PromQL parser, and the metric names they use."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import promql_parser
import yaml

from tests.conftest import ROOT

CHART = ROOT / "deploy" / "helm" / "alignserve"
DASHBOARD = CHART / "files" / "grafana-dashboard.json"
ALERT_RULES = CHART / "files" / "alert-rules.yaml"
# Grafana's interval variables, as Prometheus would receive them.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}


def dashboard_queries(path: Path = DASHBOARD) -> list[str]:
    dashboard = json.loads(path.read_text())
    queries = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            queries.append(expr)
    return queries


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
