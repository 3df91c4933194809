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
    [
        None,
        "values-remote.yaml",
        "values-fleet.yaml",
        EVERYTHING_ON,
        {**EVERYTHING_ON, "model": "m", "fleet": {"enabled": True, "router": {"replicas": 2}}},
        {"autoscaling": {"enabled": True}},
    ],
    ids=["defaults", "remote", "fleet", "everything-on", "everything-and-fleet", "hpa"],
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


def test_the_fleet_compose_puts_the_router_before_two_generators() -> None:
    """compose.fleet.yaml overrides compose.remote.yaml (``-f remote -f fleet``): merged
    here as compose merges services (the override's keys win, maps merge)."""
    remote = yaml.safe_load((DEPLOY / "compose.remote.yaml").read_text())["services"]
    fleet = yaml.safe_load((DEPLOY / "compose.fleet.yaml").read_text())["services"]
    services = {**remote, **{k: v for k, v in fleet.items() if k not in remote}}
    router = fleet["vllm-router"]
    args = router["command"]
    workers = args[args.index("--worker-urls") + 1 :]
    assert workers == ["http://vllm-generator:8000", "http://vllm-generator-2:8000"]
    assert {w.split("/")[2].split(":")[0] for w in workers} <= set(services)
    assert "--policy=${ROUTER_POLICY:-consistent_hash}" in args
    assert "vllm-router==0.1.17" in router["build"]["dockerfile_inline"]
    # The second replica is the first one's twin: same image, same model, same cache.
    first, second = remote["vllm-generator"], fleet["vllm-generator-2"]
    assert (second["image"], second["command"]) == (first["image"], first["command"])
    env = {**remote["alignserve"]["environment"], **fleet["alignserve"]["environment"]}
    assert env["ALIGNSERVE_REMOTE_ENGINE_URL"] == "http://vllm-router:8000"
    # The header the router's consistent_hash reads first.
    assert env["ALIGNSERVE_UPSTREAM_AFFINITY_HEADER"] == "X-Session-ID"
    scraped = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yaml").read_text())
    vllm_job = next(j for j in scraped["scrape_configs"] if j["job_name"] == "vllm")
    assert "vllm-generator-2" in vllm_job["dns_sd_configs"][0]["names"]


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


# -- the fleet: vLLM replicas behind the vLLM Router -------------------------------------


def named(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (doc,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def fleet_values(**fleet: Any) -> dict[str, Any]:
    values = yaml.safe_load((CHART / "values-fleet.yaml").read_text())
    for part, overrides in fleet.items():
        values["fleet"].setdefault(part, {}).update(overrides)
    return values


def alignserve_env(docs: list[dict[str, Any]]) -> dict[str, Any]:
    pod = named(docs, "Deployment", "alignserve")["spec"]["template"]["spec"]
    return {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}


def test_no_fleet_by_default() -> None:
    docs = render()
    assert not [d for d in docs if d["kind"] == "StatefulSet"]
    assert [d["metadata"]["name"] for d in docs if d["kind"] == "Deployment"] == ["alignserve"]
    assert "ALIGNSERVE_UPSTREAM_AFFINITY_HEADER" not in env_of(docs)


def test_the_router_lists_every_replica_and_alignserve_calls_it_with_affinity() -> None:
    docs = render(fleet_values(vllm={"replicas": 3}))
    replicas = named(docs, "StatefulSet", "alignserve-vllm")
    assert replicas["spec"]["replicas"] == 3
    assert replicas["spec"]["serviceName"] == "alignserve-vllm"
    headless = named(docs, "Service", "alignserve-vllm")["spec"]
    assert headless["clusterIP"] == "None"
    vllm = replicas["spec"]["template"]["spec"]["containers"][0]
    assert vllm["args"][0] == "Qwen/Qwen2.5-7B-Instruct"  # `model`, as `vllm serve MODEL`
    assert vllm["resources"]["limits"]["nvidia.com/gpu"] == 1
    router = named(docs, "Deployment", "alignserve-router")["spec"]["template"]["spec"]
    args = router["containers"][0]["args"]
    assert "--policy=consistent_hash" in args
    workers = args[args.index("--worker-urls") + 1 :]
    assert workers == [f"http://alignserve-vllm-{i}.alignserve-vllm.llm.svc:8000" for i in range(3)]
    env = alignserve_env(docs)
    port = named(docs, "Service", "alignserve-router")["spec"]["ports"][0]["port"]
    assert env["ALIGNSERVE_REMOTE_ENGINE_URL"] == f"http://alignserve-router:{port}"
    assert env["ALIGNSERVE_UPSTREAM_AFFINITY_HEADER"] == "X-Session-ID"
    assert env["ALIGNSERVE_REWARD"] == "judge"  # the judge runs on the replicas too
    pod = named(docs, "Deployment", "alignserve")["spec"]["template"]["spec"]
    assert "nvidia.com/gpu" not in pod["containers"][0]["resources"].get("limits", {})


def test_the_fleet_pods_are_not_alignserve_pods() -> None:
    """alignserve's Service, PDB and NetworkPolicy select its own pods only."""
    docs = render({**fleet_values(), "networkPolicy": {"enabled": True}})
    selectors = [
        named(docs, "Service", "alignserve")["spec"]["selector"],
        named(docs, "PodDisruptionBudget", "alignserve")["spec"]["selector"]["matchLabels"],
        named(docs, "NetworkPolicy", "alignserve")["spec"]["podSelector"]["matchLabels"],
    ]
    for kind, name in [("StatefulSet", "alignserve-vllm"), ("Deployment", "alignserve-router")]:
        labels = named(docs, kind, name)["spec"]["template"]["metadata"]["labels"]
        for selector in selectors:
            assert not selector.items() <= labels.items(), (name, selector)
        own = named(docs, kind, name)["spec"]["selector"]["matchLabels"]
        assert own.items() <= labels.items()


def test_round_robin_and_no_header_are_values() -> None:
    docs = render(fleet_values(router={"policy": "round_robin", "affinityHeader": ""}))
    args = named(docs, "Deployment", "alignserve-router")["spec"]["template"]["spec"]
    assert "--policy=round_robin" in args["containers"][0]["args"]
    assert "ALIGNSERVE_UPSTREAM_AFFINITY_HEADER" not in alignserve_env(docs)


def test_a_router_of_your_own_takes_the_header_from_remote() -> None:
    values = yaml.safe_load((CHART / "values-remote.yaml").read_text())
    values["remote"]["affinityHeader"] = "X-Session-ID"
    env = env_of(render(values))
    assert env["ALIGNSERVE_UPSTREAM_AFFINITY_HEADER"] == "X-Session-ID"
    assert env["ALIGNSERVE_REMOTE_ENGINE_URL"] == values["remote"]["engineUrl"]


def test_the_fleet_needs_a_model() -> None:
    with pytest.raises(helm_python.HelmError, match=r"fleet\.vllm\.model or model"):
        render({"fleet": {"enabled": True}})


@pytest.mark.parametrize(
    "values",
    [
        {"fleet": {"router": {"policy": "least_loaded"}}},
        {"fleet": {"router": {"affinityHeader": "X Session"}}},
        {"fleet": {"vllm": {"replicas": 0}}},
        {"fleet": {"replica": 2}},
        {"remote": {"affinityHeader": "x:y"}},
    ],
)
def test_values_schema_rejects_bad_fleet_values(values: dict[str, Any]) -> None:
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
