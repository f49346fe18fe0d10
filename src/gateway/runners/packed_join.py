"""Packed passes: rows that join the running batch within a decoding step's forward pass, and prompts of mixed
lengths prefilled in one sequence without padding.

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

A prefill in a pass of its own (the first group of a load, a group that cannot join in a step) is packed the same
way with no running rows (``prefill``): the prompts one after another, each written right-aligned into a new
cache as wide as the longest, so the batch gets what a left-padded prefill leaves without computing the padding.
Only where the padding would be dear (``prefill_pays``), and checked once too (``check_prefill``).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from gateway.runners import ragged
from gateway.runners.base import Row
from gateway.runners.kv_cache import Segment, growing_cache, place_rows, set_packing
from gateway.runners.rows import RowState
from gateway.runners.tensors import padded_mask, positions_of, same_logits, with_step_column
from gateway.runners.threads import ThreadPolicy

if TYPE_CHECKING:
    from gateway.runners.causal_batch import CausalBatch

log = logging.getLogger("gateway.runner")


# A prefill's outcome: the rows' last logits, their cache, 2D mask and position ids.
Prefilled = tuple[torch.Tensor, Any, torch.Tensor, torch.Tensor]


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
    mask = with_step_column(mask)
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
    mask = with_step_column(batch.mask)
    groups = ragged.plan(mask.argmax(dim=1).tolist(), ragged.attention_width(batch.model.config))
    ids, positions = batch.next_ids[:, None], batch.positions[:, None]
    stepped = batch.forward(ids, mask[:, None, None, :].bool(), positions, batch.cache, groups=groups)
    prefilled, cache, _, _ = batch.prefill(rows, padded=True)
    place_rows(batch.cache, packed.slots, cache)
    logits = torch.cat([stepped, prefilled])
    compared = torch.tensor([i for i in range(logits.shape[0]) if i not in packed.slots], device=logits.device)
    return logits, same_logits(packed_logits[compared] if packed_logits is not None else None, logits[compared])


def prefill(model: Any, rows: Sequence[Row], device: torch.device, threads: ThreadPolicy | None) -> Prefilled:
    """``rows``' prompts in one packed pass without padding: their last logits, and a new cache, 2D mask and
    position ids as a left-padded prefill leaves them (each row right-aligned to the longest, zeros on its left).

    A padded prefill computes every row as long as the longest: on prompts of mixed lengths (the first group of
    a mixed load, a group joining in a pass of its own) about half of its work is padding. Packed, the matrix
    products run over the real tokens only, and each prompt's attention is causal over its own columns."""
    lengths = [len(row.input_ids) for row in rows]
    segments: list[Segment] = []
    start = 0
    for slot, length in enumerate(lengths):
        segments.append((slot, start, length))
        start += length
    mask = padded_mask(lengths, left=True, device=device)
    if threads is not None:
        threads.size_for_parts([(1, n, n) for n in lengths])
    cache = growing_cache(model.config)
    set_packing(cache, segments)
    try:
        output = model(
            input_ids=torch.tensor([i for row in rows for i in row.input_ids], dtype=torch.long, device=device)[None],
            attention_mask=mask[:, None, None, :].bool(),
            position_ids=torch.cat([torch.arange(n, dtype=torch.long, device=device) for n in lengths])[None],
            past_key_values=cache,
            use_cache=True,
            packed_rows=segments,
            logits_to_keep=torch.tensor([s + n - 1 for _, s, n in segments], device=device),
        )
    finally:
        set_packing(cache, None)
    logits: torch.Tensor = output.logits[0]
    return logits, cache, mask, positions_of(mask)


# A packed prefill pays when the rows would carry at least this many columns of padding each, on average: it
# saves the padding's work but runs each prompt's attention in a call of its own (about 45 us per layer). Measured
# on 32 rows: prompts of 8-512 tokens, demo 101 to 45 ms and bench Llama 2.8 to 1.4 s; 20-30 tokens (5 columns of
# padding each), demo 5.4 to 7.1 ms (slower) and bench Llama 119 to 108 ms.
_PAYING_PADDING = 32


def prefill_pays(rows: Sequence[Row]) -> bool:
    """Whether ``rows`` would carry enough padding in a padded prefill for a packed one to pay."""
    lengths = [len(row.input_ids) for row in rows]
    return len(lengths) > 1 and len(lengths) * max(lengths) - sum(lengths) >= _PAYING_PADDING * len(lengths)


def check_prefill(batch: CausalBatch, rows: Sequence[Row]) -> bool:
    """The first packed prefill of ``batch``: whether the longest and the shortest of ``rows``, prefilled packed,
    give the same logits and the same cache (real columns) as prefilled padded. False if the model refuses."""
    pair = [max(rows, key=lambda r: len(r.input_ids)), min(rows, key=lambda r: len(r.input_ids))]
    logits, cache, _, _ = batch.prefill(pair, padded=True)
    try:
        packed_logits, packed_cache, _, _ = prefill(batch.model, pair, batch.device, batch.threads)
    except Exception:
        log.info("packed prefill checked", extra={"packed_prefill": False})
        return False
    lengths = [len(row.input_ids) for row in pair]
    same = same_logits(packed_logits, logits) and all(
        torch.allclose(a[i, :, -n:], b[i, :, -n:], rtol=1e-3, atol=1e-4)
        for ours, theirs in zip(packed_cache.layers, cache.layers, strict=True)
        for a, b in ((ours.keys, theirs.keys), (ours.values, theirs.values))
        for i, n in enumerate(lengths)
    )
    log.info("packed prefill checked", extra={"packed_prefill": same})
    return same
