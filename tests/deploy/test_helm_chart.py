"""deploy/helm/llm-gateway, rendered and linted by real Helm, its manifests checked by the tools a cluster would use.

No cluster here, so the checks are static:
- Helm itself (the ``helm-python-sdk`` package embeds Helm's Go SDK) lints the chart and renders it for the default
  values, the CPU profile (values-cpu.yaml), autoscaling off, and each autoscaling engine;
- ``kubernetes-validate --strict`` checks every built-in manifest against the Kubernetes OpenAPI schemas, for the
  newest version it ships and for the chart's oldest supported one;
- the ServiceMonitor, PrometheusRule and ScaledObject are validated with ``jsonschema`` against their CRDs' schemas,
  vendored in tests/deploy/crds/ (versions and sources in its README), every object closed to unknown fields;
- ``promtool check rules`` runs on the PrometheusRule's groups as rendered, and on the autoscalers' queries;
- the rule files and dashboards in the chart are byte-for-byte the shipped ones (deploy/helm/sync_chart_files.py);
- the wiring is checked where a typo would break a cluster silently: selectors against pod labels, the
  ServiceMonitor's port and job label against the Service, probe paths, the grace period against the drain timeout,
  every ``GATEWAY_*`` variable against the real settings, every metric name against the real instruments.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest
import yaml

from gateway.settings import Settings
from metrics import instruments
from tests.deploy.test_promtool import _tool

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "llm-gateway"
CRDS = Path(__file__).resolve().parent / "crds"
RULES_DIR = ROOT / "deploy" / "prometheus" / "rules"
DASHBOARDS_DIR = ROOT / "deploy" / "grafana" / "dashboards"
RELEASE, NAMESPACE = "gw", "llm"
FULLNAME = f"{RELEASE}-llm-gateway"
SELECTOR = {"app.kubernetes.io/name": "llm-gateway", "app.kubernetes.io/instance": RELEASE}
# The newest Kubernetes the validator ships, and the oldest the chart declares (Chart.yaml kubeVersion).
KUBE_VERSIONS = (kubernetes_validate.latest_version(), "1.27.0")

CRD_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor.yaml",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrule.yaml",
    ("keda.sh/v1alpha1", "ScaledObject"): "scaledobject.yaml",
}

Manifest = dict[str, Any]


def _values_file(name: str) -> dict[str, Any]:
    data = yaml.safe_load((CHART / name).read_text())
    assert isinstance(data, dict)
    return data


PROFILES: dict[str, dict[str, Any]] = {
    "default": {},
    "cpu": _values_file("values-cpu.yaml"),
    "autoscaling-off": {"autoscaling": {"enabled": False}, "replicaCount": 3},
    "keda": {"autoscaling": {"engine": "keda"}},
    "hpa": {"autoscaling": {"engine": "hpa"}},
    "keyed": {"secrets": {"apiKey": {"secretName": "llm-gateway-key"}}},
}


@cache
def _chart() -> helm.Chart:
    return helm.Chart.load(CHART)


def render(values: dict[str, Any] | None = None) -> list[Manifest]:
    """The chart's manifests for ``values`` (NOTES.txt left out), as Helm renders them offline."""
    out = _chart().render(copy.deepcopy(values or {}), name=RELEASE, namespace=NAMESPACE, is_install=True)
    docs = []
    for path, text in sorted(out.items()):
        if path.endswith("NOTES.txt"):
            continue
        docs += [d for d in yaml.safe_load_all(text) if d]
    return docs


def render_notes(values: dict[str, Any] | None = None) -> str:
    out = _chart().render(copy.deepcopy(values or {}), name=RELEASE, namespace=NAMESPACE, is_install=True)
    return next(text for path, text in out.items() if path.endswith("NOTES.txt"))


@cache
def _rendered(profile: str) -> tuple[Manifest, ...]:
    return tuple(render(PROFILES[profile]))


def by_kind(docs: tuple[Manifest, ...] | list[Manifest]) -> dict[str, Manifest]:
    out: dict[str, Manifest] = {}
    for doc in docs:
        assert doc["kind"] not in out, f"two {doc['kind']} objects"
        out[doc["kind"]] = doc
    return out


