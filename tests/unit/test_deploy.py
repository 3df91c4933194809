"""The deployment files: YAML and JSON parse and pass their linters, the Dockerfile passes
hadolint and installs with the README's script, the Helm chart renders with a real Helm
(the helm-python-sdk library is Helm v4's Go code) and its manifests validate against the
Kubernetes schemas, and the dashboard's and alerts' PromQL parses."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import helm_python
import kubernetes_validate
import pytest
import yaml

from tests.conftest import ROOT
from tests.monitoring import CHART, alert_rules, dashboard_queries, metric_names

DEPLOY = ROOT / "deploy"
KUBERNETES_VERSION = "1.33"
# Custom resources: their operators' CRDs are not in the Kubernetes schemas.
CUSTOM_KINDS = {"ServiceMonitor", "PrometheusRule", "ScaledObject"}
EVERYTHING_ON = {
    "ingress": {"enabled": True, "className": "nginx", "tls": [{"hosts": ["a.example.com"]}]},
    "metrics": {
        "serviceMonitor": {"enabled": True},
        "prometheusRule": {"enabled": True},
        "dashboard": {"enabled": True},
    },
    "autoscaling": {"enabled": True, "mode": "hpa"},
    "networkPolicy": {"enabled": True, "ingressFrom": [{"podSelector": {}}]},
    "apiKeys": {"existingSecret": "alignserve-keys"},
    "hfToken": {"existingSecret": "hf"},
    "modelCache": {"existingClaim": "models"},
    "engine": {"tensorParallelSize": 2, "maxModelLen": 8192},
    "gpus": 2,
}


def yaml_files() -> list[Path]:
    """Every plain YAML file under deploy/ (Helm templates are Go templates, not YAML)."""
    templates = CHART / "templates"
    return sorted(
        p
        for pattern in ("*.yaml", "*.yml")
        for p in DEPLOY.rglob(pattern)
        if templates not in p.parents
    )


def render(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    chart = helm_python.Chart.load(CHART)
    rendered = chart.render(values, name="alignserve", namespace="llm")
    docs = []
    for path, text in rendered.items():
        if path.endswith(".yaml"):
            docs.extend(d for d in yaml.safe_load_all(text) if d)
    return docs


def by_kind(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {d["kind"]: d for d in docs}


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return by_kind(docs)["Deployment"]["spec"]["template"]["spec"]["containers"][0]


def env_of(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(docs)["env"]}


# -- files and linters -------------------------------------------------------------------


def test_yaml_files_parse_and_pass_yamllint() -> None:
    files = yaml_files()
    assert len(files) >= 8, files
    for path in files:
        list(yaml.safe_load_all(path.read_text()))
    lint = subprocess.run(
        [sys.executable, "-m", "yamllint", "--strict", *map(str, files)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr


def test_json_files_parse() -> None:
    files = sorted(DEPLOY.rglob("*.json"))
    assert {p.name for p in files} >= {"grafana-dashboard.json", "values.schema.json"}
    for path in files:
        json.loads(path.read_text())


def test_dockerfile_passes_hadolint() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    result = subprocess.run(
        [str(hadolint), "--failure-threshold", "warning", "Dockerfile"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_image_and_the_readme_install_with_the_same_script() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^RUN scripts/setup_env\.sh \"\$\{FLAVOR\}\"$", dockerfile, re.M)
    assert re.search(r"^\t@scripts/setup_env\.sh cpu$", makefile, re.M)
    # Non-root, health-checked, cache on a volume.
    assert re.search(r"^USER 1000:1000$", dockerfile, re.M)
    assert "HEALTHCHECK" in dockerfile and "/health" in dockerfile
    assert 'VOLUME ["/cache"]' in dockerfile


# -- the chart ---------------------------------------------------------------------------


def test_chart_lints_clean_with_helm() -> None:
    report = helm_python.lint(CHART, strict=True)
    assert report["errors"] == [], report
    serious = [m for m in report["messages"] if m["severity"] > 1]  # 1 is INFO
    assert serious == [], serious


@pytest.mark.parametrize(
    "values",
    [None, "values-remote.yaml", EVERYTHING_ON, {"autoscaling": {"enabled": True}}],
    ids=["defaults", "remote", "everything-on", "hpa"],
)
def test_rendered_manifests_validate_against_kubernetes_schemas(values: Any) -> None:
    if isinstance(values, str):
        values = yaml.safe_load((CHART / values).read_text())
    docs = render(values)
    assert {"Deployment", "Service", "PodDisruptionBudget"} <= set(by_kind(docs))
    for doc in docs:
        if doc["kind"] in CUSTOM_KINDS:
            assert doc["metadata"]["name"] and doc["spec"], doc
            continue
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_gpu_mode_by_default() -> None:
    docs = render()
    c = container(docs)
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    # Readiness covers the engine, rewards and scorers; liveness is local (a remote outage
    # must not restart every replica at once), and a dead engine exits the process itself.
    assert c["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert c["livenessProbe"]["httpGet"]["path"] == "/health"
    assert c["startupProbe"]["httpGet"]["path"] == "/health"
    pod = by_kind(docs)["Deployment"]["spec"]["template"]["spec"]
    shm = next(v for v in pod["volumes"] if v["name"] == "dshm")
    assert shm["emptyDir"]["medium"] == "Memory"
    env = env_of(docs)
    assert env["ALIGNSERVE_TENSOR_PARALLEL_SIZE"] == "1"
    assert "ALIGNSERVE_REMOTE_ENGINE_URL" not in env
    # The pod outlives the drain: grace period above the server's shutdown grace.
    assert pod["terminationGracePeriodSeconds"] > int(env["ALIGNSERVE_SHUTDOWN_GRACE_S"])


def test_compose_restarts_a_server_that_exits_on_a_fatal_error() -> None:
    """A failed load or a dead engine exits with status 1 (server.health); compose only
    starts it again with a restart policy."""
    for name in ("compose.yaml", "compose.remote.yaml"):
        service = yaml.safe_load((DEPLOY / name).read_text())["services"]["alignserve"]
        assert service["restart"] == "on-failure", name
    dockerfile = (ROOT / "Dockerfile").read_text()
    healthcheck = dockerfile[dockerfile.index("HEALTHCHECK") :].split("\n", 2)[:2]
    assert "/health" in "".join(healthcheck) and "/ready" not in "".join(healthcheck)


def test_remote_mode_needs_no_gpu() -> None:
    docs = render(yaml.safe_load((CHART / "values-remote.yaml").read_text()))
    assert "nvidia.com/gpu" not in container(docs)["resources"].get("limits", {})
    env = env_of(docs)
    assert env["ALIGNSERVE_REMOTE_ENGINE_URL"].startswith("http://")
    assert env["ALIGNSERVE_REWARD"].startswith("remote:")
    assert "ALIGNSERVE_TENSOR_PARALLEL_SIZE" not in env
    kinds = by_kind(docs)
    assert kinds["ScaledObject"]["spec"]["triggers"][0]["metadata"]["query"] == (
        'sum(alignserve_queue_depth{job="alignserve"})'
    )


def test_api_keys_come_from_an_existing_secret() -> None:
    env = env_of(render(EVERYTHING_ON))
    assert env["ALIGNSERVE_API_KEY"] == {
        "secretKeyRef": {"name": "alignserve-keys", "key": "api-keys"}
    }
    assert env["HF_TOKEN"] == {"secretKeyRef": {"name": "hf", "key": "token"}}


def test_monitoring_resources_carry_the_shared_files() -> None:
    kinds = by_kind(render(EVERYTHING_ON))
    rule_spec = kinds["PrometheusRule"]["spec"]
    assert [r["alert"] for g in rule_spec["groups"] for r in g["rules"]] == [
        r["alert"] for r in alert_rules()
    ]
    dashboard = kinds["ConfigMap"]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["alignserve.json"])["uid"] == "alignserve"
    hpa = kinds["HorizontalPodAutoscaler"]["spec"]["metrics"][0]["pods"]
    assert hpa["metric"]["name"] == "alignserve_queue_depth"


@pytest.mark.parametrize(
    "values",
    [
        {"reward": "nope"},
        {"gpus": -1},
        {"replicas": 2},  # a typo of replicaCount
        {"config": {"ALIGNSERVE_API_KEY": "secret-in-values"}},
        {"config": {"lowercase": "x"}},
        {"remote": {"engineUrl": "vllm:8000"}},
        {"autoscaling": {"mode": "vpa"}},
    ],
)
def test_values_schema_rejects_bad_values(values: dict[str, Any]) -> None:
    chart = helm_python.Chart.load(CHART)
    with pytest.raises(helm_python.HelmError):
        chart.validate_schema(chart.merge_values(values))


# -- PromQL ------------------------------------------------------------------------------


def test_dashboard_and_alert_queries_are_valid_promql() -> None:
    queries = dashboard_queries()
    assert len(queries) >= 25
    for expr in queries + [r["expr"] for r in alert_rules()]:
        assert metric_names(expr), expr


def test_alert_rules_cover_the_required_conditions() -> None:
    rules = {r["alert"]: r for r in alert_rules()}
    assert set(rules) >= {
        "AlignserveHighErrorRate",
        "AlignserveHighP99Latency",
        "AlignserveQueueSaturated",
        "AlignserveRewardModelDown",
        "AlignserveReplicaDown",
    }
    for rule in rules.values():
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["summary"]
