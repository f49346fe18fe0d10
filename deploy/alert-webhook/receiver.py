"""A minimal Alertmanager webhook receiver: logs each notification as one JSON line.

It is the `alert-webhook` service of docker-compose.yml (the default receiver in
deploy/alertmanager/alertmanager.yml), so a fresh stack shows its alerts with
`docker compose logs -f alert-webhook`; tests/deploy/test_stack_e2e.py also runs
it in-process to see what Alertmanager sends. Standard library only.

    python receiver.py --host 0.0.0.0 --port 5001
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Sink = Callable[[dict[str, Any]], None]


def print_sink(payload: dict[str, Any]) -> None:
    """Write one compact line per alert in the notification."""
    for alert in payload.get("alerts", []):
        line = {
            "status": alert.get("status"),
            "alertname": alert.get("labels", {}).get("alertname"),
            "severity": alert.get("labels", {}).get("severity"),
            "labels": alert.get("labels", {}),
            "summary": alert.get("annotations", {}).get("summary"),
            "description": alert.get("annotations", {}).get("description"),
            "runbook": alert.get("annotations", {}).get("runbook"),
            "startsAt": alert.get("startsAt"),
            "receiver": payload.get("receiver"),
        }
        print(json.dumps(line, sort_keys=True), flush=True)


def make_server(host: str, port: int, sink: Sink = print_sink) -> ThreadingHTTPServer:
    """Build (not start) a server that passes every POSTed JSON body to `sink`."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            try:
                payload = json.loads(self.rfile.read(length) or b"{}")
            except json.JSONDecodeError:
                self.send_response(400)
                self.end_headers()
                return
            sink(payload)
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self) -> None:
            # health probe
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass  # one JSON line per alert is enough

    return ThreadingHTTPServer((host, port), Handler)


def serve_in_thread(server: ThreadingHTTPServer) -> threading.Thread:
    """Run `server` on a daemon thread; stop it with server.shutdown()."""
    thread = threading.Thread(target=server.serve_forever, name="alert-webhook", daemon=True)
    thread.start()
    return thread


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5001)
    args = parser.parse_args(argv)
    server = make_server(args.host, args.port)
    print(
        json.dumps({"message": f"alert webhook listening on {args.host}:{args.port}"}),
        flush=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
