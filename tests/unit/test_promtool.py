"""The alert rules under Prometheus's own tools: promtool checks the rule file and the
compose Prometheus configuration, and runs the rules' unit tests
(deploy/prometheus/alert-rules.test.yaml), in which every alert must fire on one input and
stay quiet on another."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import ROOT
from tests.monitoring import ALERT_RULES, ALERT_TESTS, alert_rules, prometheus_tool


def promtool(*args: str | Path, cwd: Path = ROOT) -> str:
    result = subprocess.run(
        [prometheus_tool("promtool"), *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def alert_cases(path: Path = ALERT_TESTS) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """alert name -> {"firing": [its expected alerts], "quiet": [evals expecting none]},
    from a promtool rules-test file."""
    cases: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for test in yaml.safe_load(path.read_text())["tests"]:
        for check in test.get("alert_rule_test", []):
            expected = check.get("exp_alerts") or []
            case = cases.setdefault(check["alertname"], {"firing": [], "quiet": []})
            if expected:
                case["firing"].extend(expected)
            else:
                case["quiet"].append(check)
    return cases


def test_alert_rules_pass_promtool_check() -> None:
    output = promtool("check", "rules", ALERT_RULES)
    assert f"SUCCESS: {len(alert_rules())} rules found" in output, output


def test_compose_prometheus_config_passes_promtool_check() -> None:
    output = promtool("check", "config", ROOT / "deploy" / "prometheus" / "prometheus.yaml")
    assert "SUCCESS" in output, output


def test_alert_rules_unit_tests_pass() -> None:
    # From the test file's folder, as its rule_files path is relative to it.
    output = promtool("test", "rules", ALERT_TESTS.name, cwd=ALERT_TESTS.parent)
    assert "SUCCESS" in output and "FAILED" not in output, output


def test_the_unit_tests_load_the_chart_rule_file() -> None:
    rule_files = yaml.safe_load(ALERT_TESTS.read_text())["rule_files"]
    assert [(ALERT_TESTS.parent / f).resolve() for f in rule_files] == [ALERT_RULES]


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    rules = {rule["alert"]: rule for rule in alert_rules()}
    cases = alert_cases()
    assert set(cases) <= set(rules), f"tests of alerts that do not exist: {set(cases) - set(rules)}"
    for name, rule in rules.items():
        case = cases.get(name, {"firing": [], "quiet": []})
        assert case["firing"], f"{name}: no input makes it fire in {ALERT_TESTS.name}"
        assert case["quiet"], f"{name}: no input keeps it quiet in {ALERT_TESTS.name}"
        for alert in case["firing"]:
            # Firing is checked with what the alert carries: the rule's labels, and every
            # annotation rendered from its template.
            labels = alert.get("exp_labels", {})
            assert rule["labels"].items() <= labels.items(), (name, labels)
            assert set(alert.get("exp_annotations", {})) == set(rule["annotations"]), (name, alert)