def container(docs: tuple[Manifest, ...] | list[Manifest]) -> dict[str, Any]:
    containers = by_kind(docs)["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    result: dict[str, Any] = containers[0]
    return result


def env_of(docs: tuple[Manifest, ...] | list[Manifest]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(docs)["env"]}


# --- one source: the chart's copies of the rule files and dashboards ---------------------------------


def test_chart_copies_are_the_shipped_rule_files_and_dashboards() -> None:
    spec = importlib.util.spec_from_file_location("sync_chart_files", ROOT / "deploy" / "helm" / "sync_chart_files.py")
    assert spec is not None and spec.loader is not None
    sync = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sync)
    assert sync.stale() == [], "run: python deploy/helm/sync_chart_files.py"
    copies = sorted(p.name for p in (CHART / "files").rglob("*") if p.is_file())
    sources = sorted(p.name for p in [*RULES_DIR.glob("*.yml"), *DASHBOARDS_DIR.glob("*.json")])
    assert copies == sources and len(copies) == 6  # alerts, recording, slo; overview, model detail, slo


def test_the_check_notices_a_stale_copy(tmp_path: Path) -> None:
    """The sync script's --check fails while a copy differs (run against a copy of the deploy tree)."""
    tree = tmp_path / "repo"
    shutil.copytree(ROOT / "deploy", tree / "deploy")
    script = tree / "deploy" / "helm" / "sync_chart_files.py"
    check = [sys.executable, str(script), "--check"]
    assert subprocess.run(check, capture_output=True, check=False).returncode == 0
    rules = tree / "deploy" / "prometheus" / "rules" / "alerts.yml"
    rules.write_text(rules.read_text() + "\n# edited\n")
    stale = subprocess.run(check, capture_output=True, text=True, check=False)
    assert stale.returncode == 1 and "prometheus-rules/alerts.yml" in stale.stderr
    subprocess.run([sys.executable, str(script)], check=True)
    assert subprocess.run(check, capture_output=True, check=False).returncode == 0


# --- Helm: lint, schema, render -------------------------------------------------------------------------


@pytest.mark.parametrize("profile", ["default", "cpu", "autoscaling-off"])
def test_helm_lint(profile: str) -> None:
    report = helm.lint(CHART, PROFILES[profile] or None, strict=True, namespace=NAMESPACE, kube_version="v1.33.0")
    assert report["total_charts_linted"] == 1
    assert report["errors"] == []
    # severity 2 is a warning, 3 an error; 1 (info) is only "icon is recommended"
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize(
    "bad",
    [
        {"autoscaling": {"engine": "custom"}},
        {"gateway": {"maxQueue": 0}},
        {"gpu": {"count": "1"}},
        {"replicas": 2},  # a typo of replicaCount
        {"metrics": {"serviceMonitor": {"interval": "15 seconds"}}},
        {"secrets": {"mounts": [{"name": "Keys", "secretName": "k", "mountPath": "/etc/keys"}]}},
    ],
)
def test_values_schema_refuses_bad_values(bad: dict[str, Any]) -> None:
    with pytest.raises(helm.HelmError, match="schema"):
        render(bad)


