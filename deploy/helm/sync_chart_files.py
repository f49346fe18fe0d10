"""Copy the shipped rule files and dashboards into the Helm chart, which can read only files inside itself.

deploy/prometheus/rules/*.yml -> llm-gateway/files/prometheus-rules/ and deploy/grafana/dashboards/*.json ->
llm-gateway/files/dashboards/, byte for byte; files there with no source any more are removed. The sources stay
the one place to edit: tests/deploy/test_helm_chart.py fails while a copy differs from its source.

    python deploy/helm/sync_chart_files.py          # write the copies
    python deploy/helm/sync_chart_files.py --check  # exit 1 and name the stale copies
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DEPLOY = Path(__file__).resolve().parents[1]
CHART_FILES = DEPLOY / "helm" / "llm-gateway" / "files"

# source folder, file pattern -> folder in the chart
COPIES = (
    (DEPLOY / "prometheus" / "rules", "*.yml", CHART_FILES / "prometheus-rules"),
    (DEPLOY / "grafana" / "dashboards", "*.json", CHART_FILES / "dashboards"),
)


def stale() -> list[str]:
    """The chart copies that differ from their sources, are missing, or have no source (paths in the chart)."""
    out = []
    for source_dir, pattern, target_dir in COPIES:
        sources = {p.name: p for p in source_dir.glob(pattern)}
        targets = {p.name: p for p in target_dir.glob(pattern)} if target_dir.is_dir() else {}
        for name in sorted(sources.keys() | targets.keys()):
            if name not in sources or name not in targets or sources[name].read_bytes() != targets[name].read_bytes():
                out.append(str((target_dir / name).relative_to(DEPLOY.parent)))
    return out


def sync() -> None:
    for source_dir, pattern, target_dir in COPIES:
        target_dir.mkdir(parents=True, exist_ok=True)
        sources = {p.name for p in source_dir.glob(pattern)}
        for old in target_dir.glob(pattern):
            if old.name not in sources:
                old.unlink()
        for name in sorted(sources):
            (target_dir / name).write_bytes((source_dir / name).read_bytes())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report copies that differ from their sources")
    args = parser.parse_args()
    if args.check:
        differing = stale()
        for path in differing:
            print(f"stale: {path}", file=sys.stderr)
        return 1 if differing else 0
    sync()
    return 0


if __name__ == "__main__":
    sys.exit(main())
