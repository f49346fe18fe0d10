"""The burn-rate SLO rules: generated from deploy/prometheus/slo/slos.yml, and tied to the real exposition.

- regenerating deploy/prometheus/rules/slo.yml from the settings gives the committed file byte for byte (edit
  slos.yml, then run the generator; never the rules by hand);
- a latency target off a bucket edge of src/metrics/instruments.py is refused;
- the ``le`` value each latency SLI selects is a bucket the real gateway instruments expose;
- every page and ticket alert has all the window pairs of its severity.

promtool's checks of the rules (each alert firing and silent, each window pair) are in test_promtool.py.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest

from metrics import Instruments

ROOT = Path(__file__).resolve().parents[2]
SLO_DIR = ROOT / "deploy" / "prometheus" / "slo"
RULES = ROOT / "deploy" / "prometheus" / "rules" / "slo.yml"


@pytest.fixture(scope="module")
def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("slo_generate", SLO_DIR / "generate.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_rules_are_the_generated_ones(generator: ModuleType) -> None:
    text = generator.render(generator.load_settings(), generator._bucket_edges())
    assert text == RULES.read_text(), "deploy/prometheus/rules/slo.yml is stale: run deploy/prometheus/slo/generate.py"
    assert generator.main(["--check"]) == 0


def test_check_fails_on_a_stale_file(generator: ModuleType, tmp_path: Path) -> None:
    stale = tmp_path / "slo.yml"
    stale.write_text(RULES.read_text().replace("(14.4 * 0.005)", "(14.4 * 0.05)"))
    assert generator.main(["--check", "--output", str(stale)]) == 1
    assert generator.main(["--output", str(stale)]) == 0
    assert stale.read_text() == RULES.read_text()


def test_a_target_off_a_bucket_edge_is_refused(generator: ModuleType, tmp_path: Path) -> None:
    settings = generator.load_settings()
    settings["slos"]["time_to_first_token"]["target_seconds"] = 1.75
    with pytest.raises(ValueError, match="not a bucket edge"):
        generator.render(settings, generator._bucket_edges())


def _rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def test_latency_slis_select_buckets_the_gateway_exposes() -> None:
    registry = CollectorRegistry()
    instruments = Instruments(registry)
    instruments.time_to_first_token.labels(model="m").observe(0.3)
    instruments.time_per_output_token.labels(model="m").observe(0.01)
    exposition = generate_latest(registry).decode()
    selected = set()
    for rule in _rules():
        selected.update(re.findall(r'(gateway_\w+_bucket)\{le="([^"]+)"\}', rule["expr"]))
    assert {name for name, _ in selected} == {
        "gateway_time_to_first_token_seconds_bucket",
        "gateway_time_per_output_token_seconds_bucket",
    }
    for name, le in selected:
        assert re.search(rf'^{name}\{{le="{re.escape(le)}",model="m"\}} ', exposition, re.M), (name, le)


def test_each_alert_has_every_window_pair_of_its_severity(generator: ModuleType) -> None:
    settings = generator.load_settings()
    alerts = [rule for rule in _rules() if "alert" in rule]
    assert len(alerts) == len(settings["slos"]) * len(settings["alerts"])
    for alert in alerts:
        kind = "page" if alert["alert"].endswith("FastBurn") else "ticket"
        severity = settings["alerts"][kind]
        assert alert["labels"]["severity"] == severity["severity"]
        objective = settings["slos"][alert["labels"]["slo"]]["objective"]
        for pair in severity["windows"]:
            threshold = f"({generator._number(pair['burn_rate'])} * {generator._number(1 - objective)})"
            for window in (pair["long"], pair["short"]):
                assert f'ratio_rate{window}{{slo="{alert["labels"]["slo"]}"}} > {threshold}' in alert["expr"]