@pytest.mark.parametrize("profile", list(PROFILES))
def test_renders_the_expected_objects(profile: str) -> None:
    kinds = sorted(d["kind"] for d in _rendered(profile))
    autoscaler = {"default": "HorizontalPodAutoscaler", "cpu": "HorizontalPodAutoscaler", "keda": "ScaledObject"}
    expected = [
        "ConfigMap",
        "Deployment",
        "PodDisruptionBudget",
        "PrometheusRule",
        "Service",
        "ServiceAccount",
        "ServiceMonitor",
    ]
    if profile != "autoscaling-off":
        expected.append(autoscaler.get(profile, "HorizontalPodAutoscaler"))
    assert kinds == sorted(expected)
    for doc in _rendered(profile):
        assert doc["metadata"]["namespace"] == NAMESPACE
        assert doc["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE


# --- every manifest against its schema ---------------------------------------------------------------


def _builtin(docs: tuple[Manifest, ...]) -> list[Manifest]:
    return [d for d in docs if (d["apiVersion"], d["kind"]) not in CRD_SCHEMAS]


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("profile", list(PROFILES))
def test_kubernetes_validate_strict(profile: str, kube_version: str, tmp_path: Path) -> None:
    docs = _builtin(_rendered(profile))
    files = []
    for i, doc in enumerate(docs):
        path = tmp_path / f"{i}-{doc['kind']}.yaml"
        path.write_text(yaml.safe_dump(doc))
        files.append(str(path))
    cli = Path(sys.executable).with_name("kubernetes-validate")
    result = subprocess.run(
        [str(cli), "--strict", "-k", kube_version, *files], capture_output=True, text=True, check=False
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0 and "ERROR" not in out and "WARN" not in out, out
    assert out.count(" passed for resource ") == len(docs), out


def _closed(schema: Any) -> Any:
    """The schema with every object that lists properties closed to others (the API server's strict validation)."""
    if isinstance(schema, dict):
        out = {k: _closed(v) for k, v in schema.items()}
        if "properties" in out and "additionalProperties" not in out:
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_closed(v) for v in schema]
    return schema


@cache
def _crd_validator(file: str) -> jsonschema.Draft7Validator:
    schema = yaml.safe_load((CRDS / file).read_text())["openAPIV3Schema"]
    return jsonschema.Draft7Validator(_closed(schema))


def _crd_errors(doc: Manifest) -> list[str]:
    validator = _crd_validator(CRD_SCHEMAS[(doc["apiVersion"], doc["kind"])])
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]


@pytest.mark.parametrize("profile", list(PROFILES))
def test_custom_resources_against_their_crd_schemas(profile: str) -> None:
    docs = [d for d in _rendered(profile) if (d["apiVersion"], d["kind"]) in CRD_SCHEMAS]
    assert len(docs) >= 2
    for doc in docs:
        assert _crd_errors(doc) == [], doc["kind"]


def test_the_crd_schemas_catch_mistakes() -> None:
    """The vendored schemas can fail: a misspelt field, a missing required one, a wrong type."""
    docs = by_kind(_rendered("keda"))
    monitor = copy.deepcopy(docs["ServiceMonitor"])
    monitor["spec"]["endpoints"][0]["scrapeTimeOut"] = "10s"
    assert any("scrapeTimeOut" in e for e in _crd_errors(monitor))
    rule = copy.deepcopy(docs["PrometheusRule"])
    del rule["spec"]["groups"][0]["rules"][0]["expr"]
    assert any("'expr' is a required property" in e for e in _crd_errors(rule))
    scaled = copy.deepcopy(docs["ScaledObject"])
    scaled["spec"]["triggers"][0]["metadata"]["threshold"] = 8
    assert any("not of type 'string'" in e for e in _crd_errors(scaled))


# --- the PrometheusRule: the shipped rules, accepted by promtool ------------------------------------


def _shipped_groups() -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = []
    for path in sorted(RULES_DIR.glob("*.yml")):
        groups += yaml.safe_load(path.read_text())["groups"]
    return groups


def test_prometheus_rule_is_the_shipped_rule_files() -> None:
    rule = by_kind(_rendered("default"))["PrometheusRule"]
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    rendered = sorted(rule["spec"]["groups"], key=lambda g: g["name"])
    assert rendered == sorted(_shipped_groups(), key=lambda g: g["name"])
    assert len(rendered) == 6  # gateway, SLO and quality: recording and alerts each


