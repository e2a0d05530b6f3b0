"""deploy/: every file parses, and it agrees with the code it describes.

Checks that the alert rules and the Grafana dashboard only use metric names the
real registries export (``ProjectorMetrics``, ``WorkerMetrics``,
``SchedulerMetrics`` and ``WebMetrics`` are built and their families read, never
a hard-coded list), that scrape targets and container ports match the Procfile,
and that the Kubernetes manifests keep the invariants the README promises (grace
period, probes, KEDA streams, no real secret).
No Redis, Postgres or cluster needed.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from jobstream.web_http import WebMetrics
from projections.metrics import ProjectorMetrics
from streams.keys import PRIORITIES, READY_GROUP, Keys
from streams.scheduler_metrics import SchedulerMetrics
from streams.worker_metrics import WorkerMetrics

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
YAML_FILES = sorted([*DEPLOY.rglob("*.yml"), *DEPLOY.rglob("*.yaml")])
JSON_FILES = sorted(DEPLOY.rglob("*.json"))
# Series Prometheus itself adds to every scrape, not exported by jobstream.
PROMETHEUS_BUILTINS = {"up"}
WEB_DEFAULT_PORT = 8000  # `jobstream web` without --port
# Exposition-format suffixes of each metric type (besides `_created`).
SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("", "_sum", "_count"),
}


def _load_yaml(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _registry_sample_names(registry: CollectorRegistry) -> set[str]:
    """Every sample name a registry can export, labelled families included.

    A labelled family has no samples until a child exists, so its names come
    from its type; the unlabelled families' real samples prove the rule.
    """
    names: set[str] = set()
    for family in registry.collect():
        expected = {family.name + s for s in SUFFIXES[family.type]}
        seen = {s.name for s in family.samples if not s.name.endswith("_created")}
        assert seen <= expected, (family.name, seen, expected)
        names |= expected
    return names


@pytest.fixture(scope="module")
def metric_names() -> set[str]:
    names = _registry_sample_names(ProjectorMetrics().registry)
    names |= _registry_sample_names(WorkerMetrics().registry)
    names |= _registry_sample_names(WebMetrics().registry)
    names |= _registry_sample_names(SchedulerMetrics().registry)
    assert "jobstream_jobs_failed_total" in names  # sanity: the suffix rule applied
    return names


def _alert_rules() -> list[dict[str, Any]]:
    (doc,) = _load_yaml(DEPLOY / "prometheus" / "alerts.yml")
    return [rule for group in doc["groups"] for rule in group["rules"]]


def _dashboard_exprs(node: Any) -> list[str]:
    """Every PromQL string of the dashboard: panel targets and variable queries."""
    found: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            # A `query` without "(" is the datasource variable's plugin id.
            promql_key = key in ("expr", "definition") or (key == "query" and "(" in str(value))
            if promql_key and isinstance(value, str):
                found.append(value)
            else:
                found.extend(_dashboard_exprs(value))
    elif isinstance(node, list):
        for item in node:
            found.extend(_dashboard_exprs(item))
    return found


def _all_exprs() -> list[str]:
    dashboard = json.loads((DEPLOY / "grafana" / "jobstream.json").read_text())
    exprs = [rule["expr"] for rule in _alert_rules()] + _dashboard_exprs(dashboard)
    assert len(exprs) > 30
    return exprs


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_yaml_parses(path: Path) -> None:
    assert _load_yaml(path)


@pytest.mark.parametrize("path", JSON_FILES, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_json_parses(path: Path) -> None:
    assert json.loads(path.read_text())


def test_promql_uses_only_exported_metrics(metric_names: set[str]) -> None:
    for expr in _all_exprs():
        for name in re.findall(r"\bjobstream_[A-Za-z0-9_]+", expr):
            assert name in metric_names, f"{name} (in {expr!r}) is not exported"
        # Anything used as a selector (`name{` or `name[`) is ours or Prometheus's.
        for name in re.findall(r"\b([a-zA-Z_:][A-Za-z0-9_:]*)\s*[{\[]", expr):
            assert name in metric_names | PROMETHEUS_BUILTINS, f"{name} in {expr!r}"


def test_every_alert_is_complete() -> None:
    rules = _alert_rules()
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names))
    for rule in rules:
        assert re.fullmatch(r"\d+[smh]", rule["for"]), rule["alert"]
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]


def _procfile_ports() -> dict[str, int]:
    """Process name -> the port its /metrics is served on, from the Procfile."""
    ports: dict[str, int] = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        name, _, command = line.partition(":")
        if m := re.search(r"--(?:metrics-)?port[ =](\d+)", command):
            ports[name.strip()] = int(m.group(1))
        elif name.strip() == "web":
            ports["web"] = WEB_DEFAULT_PORT
    assert {"worker", "projector", "web"} <= ports.keys()
    return ports


def test_static_scrape_ports_match_procfile() -> None:
    (config,) = _load_yaml(DEPLOY / "prometheus" / "prometheus.yml")
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    for process, port in _procfile_ports().items():
        targets = [
            t for sc in jobs[f"jobstream-{process}"]["static_configs"] for t in sc["targets"]
        ]
        assert targets
        assert all(t.rsplit(":", 1)[1] == str(port) for t in targets), (process, targets)


def _k8s_docs() -> list[dict[str, Any]]:
    return [d for path in sorted(K8S.glob("*.yaml")) for d in _load_yaml(path)]


def _deployments() -> dict[str, dict[str, Any]]:
    return {
        d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]: d
        for d in _k8s_docs()
        if d["kind"] == "Deployment"
    }


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert isinstance(container, dict)
    return container


def test_k8s_ports_probes_and_scrape_config_agree() -> None:
    (k8s_prom,) = _load_yaml(DEPLOY / "prometheus" / "prometheus-k8s.yml")
    jobs = {job["job_name"]: job for job in k8s_prom["scrape_configs"]}
    deployments = _deployments()
    for process, port in _procfile_ports().items():
        container = _container(deployments[process])
        (container_port,) = container["ports"]
        assert container_port["containerPort"] == port, process
        for flag in ("--metrics-port", "--port"):
            if flag in container["command"]:
                i = container["command"].index(flag)
                assert container["command"][i + 1] == str(port), process
        for probe in ("readinessProbe", "livenessProbe"):
            get = container[probe]["httpGet"]
            assert (get["path"], get["port"]) == ("/healthz", container_port["name"])
        kept_port_names = [
            r["regex"]
            for r in jobs[f"jobstream-{process}"]["relabel_configs"]
            if r.get("source_labels") == ["__meta_kubernetes_pod_container_port_name"]
        ]
        assert kept_port_names == [container_port["name"]], process


def _config_env() -> dict[str, str]:
    (cm,) = [d for d in _k8s_docs() if d["kind"] == "ConfigMap"]
    data: dict[str, str] = cm["data"]
    return data


def test_worker_grace_outlasts_shutdown_grace() -> None:
    grace_s = float(_config_env()["JOBSTREAM_SHUTDOWN_GRACE_S"])
    pod = _deployments()["worker"]["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] >= grace_s + 10
    assert "replicas" not in _deployments()["worker"]["spec"]  # KEDA owns it
    assert _deployments()["scheduler"]["spec"]["replicas"] == 2


def test_keda_scales_on_the_ready_streams() -> None:
    docs = _k8s_docs()
    (scaled,) = [d for d in docs if d["kind"] == "ScaledObject"]
    (auth,) = [d for d in docs if d["kind"] == "TriggerAuthentication"]
    assert scaled["spec"]["scaleTargetRef"]["name"] == _deployments()["worker"]["metadata"]["name"]
    queue_keys = Keys(_config_env()["JOBSTREAM_NAMESPACE"]).queue("default")
    triggers = [t for t in scaled["spec"]["triggers"] if t["type"] == "redis-streams"]
    assert sorted(t["metadata"]["stream"] for t in triggers) == sorted(
        queue_keys.ready(p) for p in PRIORITIES
    )
    for trigger in triggers:
        assert trigger["metadata"]["consumerGroup"] == READY_GROUP
        assert trigger["metadata"]["addressFromEnv"] in _config_env()
        assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
    (ref,) = auth["spec"]["secretTargetRef"]
    assert ref["parameter"] == "password"
    worker_env = {e["name"]: e for e in _container(_deployments()["worker"])["env"]}
    assert worker_env["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": ref["name"],
        "key": ref["key"],
    }


def test_secret_is_an_example_and_not_applied() -> None:
    (secret,) = _load_yaml(K8S / "secret.example.yaml")
    assert secret["kind"] == "Secret"
    assert all("CHANGE-ME" in value for value in secret["stringData"].values())
    (kustomization,) = _load_yaml(K8S / "kustomization.yaml")
    resources = kustomization["resources"]
    assert "secret.example.yaml" not in resources
    assert all((K8S / r).is_file() for r in resources)
    applied = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml", "secret.example.yaml"}
    assert applied == set(resources)
