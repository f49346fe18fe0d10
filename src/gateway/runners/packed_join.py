"""Rows that join the running batch within a decoding step's forward pass.

A join used to cost a forward pass of its own (the new rows' prefill) between two decoding steps; on a small
model a pass is mostly fixed overhead, about as dear as a step, and on a mixed workload rows join every few
steps. A packed pass does both at once: one sequence of the running rows' next tokens (one each) followed by
each new row's prompt, so the matrix products run once over all of them. The new rows take the places of finished
rows riding along in the cache (``slots_for``), so nothing else moves:

- position ids are per token (each running row's next position, then 0.. for each prompt);
- ``kv_cache.GrowingLayer`` (``packing`` set) writes each running row's key into its next column and each
  prompt's keys right-aligned over its slot's row, and hands the attention the whole cache;
- ``ragged.ragged_sdpa`` (``packed_rows``) runs the running rows' attention as a decoding step does, in groups
  over the ready mask, and each prompt's causally over its own columns;
- ``logits_to_keep`` keeps each running row's logits and each prompt's last.

The batch checks this once, on its first packed join (``check``), against the same done in two passes; packing
stays off for a model whose logits differ, or that refuses the pass. Only with the ready mask (CPU, SDPA).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from gateway.runners import ragged
from gateway.runners.base import Row
from gateway.runners.kv_cache import Segment, place_rows, set_packing
from gateway.runners.rows import RowState
from gateway.runners.tensors import same_logits
from gateway.runners.threads import ThreadPolicy

if TYPE_CHECKING:
    from gateway.runners.causal_batch import CausalBatch


@dataclass
class PackedPass:
    """The inputs of one packed pass over ``running`` cache rows, and what the batch keeps of it."""

    ids: torch.Tensor  # (1, running + prompt tokens)
    positions: torch.Tensor  # (1, running + prompt tokens)
    mask: torch.Tensor  # (running, columns + 1): the step's 2D mask, each slot's row now its new row's
    groups: list[ragged.Group]
    segments: list[Segment]
    keep: torch.Tensor  # the positions in the sequence whose logits are kept: every running row's, each prompt's last

    @property
    def running(self) -> int:
        return int(self.mask.shape[0])

    @property
    def slots(self) -> list[int]:
        return [slot for slot, _, _ in self.segments]


def slots_for(mask: torch.Tensor, states: Sequence[RowState], rows: Sequence[Row]) -> list[int] | None:
    """The finished rows of a batch (2D ``mask``, row ``states``) that ``rows`` can take in a packed pass, each
    the one whose first column is nearest the new row's; None when there are too few, or a row is wider than the
    cache will be after the step."""
    finished = [i for i, s in enumerate(states) if s.done]
    end = mask.shape[1] + 1
    if len(finished) < len(rows) or any(len(row.input_ids) > end for row in rows):
        return None
    return ragged.nearest_slots(mask.argmax(dim=1).tolist(), finished, [end - len(row.input_ids) for row in rows])


def build(
    mask: torch.Tensor,
    next_ids: torch.Tensor,
    positions: torch.Tensor,
    rows: Sequence[Row],
    slots: Sequence[int],
    attention_width: int,
) -> PackedPass:
    """The packed pass of a batch (2D ``mask``, each row's next id and position) in which ``rows`` take
    ``slots``."""
    running, device = mask.shape[0], mask.device
    mask = torch.cat([mask, mask.new_ones((running, 1))], dim=1)
    end = mask.shape[1]
    segments: list[Segment] = []
    ids, position_ids = [next_ids], [positions]
    start = running
    for row, slot in zip(rows, slots, strict=True):
        length = len(row.input_ids)
        mask[slot] = 0
        mask[slot, end - length :] = 1
        segments.append((slot, start, length))
        start += length
        ids.append(torch.tensor(row.input_ids, dtype=torch.long, device=device))
        position_ids.append(torch.arange(length, dtype=torch.long, device=device))
    return PackedPass(
        ids=torch.cat(ids)[None],
        positions=torch.cat(position_ids)[None],
        mask=mask,
        groups=ragged.plan(mask.argmax(dim=1).tolist(), attention_width),
        segments=segments,
        keep=torch.tensor([*range(running), *(s + n - 1 for _, s, n in segments)], device=device),
    )


def forward(model: Any, cache: Any, packed: PackedPass, threads: ThreadPolicy | None) -> torch.Tensor:
    """The logits at ``packed.keep`` of the packed pass over ``cache`` (which it updates)."""
    if threads is not None:
        threads.size_for_parts([(packed.running, 1, packed.mask.shape[1]), *((1, n, n) for _, _, n in packed.segments)])
    set_packing(cache, packed.segments)
    try:
        output = model(
            input_ids=packed.ids,
            attention_mask=packed.mask[:, None, None, :].bool(),
            position_ids=packed.positions,
            past_key_values=cache,
            use_cache=True,
            ragged_rows=packed.groups,
            packed_rows=packed.segments,
            logits_to_keep=packed.keep,
        )
    finally:
        set_packing(cache, None)
    logits: torch.Tensor = output.logits[0]
    return logits


def check(batch: CausalBatch, rows: Sequence[Row], packed: PackedPass) -> tuple[torch.Tensor, bool]:
    """The first packed join of ``batch``: the packed pass on a copy of its cache, and the same in two passes (a
    decoding step, then the prompts prefilled and written over the slots) on the cache itself. Returns the
    two-pass logits (the batch is now as the packed pass would leave it) and whether the packed ones are the
    same, the slots' aside (finished rows: theirs are ignored)."""
    assert batch.cache is not None and batch.mask is not None
    assert batch.next_ids is not None and batch.positions is not None
    trial = copy.deepcopy(batch.cache)
    try:
        packed_logits: torch.Tensor | None = forward(batch.model, trial, packed, batch.threads)
    except Exception:  # refused (or out of memory): the batch's own cache was not touched
        packed_logits = None
    del trial
    mask = torch.cat([batch.mask, batch.mask.new_ones((packed.running, 1))], dim=1)
    groups = ragged.plan(mask.argmax(dim=1).tolist(), ragged.attention_width(batch.model.config))
    ids, positions = batch.next_ids[:, None], batch.positions[:, None]
    stepped = batch.forward(ids, mask[:, None, None, :].bool(), positions, batch.cache, groups=groups)
    prefilled, cache, _, _ = batch.prefill(rows)
    place_rows(batch.cache, packed.slots, cache)
    logits = torch.cat([stepped, prefilled])
    compared = torch.tensor([i for i in range(logits.shape[0]) if i not in packed.slots], device=logits.device)
    return logits, same_logits(packed_logits[compared] if packed_logits is not None else None, logits[compared])