def test_promtool_checks_the_rendered_groups(tmp_path: Path) -> None:
    rule = by_kind(_rendered("default"))["PrometheusRule"]
    path = tmp_path / "rendered-rules.yml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    result = subprocess.run(
        [_tool("promtool"), "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    count = sum(len(g["rules"]) for g in rule["spec"]["groups"])
    assert f"SUCCESS: {count} rules found" in result.stdout, result.stdout


# --- the Deployment -------------------------------------------------------------------------------------


def test_probes_and_graceful_shutdown() -> None:
    docs = _rendered("default")
    c = container(docs)
    assert c["startupProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
    assert c["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    sleep = c["lifecycle"]["preStop"]["exec"]["command"]
    assert sleep[0] == "sleep"
    drain = float(env_of(docs)["GATEWAY_DRAIN_TIMEOUT_S"])
    grace = by_kind(docs)["Deployment"]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    # The grace period covers the preStop sleep and the whole drain, with room to exit.
    assert grace > int(sleep[1]) + drain
    longer = render({"gateway": {"drainTimeoutSeconds": 120}})
    assert by_kind(longer)["Deployment"]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > 120 + 10


def test_security_context() -> None:
    docs = _rendered("default")
    pod = by_kind(docs)["Deployment"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001  # the Dockerfile's gateway user
    assert pod["automountServiceAccountToken"] is False
    sc = container(docs)["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    # A read-only root needs writable mounts where the gateway writes: model cache, /tmp, /dev/shm.
    mounts = {m["mountPath"]: m["name"] for m in container(docs)["volumeMounts"]}
    assert mounts == {"/home/gateway/.cache": "model-cache", "/tmp": "tmp", "/dev/shm": "dshm"}
    assert env_of(docs)["HF_HOME"].startswith("/home/gateway/.cache/")


def test_gpu_default_and_cpu_profile() -> None:
    gpu, cpu = _rendered("default"), _rendered("cpu")
    assert env_of(gpu)["GATEWAY_DEVICE"] == "cuda"
    assert container(gpu)["resources"]["limits"]["nvidia.com/gpu"] == "1"
    gpu_pod = by_kind(gpu)["Deployment"]["spec"]["template"]["spec"]
    assert gpu_pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in gpu_pod["tolerations"]

    assert env_of(cpu)["GATEWAY_DEVICE"] == "cpu"
    assert "nvidia.com/gpu" not in container(cpu)["resources"].get("limits", {})
    cpu_pod = by_kind(cpu)["Deployment"]["spec"]["template"]["spec"]
    assert "nodeSelector" not in cpu_pod and "tolerations" not in cpu_pod
    assert env_of(cpu)["GATEWAY_MAX_BATCH_SIZE"] == "4"


def test_every_gateway_variable_is_a_real_setting() -> None:
    values = {
        "gateway": {"model": "m", "translationModel": "t", "revision": "r", "extraEnv": {"GATEWAY_LOG_LEVEL": "debug"}},
        "secrets": {"apiKey": {"secretName": "gateway-key", "key": "key"}},
    }
    names = {n for n in env_of(render(values)) if n.startswith("GATEWAY_")}
    assert len(names) >= 15
    for name in names:
        assert name.removeprefix("GATEWAY_").lower() in Settings.model_fields, name


def test_secret_references() -> None:
    values = {
        "secrets": {
            "hfToken": {"secretName": "hub", "key": "token"},
            "apiKey": {"secretName": "gateway-key", "key": "key"},
            "mounts": [{"name": "api-keys", "secretName": "gateway-keys", "mountPath": "/etc/gateway/keys"}],
            "env": [{"name": "GATEWAY_RATE_LIMIT_STORAGE", "secretName": "redis", "key": "url"}],
        },
        "gateway": {"extraEnv": {"GATEWAY_API_KEYS_FILE": "/etc/gateway/keys/keys.yaml"}},
    }
    docs = render(values)
    env = env_of(docs)
    assert env["HF_TOKEN"] == {"secretKeyRef": {"name": "hub", "key": "token"}}
    assert env["GATEWAY_API_KEY"] == {"secretKeyRef": {"name": "gateway-key", "key": "key"}}
    assert env["GATEWAY_API_KEYS_FILE"] == "/etc/gateway/keys/keys.yaml"
    assert env["GATEWAY_RATE_LIMIT_STORAGE"] == {"secretKeyRef": {"name": "redis", "key": "url"}}
    mount = next(m for m in container(docs)["volumeMounts"] if m["name"] == "api-keys")
    assert mount == {"name": "api-keys", "mountPath": "/etc/gateway/keys", "readOnly": True}
    volumes = by_kind(docs)["Deployment"]["spec"]["template"]["spec"]["volumes"]
    assert {"name": "api-keys", "secret": {"secretName": "gateway-keys", "defaultMode": 0o440}} in volumes
    # No secret of the chart's own: values never carry a key.
    assert "Secret" not in {d["kind"] for d in docs}
    # Without references, no secret variable at all.
    assert not {"HF_TOKEN", "GATEWAY_API_KEY"} & set(env_of(_rendered("default")))
    # This render adds secret volumes and references: valid too.
    kubernetes_validate.validate(by_kind(docs)["Deployment"], KUBE_VERSIONS[0], strict=True)


def test_model_cache_claim() -> None:
    docs = render({"modelCache": {"existingClaim": "models"}})
    volumes = by_kind(docs)["Deployment"]["spec"]["template"]["spec"]["volumes"]
    assert {"name": "model-cache", "persistentVolumeClaim": {"claimName": "models"}} in volumes


# --- Service, ServiceMonitor, PDB, dashboards -----------------------------------------------------------


def test_service_monitor_wiring() -> None:
    docs = by_kind(_rendered("default"))
    pod_labels = docs["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert docs["Deployment"]["spec"]["selector"]["matchLabels"] == SELECTOR
    assert docs["Service"]["spec"]["selector"] == SELECTOR and SELECTOR.items() <= pod_labels.items()
    assert docs["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"] == SELECTOR
    monitor = docs["ServiceMonitor"]
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= docs["Service"]["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics"
    assert endpoint["port"] in [p["name"] for p in docs["Service"]["spec"]["ports"]]
    # The shipped alerts select job="gateway": the Service's job label gives every series that job.
    job_label = monitor["spec"]["jobLabel"]
    assert docs["Service"]["metadata"]["labels"][job_label] == "gateway"
    exprs = [str(r["expr"]) for g in docs["PrometheusRule"]["spec"]["groups"] for r in g["rules"]]
    assert any('up{job="gateway"}' in e for e in exprs)


def test_a_keyed_gateway_is_scraped_with_a_key_from_a_secret() -> None:
    """Keys configured, the gateway refuses /metrics without one: the scrape sends the Secret's key as a bearer key,
    by default the one the pods get as GATEWAY_API_KEY, or the one named under the ServiceMonitor's values."""
    (endpoint,) = by_kind(_rendered("default"))["ServiceMonitor"]["spec"]["endpoints"]
    assert "authorization" not in endpoint
    docs = by_kind(_rendered("keyed"))
    (endpoint,) = docs["ServiceMonitor"]["spec"]["endpoints"]
    credentials = {"name": "llm-gateway-key", "key": "GATEWAY_API_KEY"}
    assert endpoint["authorization"] == {"type": "Bearer", "credentials": credentials}
    env = docs["Deployment"]["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "GATEWAY_API_KEY", "valueFrom": {"secretKeyRef": credentials}} in env
    own = {"metrics": {"serviceMonitor": {"authorization": {"secretName": "scrape-key", "key": "token"}}}}
    (endpoint,) = by_kind(render(own))["ServiceMonitor"]["spec"]["endpoints"]
    assert endpoint["authorization"]["credentials"] == {"name": "scrape-key", "key": "token"}


def test_service_monitor_labels_are_configurable() -> None:
    values = {"metrics": {"serviceMonitor": {"labels": {"team": "ml"}}, "prometheusRule": {"labels": {"team": "ml"}}}}
    docs = by_kind(render(values))
    assert docs["ServiceMonitor"]["metadata"]["labels"]["team"] == "ml"
    assert docs["PrometheusRule"]["metadata"]["labels"]["team"] == "ml"
    off = {"metrics": {k: {"enabled": False} for k in ("serviceMonitor", "prometheusRule", "dashboards")}}
    kinds = {d["kind"] for d in render(off)}
    assert not kinds & {"ServiceMonitor", "PrometheusRule", "ConfigMap"}


def test_dashboards_config_map() -> None:
    config_map = by_kind(_rendered("default"))["ConfigMap"]
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    data = config_map["data"]
    assert sorted(data) == sorted(p.name for p in DASHBOARDS_DIR.glob("*.json"))
    for name, text in data.items():
        assert json.loads(text) == json.loads((DASHBOARDS_DIR / name).read_text())
    # ConfigMaps are limited to 1 MiB.
    assert len(json.dumps(data)) < 1024 * 1024


# --- autoscaling ----------------------------------------------------------------------------------------


def test_keda_scales_on_in_flight_and_queue_depth() -> None:
    docs = by_kind(_rendered("keda"))
    scaled = docs["ScaledObject"]["spec"]
    assert scaled["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": FULLNAME}
    assert (scaled["minReplicaCount"], scaled["maxReplicaCount"]) == (1, 4)
    triggers = {t["name"]: t for t in scaled["triggers"]}
    assert set(triggers) == {"in-flight", "queue-depth"}
    selector = f'{{namespace="{NAMESPACE}",service="{FULLNAME}"}}'
    for name, metric, threshold in (
        ("in-flight", instruments.REQUESTS_IN_FLIGHT, "8"),  # gateway.maxBatchSize
        ("queue-depth", instruments.QUEUE_DEPTH, "8"),  # gateway.maxQueue / 8
    ):
        trigger = triggers[name]
        assert trigger["type"] == "prometheus" and trigger["metricType"] == "AverageValue"
        assert trigger["metadata"]["query"] == f"sum({metric}{selector})"
        assert trigger["metadata"]["threshold"] == threshold
        assert trigger["metadata"]["serverAddress"].startswith("http://")
    # The Deployment leaves its replica count to the autoscaler.
    assert "replicas" not in docs["Deployment"]["spec"]


def test_thresholds_follow_the_batch_and_queue_settings() -> None:
    derived = by_kind(render({"autoscaling": {"engine": "keda"}, "gateway": {"maxBatchSize": 16, "maxQueue": 200}}))
    thresholds = {t["name"]: t["metadata"]["threshold"] for t in derived["ScaledObject"]["spec"]["triggers"]}
    assert thresholds == {"in-flight": "16", "queue-depth": "25"}
    explicit = {"engine": "keda", "inFlightPerReplica": 5, "queueDepthPerReplica": 3}
    docs = by_kind(render({"autoscaling": explicit}))
    thresholds = {t["name"]: t["metadata"]["threshold"] for t in docs["ScaledObject"]["spec"]["triggers"]}
    assert thresholds == {"in-flight": "5", "queue-depth": "3"}


def test_hpa_fallback_reads_the_same_metrics() -> None:
    for profile in ("hpa", "default"):  # "auto" without KEDA's API (an offline render has none) is the HPA
        hpa = by_kind(_rendered(profile))["HorizontalPodAutoscaler"]["spec"]
        assert hpa["scaleTargetRef"]["name"] == FULLNAME
        targets = {m["pods"]["metric"]["name"]: m["pods"]["target"] for m in hpa["metrics"]}
        assert targets == {
            instruments.REQUESTS_IN_FLIGHT: {"type": "AverageValue", "averageValue": "8"},
            instruments.QUEUE_DEPTH: {"type": "AverageValue", "averageValue": "8"},
        }


def test_promtool_parses_the_keda_queries(tmp_path: Path) -> None:
    triggers = by_kind(_rendered("keda"))["ScaledObject"]["spec"]["triggers"]
    rules = [{"record": f"keda:{t['name'].replace('-', '_')}", "expr": t["metadata"]["query"]} for t in triggers]
    path = tmp_path / "keda-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "keda", "rules": rules}]}))
    result = subprocess.run(
        [_tool("promtool"), "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_autoscaling_off() -> None:
    docs = by_kind(_rendered("autoscaling-off"))
    assert docs["Deployment"]["spec"]["replicas"] == 3
    assert "ScaledObject" not in docs and "HorizontalPodAutoscaler" not in docs


def test_pod_disruption_budget() -> None:
    pdb = by_kind(_rendered("default"))["PodDisruptionBudget"]["spec"]
    assert pdb["maxUnavailable"] == 1
    strategy = by_kind(_rendered("default"))["Deployment"]["spec"]["strategy"]["rollingUpdate"]
    assert strategy["maxUnavailable"] == 0  # a rollout never removes a serving pod before its successor is ready


# --- NOTES.txt ------------------------------------------------------------------------------------------


def test_notes_say_what_to_run_next() -> None:
    notes = render_notes()
    assert f"kubectl -n {NAMESPACE} rollout status deployment/{FULLNAME}" in notes
    assert f"port-forward service/{FULLNAME} 8000:8000" in notes
    assert "prometheus-adapter" in notes  # the offline render picks the HPA: it says what it needs
    assert "scaledobject" in render_notes({"autoscaling": {"engine": "keda"}})
    assert "Autoscaling is off" in render_notes({"autoscaling": {"enabled": False}})
    assert "GATEWAY_DEVICE=cpu" in render_notes(PROFILES["cpu"])


@pytest.fixture(autouse=True, scope="module")
def _release_chart() -> Iterator[None]:
    yield
    if _chart.cache_info().currsize:
        _chart().close()
        _chart.cache_clear()
