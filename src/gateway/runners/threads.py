"""How many torch threads a forward pass gets on the CPU: one core is left to the event loop, unless the pass is
big enough that the last core pays for itself.

The HTTP process (tokenizing, answering) needs a core too, and torch's threads wait on one another at each op:
a pool as large as the machine stalls a small model's every step whenever the event loop takes its core. But a
big pass (a long prompt's prefill, a decoding step over many rows of a larger model, or over a wide cache) runs
most of its time inside a few large ops that split well across threads, and gains far more from the last core
than it loses to the event loop. So the pool is sized per pass, by an estimate of its work:

- the matrix products: two operations per parameter (embeddings aside) per token in the pass;
- the attention: four per hidden unit per layer per (query, key) pair; in a decoding step (one query per row)
  weighted by ``_ATTENTION_WEIGHT``, because there it moves the cache through memory more than it computes (a
  step over a wide cache splits across threads better than its operation count says), while a prefill's
  attention computes as its count says. The weight is set where the gateway runs, with the HTTP process and
  its clients on the same cores: there a second thread for the demo model's decoding steps over a wide cache
  (a mixed load's prompts of up to 512 tokens) made its mix slower, though it speeds the same steps up when
  they run alone.

A pass above ``_LARGE_PASS`` gets every core, any other the cores less one. An operator's ``OMP_NUM_THREADS``
fixes the pool for every pass.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch

_ATTENTION_WEIGHT = 10
_LARGE_PASS = 5e8  # estimated operations of a pass that gets every core


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def small_pool(cores: int) -> int:
    """The pool of a small pass: the cores less the one the event loop needs."""
    return max(1, cores - 1)


def operator_pool() -> bool:
    """Whether the operator sized the pool (``OMP_NUM_THREADS``): then it is theirs for every pass."""
    return bool(os.environ.get("OMP_NUM_THREADS"))


def leave_a_core_to_the_event_loop() -> None:
    """Size torch's CPU thread pool to the cores less one, unless the operator chose (``OMP_NUM_THREADS``).

    torch takes every core by default, and its threads wait on one another at each op. The event loop (HTTP,
    tokenizing, answering) needs a core too: sharing one with the pool stalls every step of the model, which on a
    small machine costs more than the extra thread gains. This is the pool of loading and of small passes; the
    running batch gives a big pass every core (``ThreadPolicy``).
    """
    if not operator_pool():
        torch.set_num_threads(small_pool(usable_cores()))


class ThreadPolicy:
    """Sizes torch's CPU thread pool for each forward pass of one model (see the module's docstring)."""

    def __init__(self, model: Any, cores: int | None = None) -> None:
        cores = cores or usable_cores()
        self.small = small_pool(cores)
        self.large = cores
        config = getattr(model, "config", None)
        self._layers = int(getattr(config, "num_hidden_layers", 0) or 0)
        self._hidden = int(getattr(config, "hidden_size", 0) or 0)
        try:
            self._parameters = int(model.num_parameters(exclude_embeddings=True))
        except (AttributeError, TypeError):
            self._parameters = 0
        self.fixed = operator_pool() or not (self._layers and self._hidden)
        self._current = torch.get_num_threads()

    def work(self, rows: int, queries: int, keys: int) -> float:
        """Estimated operations of a pass of ``rows`` rows of ``queries`` new tokens over ``keys`` columns."""
        tokens = rows * queries
        attention = 4 * self._layers * self._hidden * tokens * keys
        weight = _ATTENTION_WEIGHT if queries == 1 else 1
        return 2 * self._parameters * tokens + weight * attention

    def threads_for(self, rows: int, queries: int, keys: int) -> int:
        return self.large if self.work(rows, queries, keys) > _LARGE_PASS else self.small

    def size_for(self, rows: int, queries: int, keys: int) -> None:
        """Set the pool for the next pass (nothing when it is fixed)."""
        if not self.fixed:
            self._use(self.threads_for(rows, queries, keys))

    def size_for_parts(self, parts: Sequence[tuple[int, int, int]]) -> None:
        """``size_for`` a pass made of several (rows, queries, keys) parts: a packed pass."""
        if not self.fixed:
            work = sum(self.work(*part) for part in parts)
            self._use(self.large if work > _LARGE_PASS else self.small)

    def _use(self, threads: int) -> None:
        if threads != self._current:
            torch.set_num_threads(threads)
            self._current = threads
