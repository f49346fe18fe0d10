"""Who is compared on what: the bench's models (the demo causal LM, the bench Llama) and, for each, the systems
serving it (the gateway at its defaults, candidate gateway settings under their own names, the peers)."""

from __future__ import annotations

import argparse
import functools
from pathlib import Path

from bench.compare import SystemStarter
from bench.peers.systems import litserve, transformers_serve
from bench.systems import gateway

SYSTEMS = ("gateway", "litserve", "transformers-serve")
MODELS = ("demo", "bench")


def model_dir(name: str, cache: Path) -> tuple[str, Path, dict[str, str]]:
    """(label, folder, the gateway's settings to serve it) of one of ``MODELS``."""
    from gateway.demo import DEMO_CAUSAL_ID, ensure_bench_model, ensure_demo_models

    if name == "demo":
        return DEMO_CAUSAL_ID, ensure_demo_models(cache)[DEMO_CAUSAL_ID], {}
    path = ensure_bench_model(cache)
    return "bench Llama (ByT5Tokenizer, slow)", path, {"model": str(path)}


def starters(name: str, cache: Path, out: Path, args: argparse.Namespace) -> tuple[str, Path, list[SystemStarter]]:
    """(label, folder, system starters) for model ``name``, the systems of ``args.systems`` in order, each
    gateway candidate of ``args.gateway_env`` right after the gateway."""
    label, path, settings = model_dir(name, cache)
    metrics_model = settings.get("model", label)
    log = out / f"compare-{name}"
    chosen: list[SystemStarter] = []
    for system in args.systems.split(","):
        if system == "gateway":
            chosen.append(functools.partial(gateway, cache, Path(f"{log}-gateway.log"), metrics_model, settings))
            for i, assignment in enumerate(args.gateway_env):
                env = dict(a.partition("=")[::2] for a in assignment.split(","))
                chosen.append(
                    functools.partial(
                        gateway,
                        cache,
                        Path(f"{log}-gateway-env{i}.log"),
                        metrics_model,
                        settings,
                        name=f"gateway, {assignment}",
                        env=env,
                    )
                )
        elif system == "litserve":
            chosen.append(functools.partial(litserve, path, label, Path(f"{log}-litserve.log")))
        elif system == "transformers-serve":
            chosen.append(functools.partial(transformers_serve, path, label, Path(f"{log}-transformers-serve.log")))
        else:
            raise SystemExit(f"unknown system {system!r} (one of {', '.join(SYSTEMS)})")
    return label, path, chosen
