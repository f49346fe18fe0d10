"""The startup heap and Python's cyclic garbage collector.

Importing transformers, tokenizers, FastAPI and pydantic (and torch, in a model process) leaves a few hundred
thousand objects that live as long as the process. A full collection walks all of them while the event loop (or
the decode loop) stands still, and every request in flight waits. ``gc.freeze`` moves the objects alive now out of
the collector's sight, so later full collections walk only what was made since (vLLM's API server does the same
after start-up).
"""

from __future__ import annotations

import gc
import logging

log = logging.getLogger("gateway.heap")


def freeze_startup_heap(*, collect: bool = True) -> int:
    """Freeze the objects alive now; returns how many are frozen in all.

    ``collect`` first frees the garbage of start-up, so that it is not kept for the life of the process; it is
    one full collection, for a moment when nothing is waiting on this process.
    """
    if collect:
        gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    log.info("startup heap frozen", extra={"objects": frozen})
    return frozen
