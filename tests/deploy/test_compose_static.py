"""docker-compose.yml, docker-compose.cpu.yml, the Dockerfile and .dockerignore, checked without Docker.

The compose files must parse, every host path they mount must exist, the published ports must be the documented
ones, the services must point at each other by the names the configs use (gateway:8000, alertmanager:9093,
prometheus:9090, alert-webhook:5001), and the image must run as a non-root user with a health check on /health.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
COMPOSE_CPU = ROOT / "docker-compose.cpu.yml"
DOCKERFILE = ROOT / "Dockerfile"

# host port -> (service, container port), as documented in docker-compose.yml's header and docs/runbook.md
EXPECTED_PORTS = {
    8000: ("gateway", 8000),
    9090: ("prometheus", 9090),
    9093: ("alertmanager", 9093),
    3000: ("grafana", 3000),
}


class _Reset:
    """Compose's `!reset` tag: removes the attribute when files are merged."""


class _ComposeLoader(yaml.SafeLoader):
    pass


_ComposeLoader.add_constructor("!reset", lambda loader, node: _Reset())
_ComposeLoader.add_constructor("!override", lambda loader, node: loader.construct_object(node.value[0][1]))


def _load(path: Path) -> dict[str, Any]:
    with path.open() as f:
        data = yaml.load(f, Loader=_ComposeLoader)  # a SafeLoader subclass: safe
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return _load(COMPOSE)


@pytest.fixture(scope="module")
def compose_cpu() -> dict[str, Any]:
    return _load(COMPOSE_CPU)


def _ports(service: dict[str, Any]) -> set[tuple[int, int]]:
    """(host port, container port) of each "HOST:CONTAINER" entry."""
    out = set()
    for port in service.get("ports", []):
        host, container = str(port).split(":")[-2:]
        out.add((int(host), int(container)))
    return out


def test_services(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {
        "gateway",
        "prometheus",
        "alertmanager",
        "grafana",
        "alert-webhook",
        "node-exporter",
    }
    assert compose["services"]["gateway"]["build"] == "."


def test_published_ports(compose: dict[str, Any]) -> None:
    published = {
        host: (name, container) for name, svc in compose["services"].items() for host, container in _ports(svc)
    }
    assert published == EXPECTED_PORTS


def test_mounted_host_paths_exist(compose: dict[str, Any]) -> None:
    named_volumes = set(compose.get("volumes") or {})
    checked = 0
    for name, svc in compose["services"].items():
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0] if isinstance(volume, str) else volume["source"]
            if source in named_volumes:
                continue
            if name == "node-exporter" and source == "/":
                continue  # the host's root, read-only: checked in test_node_exporter
            assert source.startswith("./"), f"{name}: {volume} is neither a named volume nor a relative path"
            assert (ROOT / source).exists(), f"{name}: {source} does not exist"
            checked += 1
    assert checked >= 4


def _mounts(svc: dict[str, Any]) -> dict[str, Path]:
    """container path -> host path for the bind mounts of a service."""
    out = {}
    for volume in svc.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("./"):
            out[target] = ROOT / source
    return out


def _in_container(svc: dict[str, Any], container_path: str) -> Path:
    """The host file a container path of `svc` maps to."""
    for target, source in sorted(_mounts(svc).items(), key=lambda kv: -len(kv[0])):
        if container_path == target or container_path.startswith(target.rstrip("/") + "/"):
            return source / container_path[len(target) :].lstrip("/")
    raise AssertionError(f"{container_path} is not mounted")


def _flag(command: list[str], name: str) -> str:
    for arg in command:
        if arg.startswith(f"--{name}="):
            return arg.split("=", 1)[1]
    raise AssertionError(f"--{name} missing from {command}")


def test_prometheus_wiring(compose: dict[str, Any]) -> None:
    svc = compose["services"]["prometheus"]
    config_path = _in_container(svc, _flag(svc["command"], "config.file"))
    assert config_path == ROOT / "deploy" / "prometheus" / "prometheus.yml"
    config = yaml.safe_load(config_path.read_text())
    # rule files resolve relative to the config file, inside the container too
    for pattern in config["rule_files"]:
        assert not pattern.startswith("/"), pattern
        assert list(config_path.parent.glob(pattern)), pattern
    targets = {
        job["job_name"]: [t for sc in job["static_configs"] for t in sc["targets"]] for job in config["scrape_configs"]
    }
    assert targets["gateway"] == ["gateway:8000"]
    assert targets["prometheus"] == ["localhost:9090"]
    # node-exporter shares the host's network: reached through the host gateway name Prometheus is given
    assert targets["node"] == ["host.docker.internal:9100"]
    assert "host.docker.internal:host-gateway" in svc["extra_hosts"]
    am_targets = [t for am in config["alerting"]["alertmanagers"] for sc in am["static_configs"] for t in sc["targets"]]
    assert am_targets == ["alertmanager:9093"]


def test_alertmanager_wiring(compose: dict[str, Any]) -> None:
    svc = compose["services"]["alertmanager"]
    config_path = _in_container(svc, _flag(svc["command"], "config.file"))
    assert config_path == ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
    config = yaml.safe_load(config_path.read_text())
    urls = [wh["url"] for r in config["receivers"] for wh in r.get("webhook_configs", [])]
    assert urls and all(u == "http://alert-webhook:5001/alerts" for u in urls)
    webhook = compose["services"]["alert-webhook"]
    assert "5001" in webhook["command"]
    script = _in_container(webhook, webhook["command"][1])
    assert script == ROOT / "deploy" / "alert-webhook" / "receiver.py"


