"""``gateway serve``: run the app under uvicorn, with SIGTERM drain.

Every ``Settings`` field is a flag (``--max-batch-size 16``) as well as an env var (``GATEWAY_MAX_BATCH_SIZE``);
flags win. On SIGTERM or SIGINT the gateway drains: ``/ready`` turns 503, new requests get 503, in-flight and
queued requests finish within ``drain_timeout_s`` (those still unfinished then are answered with 503), then uvicorn
stops and the process exits 0. A second signal stops at once.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import sys
from collections.abc import Sequence
from types import FrameType
from typing import Any

import uvicorn
from pydantic import ValidationError

from gateway import __version__
from gateway.gateway import Gateway
from gateway.heap import freeze_startup_heap
from gateway.http.connection import ConnectionLimits, limited_protocol
from gateway.keys import KeyFileError
from gateway.logs import configure_logging, route_stderr_to_log, uvicorn_log_config
from gateway.settings import Settings

log = logging.getLogger("gateway.cli")


def _flag_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway serve", description="Serve the LLM inference gateway.")
    for name, field in Settings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        help_text = field.description or ""
        if field.annotation is bool:
            parser.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif name in ("translation_languages", "cors_origins", "public_routes"):
            parser.add_argument(flag, dest=name, default=None, help=help_text + " (comma separated)")
        else:
            parser.add_argument(flag, dest=name, default=None, help=help_text)
    return parser


def parse_settings(argv: Sequence[str]) -> Settings:
    args = _flag_parser().parse_args(list(argv))
    given: dict[str, Any] = {k: v for k, v in vars(args).items() if v is not None}
    for name in ("translation_languages", "cors_origins"):  # public_routes: Settings splits it
        if name in given:
            given[name] = [p.strip() for p in given[name].split(",") if p.strip()]
    return Settings(**given)


class DrainingServer(uvicorn.Server):
    """uvicorn's server whose signal handler only sets a flag; a task then drains and stops the server."""

    def __init__(self, config: uvicorn.Config, gateway: Gateway, drain_timeout_s: float) -> None:
        super().__init__(config)
        self.gateway = gateway
        self.drain_timeout_s = drain_timeout_s
        self._drain_requested = False
        self._watcher: asyncio.Task[None] | None = None
        self._heap_frozen = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Unlike uvicorn's handler, the signal is not re-raised at exit: a drained shutdown exits 0.
        if self._drain_requested:
            self.should_exit = True
            self.force_exit = True
            return
        self._drain_requested = True

    async def on_tick(self, counter: int) -> bool:
        if not self._heap_frozen and self.gateway.loaded:
            # What loading made lives as long as the process: out of the collector's way (no collection now,
            # requests may be arriving; the garbage of importing was collected before serving).
            freeze_startup_heap(collect=False)
            self._heap_frozen = True
        if self._drain_requested and self._watcher is None:
            self._watcher = asyncio.create_task(self._drain())
        return await super().on_tick(counter)

    async def _drain(self) -> None:
        self.gateway.begin_drain()
        finished = await self.gateway.drain(self.drain_timeout_s)
        if finished:
            log.info("drain finished", extra={"left": 0})
        else:
            # Out of time: what is left is answered with 503 (and its rows stopped) rather than cut off.
            left = self.gateway.abandon()
            log.warning("drain timed out", extra={"left": self.gateway.busy, "rows_abandoned": left})
        self.should_exit = True


def connection_limits(settings: Settings) -> ConnectionLimits:
    return ConnectionLimits(
        max_header_bytes=settings.max_header_bytes,
        max_url_bytes=min(settings.max_url_bytes, settings.max_header_bytes),
        header_timeout_s=settings.header_timeout_s,
        max_connections=settings.max_connections,
    )


def serve(settings: Settings) -> int:
    from gateway.app import create_app

    configure_logging(settings.log_level)
    route_stderr_to_log()
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=uvicorn_log_config(),
        access_log=False,
        http=limited_protocol(connection_limits(settings)),
        timeout_keep_alive=settings.keep_alive_timeout_s,
        timeout_graceful_shutdown=max(int(settings.drain_timeout_s), 1),
        server_header=False,
    )
    server = DrainingServer(config, app.gateway, settings.drain_timeout_s)
    gc.collect()  # the garbage of importing, before any request can wait on a collection
    log.info("serving", extra={"host": settings.host, "port": settings.port, "version": __version__})
    server.run()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: gateway serve [--flag value ...]   (gateway serve --help lists the flags)")
        return 0 if argv else 2
    if argv[0] == "--version":
        print(__version__)
        return 0
    if argv[0] != "serve":
        print(f"gateway: unknown command {argv[0]!r}; try 'gateway serve'", file=sys.stderr)
        return 2
    if any(a == "--workers" or a.startswith("--workers=") for a in argv[1:]):
        # Several processes would each load the model and batch on their own queue (and split the metrics).
        print(
            json.dumps(
                {
                    "level": "ERROR",
                    "message": "the gateway runs one process per device: start one `gateway serve` per GPU "
                    "(GATEWAY_DEVICE=cuda:N) behind a load balancer instead of --workers",
                }
            ),
            file=sys.stderr,
        )
        return 2
    try:
        settings = parse_settings(argv[1:])
    except ValidationError as exc:
        problems = [{"setting": ".".join(str(p) for p in e["loc"]), "problem": e["msg"]} for e in exc.errors()]
        print(json.dumps({"level": "ERROR", "message": "invalid settings", "errors": problems}), file=sys.stderr)
        return 2
    try:
        return serve(settings)
    except KeyFileError as exc:
        print(json.dumps({"level": "ERROR", "message": "invalid API keys", "error": str(exc)}), file=sys.stderr)
        return 2
