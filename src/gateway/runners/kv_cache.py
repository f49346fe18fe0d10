"""A KV cache for the running batch that a decoding step writes into instead of copying.

transformers' ``DynamicLayer`` appends each step's keys and values with ``torch.cat``: every step copies the
whole cache of every layer into a new tensor. On a running batch whose rows have long prompts (hundreds of
columns for 32 rows) that copy is most of a decoding step on the CPU. ``GrowingLayer`` keeps its keys and values
in a buffer with room for more columns and writes each step's column into it; ``keys`` and ``values`` are views of
the columns in use, so the attention reads exactly what ``DynamicLayer`` would give it.

Rows joining take the rows of finished ones in place when they fit (``place_rows``). Otherwise, when rows join or
leave, the running batch rebuilds the cache once (``rebuild_cache``): the rows it keeps and the
new ones are copied straight into new buffers with room, in the order the batch asks for (its rows ordered by
length: ``ragged``), each right-aligned and zero on its left (padding that the attention mask hides). Anyone
else may still assign new tensors to ``keys`` and ``values`` (transformers' own cache methods do): the next
``update`` sees that they are no longer views of its buffer and moves them into a new one. The logits are the
same as with ``DynamicLayer``: the same numbers, in the same shapes, only stored with spare columns beside them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

# Spare columns a new buffer gets: at least this many, or an eighth of the columns in use, whichever is more.
_MIN_ROOM = 32
_ROOM_SHARE = 8


# Rows prefilled in a decoding step's pass (``GrowingLayer.packing``): (slot, start, length): the row takes row
# ``slot`` of the cache, its tokens are ``length`` tokens of the packed pass from ``start`` on.
Segment = tuple[int, int, int]


class GrowingLayer(DynamicLayer):  # type: ignore[misc]  # transformers is untyped here
    """A ``DynamicLayer`` whose update writes into spare room instead of concatenating.

    While ``packing`` is set, a pass is packed (one sequence: each cache row's next token, then the tokens of
    rows being prefilled, ``Segment``s): the update writes each row's token into the next column of its row, then
    each segment right-aligned over its slot's row (zeros on its left), and returns the whole cache. On a new
    cache there are no rows yet: the segments are its rows, each right-aligned to the longest (a packed prefill).
    """

    def __init__(self) -> None:
        super().__init__()
        self._key_buffer: torch.Tensor | None = None
        self._value_buffer: torch.Tensor | None = None
        self.packing: Sequence[Segment] | None = None

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.packing is not None:
            return self._update_packed(key_states, value_states, self.packing)
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

    def _update_packed(
        self, key_states: torch.Tensor, value_states: torch.Tensor, segments: Sequence[Segment]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        rows = segments[0][1]  # the cache rows' next tokens come first: none in a new cache (a packed prefill)
        if rows:
            assert self._key_buffer is not None and self._value_buffer is not None and self.room() > 0
            used = self.keys.shape[2]
            end = used + 1
        else:  # a new cache: segment i is row i, the rows as wide as the longest
            assert not self.is_initialized and [slot for slot, _, _ in segments] == list(range(len(segments)))
            self.lazy_initialization(key_states, value_states)
            end = max(length for _, _, length in segments)
            self._key_buffer = _with_room(key_states, len(segments), end)
            self._value_buffer = _with_room(value_states, len(segments), end)
        for buffer, states in ((self._key_buffer, key_states), (self._value_buffer, value_states)):
            if rows:
                buffer[:rows, :, used] = states[0, :, :rows].transpose(0, 1)
            for slot, start, length in segments:
                buffer[slot, :, : end - length] = 0
                buffer[slot, :, end - length : end] = states[0, :, start : start + length]
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
        self._key_buffer = _with_room(key_states, key_states.shape[0], end)
        self._value_buffer = _with_room(value_states, value_states.shape[0], end)
        if used:
            self._key_buffer[:, :, :used] = self.keys
            self._value_buffer[:, :, :used] = self.values

    def rebuild(
        self, sources: Sequence[tuple[int, int]], first: int, width: int, new: tuple[torch.Tensor, torch.Tensor] | None
    ) -> None:
        """New buffers with room whose rows are ``sources`` in order: (0, row) is a row of this layer from column
        ``first`` on, (1, row) a row of the ``new`` (keys, values); each right-aligned to ``width`` columns, zeros
        on its left."""
        parts = [(self.keys, self.values, first)]
        if new is not None:
            parts.append((new[0], new[1], 0))
        keys, values = _with_room(self.keys, len(sources), width), _with_room(self.values, len(sources), width)
        for at, part, start, n in _runs(sources):
            part_keys, part_values, part_first = parts[part]
            columns = part_keys.shape[2] - part_first
            for target, source in ((keys, part_keys), (values, part_values)):
                target[at : at + n, :, : width - columns] = 0
                target[at : at + n, :, width - columns : width] = source[start : start + n, :, part_first:]
        self._key_buffer, self._value_buffer = keys, values
        self.keys, self.values = keys[:, :, :width], values[:, :, :width]

    def place(self, slots: Sequence[int], keys: torch.Tensor, values: torch.Tensor) -> None:
        """Write rows of ``keys`` and ``values`` (no wider than this layer) over rows ``slots`` of this layer, in
        place: each right-aligned, zeros on its left."""
        width, columns = self.keys.shape[2], keys.shape[2]
        for row, slot in enumerate(slots):
            for target, source in ((self.keys, keys), (self.values, values)):
                target[slot, :, : width - columns] = 0
                target[slot, :, width - columns :] = source[row]

    def room(self) -> int:
        """Columns a step can still write in place (0 once ``keys`` is no longer a view of the buffer)."""
        buffer = self._key_buffer
        if buffer is None or self.keys.data_ptr() != buffer.data_ptr() or self.keys.shape[0] != buffer.shape[0]:
            return 0
        return int(buffer.shape[2] - self.keys.shape[2])

    def reset(self) -> None:
        self._key_buffer = self._value_buffer = None
        super().reset()


def rebuild_cache(
    cache: DynamicCache, sources: Sequence[tuple[int, int]], first: int, width: int, new: DynamicCache | None = None
) -> None:
    """``GrowingLayer.rebuild`` on every layer of ``cache`` (with the same layer of ``new``, when given)."""
    for i, layer in enumerate(cache.layers):
        added = (new.layers[i].keys, new.layers[i].values) if new is not None else None
        layer.rebuild(sources, first, width, added)


def set_packing(cache: DynamicCache, segments: Sequence[Segment] | None) -> None:
    """Make the next passes over ``cache`` packed ones with ``segments`` (``GrowingLayer``), or plain (None)."""
    for layer in cache.layers:
        layer.packing = segments


def place_rows(cache: DynamicCache, slots: Sequence[int], new: DynamicCache) -> None:
    """``GrowingLayer.place`` on every layer of ``cache`` with the same layer of ``new``."""
    for layer, added in zip(cache.layers, new.layers, strict=True):
        layer.place(slots, added.keys, added.values)


def _with_room(like: torch.Tensor, rows: int, columns: int) -> torch.Tensor:
    """An empty buffer for ``rows`` rows of ``columns`` columns and spare ones, shaped and typed like ``like``."""
    room = max(_MIN_ROOM, columns // _ROOM_SHARE)
    return like.new_empty((rows, like.shape[1], columns + room, like.shape[3]))


def _runs(sources: Sequence[tuple[int, int]]) -> list[tuple[int, int, int, int]]:
    """``sources`` as (at, part, start, n): ``n`` rows of ``part`` from ``start`` on, going to rows ``at`` on;
    one copy per run of consecutive rows of one part."""
    runs: list[tuple[int, int, int, int]] = []
    for at, (part, row) in enumerate(sources):
        if runs and runs[-1][1] == part and runs[-1][2] + runs[-1][3] == row:
            last = runs[-1]
            runs[-1] = (last[0], part, last[2], last[3] + 1)
        else:
            runs.append((at, part, row, 1))
    return runs


def growing_cache(config: Any) -> DynamicCache:
    """A ``DynamicCache`` for ``config`` whose layers are ``GrowingLayer``s (the model must be one whose cache is
    plain ``DynamicLayer``s: ``supports_continuous_batching``)."""
    cache = DynamicCache(config=config)
    cache.layers = [GrowingLayer() for _ in cache.layers]
    return cache


def supports_continuous_batching(model: Any) -> bool:
    """Whether this model's cache is the plain ``DynamicCache`` the join/filter code knows how to reshape.

    Sliding-window, hybrid and recurrent caches keep more state than one tensor pair per layer; those models
    run each submission as a batch of its own instead.
    """
    cache = DynamicCache(config=model.config)
    return bool(cache.layers) and all(type(layer) is DynamicLayer for layer in cache.layers)
