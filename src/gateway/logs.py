"""JSON logging through python-json-logger: one object per line on stdout, for every logger (encoded with
orjson, python-json-logger's own orjson formatter: one access line per request)."""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
from typing import Any

from pythonjsonlogger.orjson import OrjsonFormatter

ACCESS_LOGGER = "gateway.access"


def json_formatter() -> logging.Formatter:
    return OrjsonFormatter(
        "%(levelname)s %(name)s %(message)s",
        rename_fields={"levelname": "level", "name": "logger"},
        timestamp=True,
    )


class _DropTerminalColours(logging.Filter):
    """uvicorn attaches an ANSI-coloured copy of some messages; JSON logs do not want it."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.__dict__.pop("color_message", None)
        return True


def configure_logging(level: str = "info") -> None:
    """Route every logger (ours, uvicorn's, transformers') to one JSON handler on stdout."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(json_formatter())
    handler.addFilter(_DropTerminalColours())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        lg = logging.getLogger(name)
        lg.handlers[:] = []
        lg.propagate = True
    logging.getLogger("uvicorn.access").disabled = True  # one line per request comes from our access log
    logging.captureWarnings(True)  # Python warnings (a library's FutureWarning) as JSON lines, not stderr text
    # Fields no line carries, each costly to gather per record (the logging HOWTO's "Optimization" section):
    # the caller's file and line (a walk up the stack), thread, process and multiprocessing names.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


def uvicorn_log_config() -> dict[str, Any]:
    """Keep uvicorn from installing its own text handlers."""
    return {"version": 1, "disable_existing_loggers": False}


STDERR_LOGGER = "gateway.stderr"


def route_stderr_to_log() -> None:
    """Make whatever this process writes to stderr a JSON line each: Python's ``sys.stderr`` and what C libraries
    (torch's) write to file descriptor 2 alike. Descriptor 2 becomes a pipe that a thread reads, logging each line
    as a warning of ``gateway.stderr``. At exit the pipe is closed and read to its end (an uncaught exception's
    traceback, printed just before, is logged too)."""
    read_fd, write_fd = os.pipe()
    saved = os.dup(2)
    os.dup2(write_fd, 2)
    os.close(write_fd)
    log = logging.getLogger(STDERR_LOGGER)

    def pump() -> None:
        with os.fdopen(read_fd, "rb") as pipe:
            for raw in pipe:
                line = raw.decode("utf-8", "replace").rstrip()
                if line:
                    log.warning(line)

    thread = threading.Thread(target=pump, name="gateway-stderr", daemon=True)
    thread.start()

    def close() -> None:
        sys.stderr.flush()
        os.dup2(saved, 2)  # the pipe's last writer gone: the thread reads to its end and stops
        thread.join(2.0)

    atexit.register(close)
