"""A system under test: a server process serving one model, and how to ask it to generate.

Scenarios drive a ``System`` and never a gateway in particular: the only protocol-specific part is its ``Wire``
(the request to send for a prompt, and the generated-token count read from the answer). The gateway speaks TGI's
``/generate``. A peer server of the same model (another serving stack, at its own defaults) is one more
``System``: its own ``ServerProcess`` command and its own ``Wire``; it has no gateway metrics, so its batch
columns stay empty.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx

from bench.gateway_process import ServerProcess, running, start_gateway
from bench.http_load import Connection, Response
from bench.workload import BASE_SETTINGS, BATCH


class Wire(Protocol):
    """How one protocol asks for a generation and reports its length."""

    def request(self, prompt: str, max_new_tokens: int, details: bool = False) -> tuple[str, dict[str, Any]]:
        """(path, JSON body) of a greedy generation of up to ``max_new_tokens`` for ``prompt``."""
        ...

    def generated_tokens(self, answer: object) -> int:
        """Generated tokens of a 200 answer to a request made with ``details``."""
        ...

    def stream_request(self, prompt: str, max_new_tokens: int) -> tuple[str, dict[str, Any]] | None:
        """(path, JSON body) of the same generation streamed as server-sent events; ``None``: no streaming."""
        ...

    def token_event(self, event: dict[str, Any]) -> bool:
        """Whether one event of such a stream carries a generated token."""
        ...


class TgiWire:
    """TGI's ``POST /generate``: ``inputs`` and ``parameters``; ``details`` holds ``generated_tokens``."""

    def request(self, prompt: str, max_new_tokens: int, details: bool = False) -> tuple[str, dict[str, Any]]:
        parameters: dict[str, Any] = {"max_new_tokens": max_new_tokens}
        if details:
            parameters["details"] = True
        return "/generate", {"inputs": prompt, "parameters": parameters}

    def generated_tokens(self, answer: object) -> int:
        assert isinstance(answer, dict)
        return int(answer["details"]["generated_tokens"])

    def stream_request(self, prompt: str, max_new_tokens: int) -> tuple[str, dict[str, Any]] | None:
        return "/generate_stream", {"inputs": prompt, "parameters": {"max_new_tokens": max_new_tokens}}

    def token_event(self, event: dict[str, Any]) -> bool:
        return event.get("token") is not None


class OpenAIWire:
    """What the OpenAI API's routes share: ``usage.completion_tokens`` holds the generated tokens, and a streamed
    request is the same body with ``stream``. Subclasses say the route and body (``request``) and which events
    carry a token (``token_event``)."""

    def generated_tokens(self, answer: object) -> int:
        assert isinstance(answer, dict)
        return int(answer["usage"]["completion_tokens"])

    def stream_request(self, prompt: str, max_new_tokens: int) -> tuple[str, dict[str, Any]] | None:
        path, body = self.request(prompt, max_new_tokens)
        return path, {**body, "stream": True}

    def request(self, prompt: str, max_new_tokens: int, details: bool = False) -> tuple[str, dict[str, Any]]:
        raise NotImplementedError


class OpenAIChatWire(OpenAIWire):
    """The OpenAI API's ``POST /v1/chat/completions``: the prompt as one user message through the model's chat
    template, greedy; ``usage.completion_tokens`` holds the generated tokens."""

    def request(self, prompt: str, max_new_tokens: int, details: bool = False) -> tuple[str, dict[str, Any]]:
        messages = [{"role": "user", "content": prompt}]
        return "/v1/chat/completions", {
            "model": "default",
            "messages": messages,
            "max_tokens": max_new_tokens,
            "temperature": 0,
        }

    def token_event(self, event: dict[str, Any]) -> bool:
        return any(c.get("delta", {}).get("content") for c in event.get("choices") or ())


@dataclass
class System:
    """A running server of ``model`` (its id), driven through ``wire``; ``metrics_model`` is the ``model``
    label of the gateway's series on its ``/metrics``, ``None`` for a system without them."""

    name: str
    model: str
    server: ServerProcess
    wire: Wire
    metrics_model: str | None = None

    @property
    def url(self) -> str:
        return self.server.url

    async def generate(
        self, conn: Connection, prompt: str, max_new_tokens: int, *, timeout_s: float, details: bool = False
    ) -> Response:
        """The system's answer to one generation request on ``conn``."""
        path, body = self.wire.request(prompt, max_new_tokens, details)
        return await conn.post_json(path, body, timeout_s=timeout_s)

    async def connections(self, n: int) -> list[Connection]:
        """The simulated users' keep-alive connections, opened before any timing starts."""
        conns = [Connection("127.0.0.1", self.server.port) for _ in range(n)]
        await asyncio.gather(*(c.open() for c in conns))
        return conns

    async def warm(self, max_new_tokens: int) -> None:
        """One request, then ``BATCH`` at once: the server's first calls and its first full batch done."""
        path, body = self.wire.request("warm up", max_new_tokens)
        async with httpx.AsyncClient(base_url=self.url, timeout=120) as client:
            for size in (1, BATCH):
                await asyncio.gather(*(client.post(path, json=body) for _ in range(size)))


def close_all(conns: list[Connection]) -> None:
    for c in conns:
        c.close()


@contextlib.contextmanager
def gateway(
    cache_dir: Path,
    log: Path,
    model: str,
    settings: Mapping[str, str],
    *,
    name: str = "gateway",
    env: Mapping[str, str] = {},
) -> Iterator[System]:
    """``gateway serve`` on the demo models of ``cache_dir`` (or ``settings["model"]``) with ``settings``, its JSON
    logs in ``log``, as the system serving ``model`` (its metrics label); stopped (SIGTERM, then SIGKILL after
    30 s) on the way out. ``env``: more environment (a candidate setting measured under its own name)."""
    server = start_gateway(cache_dir, {**BASE_SETTINGS, **settings}, env=env, log=log)
    with running(server, ready_timeout_s=120, stop_grace_s=30):
        yield System(name, model, server, TgiWire(), metrics_model=model)
