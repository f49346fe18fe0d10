"""Decoding-step attention over the columns each group of rows uses, not the whole padded width.

The running batch is left-padded: its cache is as wide as the row with the longest prompt and answer so far,
and a row that joined with a short prompt attends over (masked) padding for all of that width. On a mixed
workload the batch is about twice as wide as an average row, and on the CPU SDPA's cost grows with the columns
it is given, masked or not.

So the running batch keeps its rows ordered by their first real column (``order_by_first_column``; rows that
join in place of finished ones go where they fit best) and splits them into a few groups of consecutive rows
(``plan``); a decoding step passes the plan to the model as the keyword
``ragged_rows``, which transformers hands on to the attention function. ``ragged_sdpa`` runs SDPA once per group
on that group's rows and on the columns from the group's first real column on: the columns it leaves out are
masked for every row of the group, so the output is the one SDPA gives over the whole width. Without a plan
(prefill, ``generate``, other callers) it is transformers' SDPA function unchanged.

``install`` puts ``ragged_sdpa`` in transformers' attention registry under ``sdpa`` (the registry's own way of
overriding an implementation); it is called by the running batch, never at import.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers.integrations import sdpa_attention

from gateway.runners.kv_cache import Segment

# One group of rows: rows [start, stop) attend over the columns from ``first`` on.
Group = tuple[int, int, int]

# A group costs one more SDPA call (about 40-50 us on this machine's CPU at any size). A split pays when the
# row-columns it drops, times the attention's width (heads x head dim), are more than this; measured on the demo
# model (4 x 16) and the bench Llama (6 x 64): a column of a row costs about 0.0003 us per unit of that width.
_SPLIT_COST = 160_000
_MAX_GROUPS = 8

_installed = False


def install() -> None:
    """Make transformers' ``sdpa`` attention take a ``ragged_rows`` plan (idempotent)."""
    global _installed
    if _installed:
        return
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    ALL_ATTENTION_FUNCTIONS["sdpa"] = ragged_sdpa
    _installed = True


def ragged_sdpa(
    module: Any,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    ragged_rows: Sequence[Group] | None = None,
    packed_rows: Sequence[Segment] | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers' SDPA attention, once per group of ``ragged_rows`` when given (outputs in row order); in a
    packed pass (``packed_rows``), the cache rows' queries that way and each prefilled row's causally over its
    own columns."""
    if packed_rows is not None:
        return _packed(module, query, key, value, attention_mask, ragged_rows, packed_rows, **kwargs)
    sdpa_attention_forward = sdpa_attention.sdpa_attention_forward
    if not ragged_rows or (len(ragged_rows) == 1 and ragged_rows[0][2] == 0):
        output: tuple[torch.Tensor, None] = sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
        return output
    outputs = []
    for start, stop, first in ragged_rows:
        mask = attention_mask[start:stop, ..., first:] if attention_mask is not None else None
        part, _ = sdpa_attention_forward(
            module, query[start:stop], key[start:stop, :, first:], value[start:stop, :, first:], mask, **kwargs
        )
        outputs.append(part)
    return torch.cat(outputs), None


def _packed(
    module: Any,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    ragged_rows: Sequence[Group] | None,
    segments: Sequence[Segment],
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """``query`` is one packed sequence (``kv_cache.GrowingLayer``): the next token of each of the cache's rows
    (none in a packed prefill), then the segments; ``key`` and ``value`` are the whole cache, segments written in
    place."""
    rows, end = segments[0][1], key.shape[2]
    outputs: list[torch.Tensor] = []
    if rows:
        decoding = query[0, :, :rows].transpose(0, 1).unsqueeze(2)  # (rows, heads, 1, head dim)
        outputs.append(
            ragged_sdpa(module, decoding, key, value, attention_mask, ragged_rows, **kwargs)[0].transpose(0, 1)
        )
    for slot, start, length in segments:
        part, _ = sdpa_attention.sdpa_attention_forward(
            module,
            query[:, :, start : start + length],
            key[slot : slot + 1, :, end - length :],
            value[slot : slot + 1, :, end - length :],
            None,
            **{**kwargs, "is_causal": True},
        )
        outputs.append(part)
    return torch.cat(outputs, dim=1), None


def order_by_first_column(mask: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    """The row order (longest first, ties in their present order) of a left-padded 2D ``mask`` and each row's
    first real column in that order."""
    firsts = mask.argmax(dim=1)  # the first 1 of each row: every row has at least one real column
    order = torch.argsort(firsts, stable=True)
    return order, firsts[order].tolist()


def nearest_slots(firsts: list[int], free: Sequence[int], wanted: Sequence[int]) -> list[int]:
    """For each first column in ``wanted``, the row of ``free`` (finished rows) whose first column is nearest,
    each taken once, so that rows written over them keep the batch roughly longest first; ``firsts`` (each row's
    first column) is updated for the rows taken. ``free`` must hold at least as many rows as ``wanted``."""
    free = list(free)
    slots = []
    for first in wanted:
        slot = min(free, key=lambda i: abs(firsts[i] - first))
        free.remove(slot)
        slots.append(slot)
        firsts[slot] = first
    return slots


def plan(firsts: Sequence[int], attention_width: int) -> list[Group]:
    """Groups of consecutive rows for ``firsts`` (each row's first real column; longest first is best, but any
    order is right): split where it drops the most row-columns, as long as a split pays for its SDPA call. A
    group starts at the first column of its longest row."""
    if not firsts:
        return []
    groups: list[Group] = [(0, len(firsts), min(firsts))]
    threshold = _SPLIT_COST / max(attention_width, 1)
    while len(groups) < _MAX_GROUPS:
        best_saving, best = 0, None
        for g, (start, stop, first) in enumerate(groups):
            right = list(firsts[start:stop])
            for i in range(len(right) - 2, -1, -1):  # the smallest first column from each row on
                right[i] = min(right[i], right[i + 1])
            left = firsts[start]
            for row in range(start + 1, stop):
                saving = (row - start) * (left - first) + (stop - row) * (right[row - start] - first)
                if saving > best_saving:
                    best_saving, best = saving, (g, row, left, right[row - start])
                left = min(left, firsts[row])
        if best is None or best_saving <= threshold:
            break
        g, row, left_first, right_first = best
        start, stop, _ = groups[g]
        groups[g : g + 1] = [(start, row, left_first), (row, stop, right_first)]
    return groups


def halves(firsts: Sequence[int]) -> list[Group]:
    """Two groups whatever the saving (rows in any order): for checking, once, that the model takes a plan."""
    middle = len(firsts) // 2
    if middle == 0:
        return [(0, len(firsts), min(firsts, default=0))]
    return [(0, middle, min(firsts[:middle])), (middle, len(firsts), min(firsts[middle:]))]


def attention_width(config: Any) -> int:
    """Heads times head dimension of a model's attention (what one column of one row costs in SDPA)."""
    heads = int(getattr(config, "num_attention_heads", 0) or 0)
    head_dim = getattr(config, "head_dim", None) or (int(getattr(config, "hidden_size", 0) or 0) // max(heads, 1))
    return heads * int(head_dim)
