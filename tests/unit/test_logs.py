"""``gateway.logs`` in a real child process: whatever it writes to stderr (a Python warning, ``print`` to
``sys.stderr``, a C library's write to descriptor 2, an uncaught exception's traceback) comes out as JSON lines."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"

CHILD = """
import os, sys, warnings
from gateway.logs import configure_logging, route_stderr_to_log
configure_logging("info")
route_stderr_to_log()
warnings.warn("a library's warning", FutureWarning)
print("plain text on sys.stderr", file=sys.stderr)
os.write(2, b"a C library writes to fd 2\\n")
raise RuntimeError("uncaught at the end")
"""


def test_everything_written_to_stderr_becomes_a_json_line() -> None:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    done = subprocess.run(
        [sys.executable, "-c", CHILD], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60
    )
    assert done.returncode == 1
    lines = done.stdout.decode().splitlines()
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all(isinstance(r, dict) for r in records)
    messages = "\n".join(r["message"] for r in records)
    for text in ("a library's warning", "plain text on sys.stderr", "a C library writes to fd 2", "uncaught at the"):
        assert text in messages, lines
    warning = next(r for r in records if "a library's warning" in r["message"])
    assert warning["logger"] == "py.warnings" and warning["level"] == "WARNING"
    assert {r["logger"] for r in records if "fd 2" in r["message"]} == {"gateway.stderr"}
