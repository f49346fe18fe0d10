"""What a benchmark run sends and to what: prompts and workloads, concurrency levels, the gateway's settings,
the model cache."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Protocol

BATCH: Final = 32  # the in-process batched generate, and the concurrency the throughput target is set at
LEVELS: Final = (1, 8, 32, 64)
# Gateway settings of the run, by name (everything else at its default); the report shows them as variables.
GATEWAY_SETTINGS: Final = {"max_batch_size": "32", "max_batch_wait_ms": "50", "max_queue": "256"}
# Every gateway of the run allows the longest generation the bench asks for; not part of what is compared.
BASE_SETTINGS: Final = {"max_new_tokens_limit": "512"}
OVERLOAD_QUEUE: Final = 16
OVERLOAD_CLIENTS: Final = 64
OVERLOAD_SETTINGS: Final = {**GATEWAY_SETTINGS, "max_queue": str(OVERLOAD_QUEUE)}


def prompts(n: int) -> list[str]:
    """``n`` short, distinct prompts (the same ones every run)."""
    topics = ("the sea", "a robot", "the mountains", "a city at night", "an old map", "the first snow", "a letter")
    return [f"Request {i}: write a short story about {topics[i % len(topics)]}." for i in range(n)]


def demo_cache() -> Path:
    """Where the bench keeps its demo models (``GATEWAY_DEMO_CACHE_DIR`` if set)."""
    return Path(os.environ.get("GATEWAY_DEMO_CACHE_DIR", "") or tempfile.gettempdir() + "/llm-gateway-bench-demo")


class Workload(Protocol):
    """What each simulated user sends: the ``k``-th request of user ``user`` as (prompt, max_new_tokens)."""

    def request(self, user: int, k: int) -> tuple[str, int]: ...


@dataclass(frozen=True)
class Uniform:
    """The same kind of request from everyone: prompts from a fixed pool, ``max_new_tokens`` each."""

    max_new_tokens: int
    pool: tuple[str, ...] = field(default_factory=lambda: tuple(prompts(256)))

    def request(self, user: int, k: int) -> tuple[str, int]:
        return self.pool[(user * 7 + k) % len(self.pool)], self.max_new_tokens


_WORDS = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "a",
    "lazy",
    "dog",
    "while",
    "seven",
    "wizards",
    "quietly",
    "judge",
    "boxing",
    "matches",
    "near",
    "old",
    "harbors",
    "under",
    "grey",
    "skies",
    "and",
    "every",
    "morning",
    "a",
    "small",
    "boat",
    "leaves",
    "the",
    "bay",
    "carrying",
    "letters",
    "maps",
    "and",
    "bread",
]


@dataclass(frozen=True)
class Mixed:
    """A fixed-seed mix, the same every run: ``n`` requests with prompts of ``prompt_range`` tokens (characters:
    the bench's tokenizers are byte-level) and ``max_new_tokens`` in ``new_range``, both uniform; every
    ``stream_every``-th is streamed where the system streams (time to first token)."""

    n: int = 192
    prompt_range: tuple[int, int] = (8, 512)
    new_range: tuple[int, int] = (8, 256)
    stream_every: int = 8
    seed: int = 16

    def requests(self) -> list[tuple[str, int, bool]]:
        """(prompt, max_new_tokens, streamed) of every request, in the order they are sent."""
        import random

        rng = random.Random(self.seed)
        out = []
        for i in range(self.n):
            length = rng.randint(*self.prompt_range)
            words = f"Request {i}: " + " ".join(rng.choice(_WORDS) for _ in range(length // 3 + 1))
            out.append((words[:length], rng.randint(*self.new_range), i % self.stream_every == 0))
        return out
