"""The peers as ``System``s: LitServe with dynamic batching and ``transformers serve --continuous-batching``,
each started at its own defaults on a free loopback port, serving a model from its local folder."""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.gateway_process import LOOPBACK, ServerProcess, free_port, running
from bench.systems import OpenAIWire, System

LITSERVE_SCRIPT = Path(__file__).resolve().parent / "litserve_server.py"


class LitServeWire:
    """``POST /predict`` of ``litserve_server``: ``{"prompt", "max_new_tokens"}`` in, ``{"generated_tokens"}`` out;
    no streaming (a static batch answers when its longest row is done)."""

    def request(self, prompt: str, max_new_tokens: int, details: bool = False) -> tuple[str, dict[str, Any]]:
        return "/predict", {"prompt": prompt, "max_new_tokens": max_new_tokens}

    def generated_tokens(self, answer: object) -> int:
        assert isinstance(answer, dict)
        return int(answer["generated_tokens"])

    def stream_request(self, prompt: str, max_new_tokens: int) -> tuple[str, dict[str, Any]] | None:
        return None

    def token_event(self, event: dict[str, Any]) -> bool:
        return False


class OpenAICompletionsWire(OpenAIWire):
    """The OpenAI API's ``POST /v1/completions`` (the prompt as it is, no chat template), greedy, for ``model``;
    ``usage.completion_tokens`` holds the generated tokens."""

    def __init__(self, model: str) -> None:
        self.model = model

    def request(self, prompt: str, max_new_tokens: int, details: bool = False) -> tuple[str, dict[str, Any]]:
        body = {"model": self.model, "prompt": prompt, "max_tokens": max_new_tokens, "temperature": 0}
        return "/v1/completions", body

    def token_event(self, event: dict[str, Any]) -> bool:
        return any(c.get("text") for c in event.get("choices") or ())


def _offline_env() -> dict[str, str]:
    """This environment, offline for the Hugging Face hub (the models are local folders): nothing that tunes."""
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


@contextlib.contextmanager
def litserve(model_dir: Path, model: str, log: Path) -> Iterator[System]:
    """LitServe (``litserve_server.py``) serving ``model_dir``; killed on the way out."""
    port = free_port()
    argv = [sys.executable, str(LITSERVE_SCRIPT), str(model_dir), str(port)]
    server = ServerProcess(argv, _offline_env(), port, log=log, ready_path="/health", own_group=True)
    with running(server, ready_timeout_s=180, stop_grace_s=10):
        yield System("LitServe", model, server, LitServeWire())


@contextlib.contextmanager
def transformers_serve(model_dir: Path, model: str, log: Path) -> Iterator[System]:
    """``transformers serve --continuous-batching`` with ``model_dir`` preloaded; stopped on the way out."""
    port = free_port()
    exe = shutil.which("transformers", path=str(Path(sys.executable).parent)) or "transformers"
    argv = [exe, "serve", "--continuous-batching", "--host", LOOPBACK, "--port", str(port), str(model_dir)]
    server = ServerProcess(argv, _offline_env(), port, log=log, ready_path="/health", own_group=True)
    with running(server, ready_timeout_s=180, stop_grace_s=10):
        yield System("transformers serve --continuous-batching", model, server, OpenAICompletionsWire(str(model_dir)))