def test_grafana_wiring(compose: dict[str, Any]) -> None:
    svc = compose["services"]["grafana"]
    provisioning = _in_container(svc, "/etc/grafana/provisioning")
    datasources = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"]
    assert [(d["uid"], d["type"], d["url"]) for d in datasources] == [
        ("prometheus", "prometheus", "http://prometheus:9090")
    ]
    providers = yaml.safe_load((provisioning / "dashboards" / "dashboards.yml").read_text())["providers"]
    dashboards_dir = _in_container(svc, providers[0]["options"]["path"])
    assert dashboards_dir == ROOT / "deploy" / "grafana" / "dashboards"
    assert sorted(p.name for p in dashboards_dir.glob("*.json")) == [
        "gateway-model-detail.json",
        "gateway-overview.json",
        "gateway-slo.json",
    ]
    home = svc["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert _in_container(svc, home).is_file()


def test_node_exporter(compose: dict[str, Any]) -> None:
    """The host layer: host namespaces, the host's root read-only, not root, nothing writable or privileged."""
    svc = compose["services"]["node-exporter"]
    assert svc["network_mode"] == "host" and svc["pid"] == "host"
    assert svc["volumes"] == ["/:/host:ro,rslave"]
    assert "--path.rootfs=/host" in svc["command"]
    assert svc["user"].split(":")[0] not in ("0", "root")
    assert svc["read_only"] is True
    assert svc["cap_drop"] == ["ALL"]
    assert "ports" not in svc
    assert "--web.listen-address=:9100" in svc["command"]


def test_gateway_service(compose: dict[str, Any]) -> None:
    svc = compose["services"]["gateway"]
    env = svc["environment"]
    assert env["GATEWAY_DEVICE"] == "cuda"
    assert env["GATEWAY_PORT"] == "8000"
    assert all(k.startswith("GATEWAY_") or k == "HF_TOKEN" for k in env)
    assert env["GATEWAY_ENABLE_FAULTS"] == "false"
    devices = svc["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]
    assert any("/health" in part for part in svc["healthcheck"]["test"])


def test_gateway_settings_exist(compose: dict[str, Any]) -> None:
    """Every GATEWAY_* variable set in the compose files is a real setting of the gateway."""
    settings = pytest.importorskip("gateway.settings")
    fields = set(settings.Settings.model_fields)
    names = set(compose["services"]["gateway"]["environment"]) | set(
        _load(COMPOSE_CPU)["services"]["gateway"]["environment"]
    )
    for name in names - {"HF_TOKEN"}:
        assert name.removeprefix("GATEWAY_").lower() in fields, name


def test_cpu_override(compose_cpu: dict[str, Any]) -> None:
    gateway = compose_cpu["services"]["gateway"]
    assert set(compose_cpu["services"]) == {"gateway"}
    assert gateway["environment"] == {"GATEWAY_DEVICE": "cpu"}
    assert isinstance(gateway["deploy"], _Reset), "the override must drop the GPU reservation with !reset"


def _instructions(text: str) -> list[tuple[str, str]]:
    """Dockerfile instructions as (KEYWORD, arguments), continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", text)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def test_dockerfile() -> None:
    instructions = _instructions(DOCKERFILE.read_text())
    keywords = [k for k, _ in instructions]
    assert instructions[0][0] == "FROM" and instructions[0][1].startswith("nvidia/cuda:")
    users = [args for k, args in instructions if k == "USER"]
    assert users and users[-1] not in ("root", "0"), "the image must run as a non-root user"
    assert keywords.index("USER") < keywords.index("CMD")
    healthchecks = [args for k, args in instructions if k == "HEALTHCHECK"]
    assert len(healthchecks) == 1 and "/health" in healthchecks[0]
    assert ("EXPOSE", "8000") in instructions
    assert instructions[-1] == ("CMD", '["gateway", "serve", "--host", "0.0.0.0"]')
    copied = [args.split()[:-1] for k, args in instructions if k == "COPY"]
    for sources in copied:
        for source in sources:
            assert (ROOT / source).exists(), f"COPY source {source} is missing"


def test_dockerignore_keeps_the_build_inputs() -> None:
    ignored = {
        line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines() if line.strip() and line[0] != "#"
    }
    for needed in ("pyproject.toml", "README.md", "src"):
        assert needed not in ignored
    assert {".git", ".venv"} <= ignored


def test_every_container_is_unprivileged_and_read_only(compose: dict[str, Any]) -> None:
    """Not root, a read-only root filesystem, no capabilities, no new privileges: for every service."""
    for name, svc in compose["services"].items():
        user = str(svc.get("user", "")).split(":")[0]
        assert user and user not in ("0", "root"), f"{name} must name a non-root user"
        assert svc.get("read_only") is True, f"{name} must run on a read-only root filesystem"
        assert svc.get("cap_drop") == ["ALL"], f"{name} must drop every capability"
        assert "no-new-privileges:true" in svc.get("security_opt", []), f"{name} must set no-new-privileges"
        assert not svc.get("privileged") and "cap_add" not in svc, name


def test_the_gateway_writes_only_to_its_volume_and_tmpfs(compose: dict[str, Any]) -> None:
    svc = compose["services"]["gateway"]
    assert svc["user"] == "10001:10001"  # the Dockerfile's gateway user
    assert "/tmp" in svc["tmpfs"]
    assert svc["environment"]["GATEWAY_DEMO_CACHE_DIR"].startswith("/tmp/")
    assert "hf-cache:/home/gateway/.cache/huggingface" in svc["volumes"]
    dockerfile = DOCKERFILE.read_text()
    assert "useradd --create-home --uid 10001" in dockerfile
    # The volume's mount point exists in the image, owned by the user, so the named volume is writable.
    assert re.search(r"USER gateway\n(#.*\n)*RUN mkdir -p /home/gateway/\.cache/huggingface", dockerfile)
