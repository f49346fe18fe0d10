"""A server as a child process on loopback: started, waited for until ready, measured, stopped.

The one harness that starts ``gateway serve`` for the end-to-end tests and for the bench. Tests import it as
``bench.gateway_process`` (pytest puts the repository root on the path); it imports neither torch nor the
gateway package, so it works wherever the tests run. ``ServerProcess`` knows nothing of the gateway, so the
bench can start a peer server (another system serving the same model) with it too.

Output goes to a log file when one is given (the bench's JSON logs, read after the run), else to a pipe that
``read_output`` reads once the process has exited (a test reading the logs of a server it stopped).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO

import httpx

__all__ = ["ServerNotReady", "ServerProcess", "free_port", "gateway_env", "running", "setting_env", "start_gateway"]

LOOPBACK = "127.0.0.1"


class ServerNotReady(RuntimeError):
    """The server exited before it was ready, or was not ready in time."""


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def setting_env(settings: Mapping[str, object]) -> dict[str, str]:
    """Gateway settings by name (``max_queue``) as its environment variables (``GATEWAY_MAX_QUEUE``)."""
    return {f"GATEWAY_{name.upper()}": str(value) for name, value in settings.items()}


def gateway_env(port: int, cache_dir: Path, settings: Mapping[str, object] = {}) -> dict[str, str]:
    """This process's environment without any ``GATEWAY_*`` of its own, for a gateway on ``port`` serving
    the demo models from ``cache_dir`` with ``settings`` (the rest at their defaults)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update(
        {
            "GATEWAY_HOST": LOOPBACK,
            "GATEWAY_PORT": str(port),
            "GATEWAY_DEMO_CACHE_DIR": str(cache_dir),
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(setting_env(settings))
    return env


class ServerProcess:
    """``argv`` as a child process serving HTTP on ``port`` of loopback; ready when ``ready_path`` answers 200."""

    def __init__(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        port: int,
        *,
        log: Path | None = None,
        ready_path: str = "/ready",
        own_group: bool = False,
    ) -> None:
        self.port = port
        self.url = f"http://{LOOPBACK}:{port}"
        self.log = log
        self.ready_path = ready_path
        self._log_file: IO[str] | None = log.open("w") if log is not None else None
        out = self._log_file if self._log_file is not None else subprocess.PIPE
        # own_group: a process group of its own, stopped as a whole (a server whose workers outlive their parent).
        self.own_group = own_group
        self.proc = subprocess.Popen(
            list(argv), env=dict(env), stdout=out, stderr=subprocess.STDOUT, text=True, start_new_session=own_group
        )

    def wait_ready(self, timeout_s: float = 90.0) -> None:
        """Return once ``ready_path`` answers 200; ``ServerNotReady`` if the process exits or time runs out."""
        until = time.monotonic() + timeout_s
        while time.monotonic() < until:
            if self.proc.poll() is not None:
                raise ServerNotReady(f"the server exited early (code {self.proc.returncode}):\n{self.read_output()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + self.ready_path, timeout=1).status_code == 200:
                    return
            time.sleep(0.1)
        raise ServerNotReady(f"the server was not ready in {timeout_s:g} s")

    def read_output(self) -> str:
        """What the server wrote: the log file so far, or the pipe's contents once it has exited."""
        if self.log is not None:
            return self.log.read_text(errors="replace")
        if self.proc.poll() is None or self.proc.stdout is None:
            return ""
        return self.proc.stdout.read()

    def cpu_s(self) -> float:
        """CPU seconds used so far by the process and its direct children (a gateway's model processes)."""
        pid = self.proc.pid
        pids = [pid]
        with contextlib.suppress(OSError):
            pids += [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        total = 0.0
        for p in pids:
            with contextlib.suppress(OSError):
                fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return total

    def _signal(self, sig: signal.Signals) -> None:
        if self.own_group:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
        else:
            self.proc.send_signal(sig)

    def _stop_group(self, timeout_s: float = 10.0) -> None:
        """Kill what is left of the process group (workers left behind by the server) and wait until it is gone
        (a zombie still counts until init reaps it)."""
        until = time.monotonic() + timeout_s
        while time.monotonic() < until:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                return
            time.sleep(0.05)

    def stop(self, grace_s: float = 0.0) -> None:
        """Stop the process: SIGTERM and up to ``grace_s`` to exit (a drain) when ``grace_s`` > 0, else, or then,
        SIGKILL."""
        if self.proc.poll() is None:
            if grace_s > 0:
                self._signal(signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(grace_s)
            if self.proc.poll() is None:
                self._signal(signal.SIGKILL)
                self.proc.wait(10)
        if self.own_group:
            self._stop_group()
        if self._log_file is not None:
            self._log_file.close()


def start_gateway(
    cache_dir: Path,
    settings: Mapping[str, object] = {},
    *,
    env: Mapping[str, str] = {},
    log: Path | None = None,
) -> ServerProcess:
    """``python -m gateway serve`` on a free loopback port (not yet ready), with ``settings`` by name and
    ``env`` on top of its environment."""
    port = free_port()
    return ServerProcess(
        [sys.executable, "-m", "gateway", "serve"], {**gateway_env(port, cache_dir, settings), **env}, port, log=log
    )


@contextlib.contextmanager
def running(server: ServerProcess, ready_timeout_s: float = 90.0, stop_grace_s: float = 0.0) -> Iterator[ServerProcess]:
    """``server`` once ready; stopped on the way out, ready or not."""
    try:
        server.wait_ready(ready_timeout_s)
        yield server
    finally:
        server.stop(stop_grace_s)
