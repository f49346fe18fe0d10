"""A KV cache for the running batch that a decoding step writes into instead of copying.

transformers' ``DynamicLayer`` appends each step's keys and values with ``torch.cat``: every step copies the
whole cache of every layer into a new tensor. On a running batch whose rows have long prompts (hundreds of
columns for 32 rows) that copy is most of a decoding step on the CPU. ``GrowingLayer`` keeps its keys and values
in a buffer with room for more columns and writes each step's column into it; ``keys`` and ``values`` are views of
the columns in use, so the attention reads exactly what ``DynamicLayer`` would give it.

The running batch still reshapes the cache by assigning new tensors to ``keys`` and ``values`` (rows joining,
rows leaving, padding trimmed); the next ``update`` sees that they are no longer views of its buffer and moves
them into a new one, with room again. The logits are the same as with ``DynamicLayer``: the same numbers, in the
same shapes, only stored with spare columns beside them.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

# Spare columns a new buffer gets: at least this many, or an eighth of the columns in use, whichever is more.
_MIN_ROOM = 32
_ROOM_SHARE = 8


class GrowingLayer(DynamicLayer):  # type: ignore[misc]  # transformers is untyped here
    """A ``DynamicLayer`` whose update writes into spare room instead of concatenating."""

    def __init__(self) -> None:
        super().__init__()
        self._key_buffer: torch.Tensor | None = None
        self._value_buffer: torch.Tensor | None = None

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        used = self.get_seq_length()
        end = used + key_states.shape[-2]
        if not self._fits(key_states, end):
            self._move_to_new_buffers(key_states, value_states, used, end)
        assert self._key_buffer is not None and self._value_buffer is not None
        self._key_buffer[:, :, used:end] = key_states
        self._value_buffer[:, :, used:end] = value_states
        self.keys = self._key_buffer[:, :, :end]
        self.values = self._value_buffer[:, :, :end]
        return self.keys, self.values

    def _fits(self, key_states: torch.Tensor, end: int) -> bool:
        """Whether ``keys`` is still the start of the buffer (nobody assigned a new tensor) and has room."""
        buffer = self._key_buffer
        return (
            buffer is not None
            and self.keys.dim() == 4
            and self.keys.data_ptr() == buffer.data_ptr()
            and self.keys.stride() == buffer.stride()
            and self.keys.shape[:2] == buffer.shape[:2]
            and key_states.shape[0] == buffer.shape[0]
            and end <= buffer.shape[2]
        )

    def _move_to_new_buffers(self, key_states: torch.Tensor, value_states: torch.Tensor, used: int, end: int) -> None:
        rows, heads, _, _ = key_states.shape
        columns = end + max(_MIN_ROOM, end // _ROOM_SHARE)
        self._key_buffer = key_states.new_empty((rows, heads, columns, key_states.shape[-1]))
        self._value_buffer = value_states.new_empty((rows, heads, columns, value_states.shape[-1]))
        if used:
            self._key_buffer[:, :, :used] = self.keys
            self._value_buffer[:, :, :used] = self.values

    def reset(self) -> None:
        self._key_buffer = self._value_buffer = None
        super().reset()


def growing_cache(config: Any) -> DynamicCache:
    """A ``DynamicCache`` for ``config`` whose layers are ``GrowingLayer``s (the model must be one whose cache is
    plain ``DynamicLayer``s: ``supports_continuous_batching``)."""
    cache = DynamicCache(config=config)
    cache.layers = [GrowingLayer() for _ in cache.layers]
    return cache
