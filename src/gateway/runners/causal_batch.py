"""Continuous batching for causal LMs: a running batch that rows join and leave between decoding steps.

The layout is TGI's ``CausalLMBatch``: rows are left-padded, the KV cache holds one column per past position
(``DynamicCache``, one ``(rows, heads, columns, head_dim)`` tensor pair per layer) and a 2D attention mask says
which columns are real for each row. Then:

- ``join``: new rows are prefilled together and their first token is chosen. When finished rows still ride
  along and the new rows fit the width, the prefill is packed into a decoding step of the running rows (one
  forward pass for both, ``packed_join``) and the new rows take the finished rows' places; failing that, they
  are prefilled in a pass of their own (prompts of mixed lengths packed into one sequence, without padding),
  and written over finished rows or the running cache is rebuilt with them (the narrower part padded on the
  left, masked out);
- ``step``: one forward pass over every running row with its last token; each row's token is chosen by its
  own ``Sampler`` and handed to the ``RowTracker``, which answers the rows that finished;
- finished rows leave the cache at a rebuild (rows joining that do not fit in place, a quarter of the batch
  finished, or the buffer out of room), and columns no remaining row uses are trimmed then.

Whenever the cache is rebuilt, the rows are put in order of their first real column (longest first), and a
decoding step's attention runs per group of rows over the columns that group uses (``ragged``): a mixed batch is
about twice as wide as its average row.

The cache's layers are ``GrowingLayer``s (``kv_cache``): a step writes its column into spare room instead of
copying the whole cache, which on long prompts was most of a step.

On the CPU, a decoding step hands the model its attention mask ready-made, as the boolean ``(rows, 1, 1,
columns)`` mask that transformers builds for SDPA from the 2D one (one query per row: the causal part is all
true), and the groups of rows for its attention. The ready mask skips transformers' mask builder, a noticeable
share of a step on a small model. Whether the model takes both and gives the same logits is checked once, on the
loop's first step with a padded row (without padding both masks are all true and prove nothing); until then, and
for good if the check fails, steps use the 2D mask over the whole width. On a GPU the 2D mask stays: with no
padding it lets SDPA pick its flash kernel, and the gain there is unmeasured.

Greedy output is the same as ``model.generate`` on the same prompts (left padding, same position ids).
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Sequence
from typing import Any

import torch
from transformers import DynamicCache

from gateway.runners import packed_join, ragged
from gateway.runners.base import Row
from gateway.runners.kv_cache import growing_cache, place_rows, rebuild_cache
from gateway.runners.logits import Alternatives
from gateway.runners.rows import RowState, RowTracker
from gateway.runners.sampler import Choice, Sampler
from gateway.runners.tensors import pad_left, pad_rows, positions_of, same_logits, with_step_column
from gateway.runners.threads import ThreadPolicy

# Rows joining: their states, sampler, prefilled cache, 2D mask, next ids and positions.
_NewRows = tuple[list[RowState], "Sampler", DynamicCache, torch.Tensor, torch.Tensor, torch.Tensor]

log = logging.getLogger("gateway.runner")


class BatchLost(Exception):
    """A pass that also decoded the running rows failed: the batch is cleared; every running row must fail."""


class CausalBatch:
    """The running rows of one causal LM (used from one thread)."""

    def __init__(
        self,
        model: Any,
        tracker: RowTracker,
        pad_id: int,
        device: torch.device,
        threads: ThreadPolicy | None = None,
    ) -> None:
        self.model = model
        self.threads = threads  # sizes torch's CPU pool for each pass (None: as it is)
        self.tracker = tracker
        self.pad_id = pad_id
        self.device = device
        self.states: list[RowState] = []
        self.samplers: list[Sampler] = []  # one per row (rows of one submission share theirs)
        self.cache: DynamicCache | None = None
        self.mask: torch.Tensor | None = None  # (rows, columns): 1 where the cache column is real
        self.next_ids: torch.Tensor | None = None  # (rows,): the token each row feeds at the next step
        self.positions: torch.Tensor | None = None  # (rows,): its position id
        self._keep_one_logit = True
        # Whether decoding steps pass the ready 4D mask and the groups of rows for attention (``ragged``): None
        # until checked on the first step with padding.
        self._ready_mask: bool | None = None if _attention(model) == "sdpa" and device.type == "cpu" else False
        self.groups: list[ragged.Group] = []
        self._attention_width = ragged.attention_width(model.config)
        # Whether rows join within a decoding step's pass (``_join_in_step``): None until checked on the first
        # join that can; only with the ready mask.
        self._packing: bool | None = None
        self._packed_prefill: bool | None = None  # the same for prefills without padding (``prefill``)
        if self._ready_mask is None:
            ragged.install()

    def __len__(self) -> int:
        return len(self.states)

    def clear(self) -> None:
        self.states, self.samplers = [], []
        self.cache = self.mask = self.next_ids = self.positions = None

    # -- join --

    def join(self, rows: Sequence[Row], sampler: Sampler) -> list[RowState]:
        """Prefill ``rows`` (one submission), choose their first token and add them to the running batch."""
        started = time.monotonic()
        if sampler.generator is None:
            # Rows that choose without randomness share a sampler when their settings are equal: one choice per
            # step for all of them, however many submissions they came in.
            sampler = next(
                (
                    s
                    for s in self.samplers
                    if s.generator is None and s.params == sampler.params and s.degrade == sampler.degrade
                ),
                sampler,
            )
        states = [self.tracker.start(row, sampler.seed, started) for row in rows]
        if self._packing is not False and self._ready_mask and self.cache is not None and self.mask is not None:
            slots = packed_join.slots_for(self.mask, self.states, rows) if self.cache.layers[0].room() else None
            if slots is not None:
                self._join_in_step(rows, states, sampler, slots)
                return states
        logits, cache, mask, positions = self.prefill(rows)
        chosen, logprobs, tops = sampler.choose(logits, states)
        self._note_batch_size(states)
        self._track(states, chosen, logprobs, tops)
        self._append(states, sampler, cache, mask, chosen, positions[:, -1] + 1)
        self._drop_finished()
        return states

    def _join_in_step(self, rows: Sequence[Row], states: list[RowState], sampler: Sampler, slots: list[int]) -> None:
        """One forward pass that is both a decoding step of the running rows and the prefill of ``rows``, which
        take the rows ``slots`` (finished ones riding along): ``packed_join``."""
        assert self.cache is not None and self.mask is not None and self.next_ids is not None
        assert self.positions is not None
        packed = packed_join.build(self.mask, self.next_ids, self.positions, rows, slots, self._attention_width)
        try:
            if self._packing is None:
                logits, self._packing = packed_join.check(self, rows, packed)
                log.info("packed joins checked", extra={"packed_joins": self._packing})
            else:
                logits = packed_join.forward(self.model, self.cache, packed, self.threads)
        except Exception as exc:  # the cache may be half written
            self.clear()
            raise BatchLost from exc
        running = packed.running
        chosen, logprobs, tops = self._choose(logits[:running])
        self._track(self.states, chosen, logprobs, tops)
        first, first_logprobs, first_tops = sampler.choose(logits[running:], states)
        self._note_batch_size(states)
        self._track(states, first, first_logprobs, first_tops)
        index = torch.tensor(slots, dtype=torch.long, device=self.device)
        self.mask, self.next_ids, self.positions = packed.mask, chosen, self.positions + 1
        self.next_ids[index] = first
        self.positions[index] = torch.tensor([len(r.input_ids) for r in rows], device=self.device)
        for slot, state in zip(slots, states, strict=True):
            self.states[slot], self.samplers[slot] = state, sampler
        self.groups = packed.groups
        self._drop_finished()

    def prefill(
        self, rows: Sequence[Row], *, padded: bool = False
    ) -> tuple[torch.Tensor, DynamicCache, torch.Tensor, torch.Tensor]:
        """A forward pass over ``rows``' prompts alone: their last logits, and their cache, 2D mask and position
        ids as if left-padded. Packed without padding (``packed_join.prefill``) where the padding would be dear
        and the model was checked to give the same that way; else ``padded``."""
        packs = not padded and self._ready_mask is not False and self._packed_prefill is not False
        if packs and packed_join.prefill_pays(rows):
            if self._packed_prefill is None:
                self._packed_prefill = packed_join.check_prefill(self, rows)
            if self._packed_prefill:
                return packed_join.prefill(self.model, rows, self.device, self.threads)
        ids, mask = pad_rows(rows, self.pad_id, left=True)
        ids, mask = ids.to(self.device), mask.to(self.device)
        position_ids = positions_of(mask)
        cache = growing_cache(self.model.config)
        return self.forward(ids, mask, position_ids, cache, prefill=True), cache, mask, position_ids

    def _note_batch_size(self, states: Sequence[RowState]) -> None:
        new_size = sum(not s.done for s in self.states) + len(states)
        for state in (*self.states, *states):
            state.batch_size = max(state.batch_size, new_size)

    def _append(
        self,
        states: list[RowState],
        sampler: Sampler,
        cache: DynamicCache,
        mask: torch.Tensor,
        next_ids: torch.Tensor,
        positions: torch.Tensor,
    ) -> None:
        if self.cache is None or self.mask is None or self.next_ids is None or self.positions is None:
            self.cache, self.mask, self.next_ids, self.positions = cache, mask, next_ids, positions
            self.states, self.samplers = list(states), [sampler] * len(states)
            self._reshape(list(range(len(states))))  # into length order
            return
        new = (states, sampler, cache, mask, next_ids, positions)
        if not self._join_in_place(new):
            keep = [i for i, s in enumerate(self.states) if not s.done]  # finished rows leave as the new ones join
            self._reshape(keep, new)

    def _join_in_place(self, new: _NewRows) -> bool:
        """New rows take the places of finished rows riding along, when there are enough of them and the new
        rows are no wider than the cache: the running rows' cache is not copied. Each takes the finished row
        whose first column is nearest its own, so that the rows stay roughly in length order."""
        assert self.cache is not None and self.mask is not None and self.next_ids is not None
        assert self.positions is not None
        states, sampler, cache, mask, next_ids, positions = new
        width = self.mask.shape[1]
        finished = [i for i, s in enumerate(self.states) if s.done]
        if len(finished) < len(states) or mask.shape[1] > width:
            return False
        firsts = self.mask.argmax(dim=1).tolist()
        slots = ragged.nearest_slots(firsts, finished, (width - mask.shape[1] + mask.argmax(dim=1)).tolist())
        place_rows(self.cache, slots, cache)
        index = torch.tensor(slots, dtype=torch.long, device=self.mask.device)
        self.mask[index] = pad_left(mask, width, dim=1)
        self.next_ids[index] = next_ids
        self.positions[index] = positions
        for slot, state in zip(slots, states, strict=True):
            self.states[slot], self.samplers[slot] = state, sampler
        self.groups = ragged.plan(firsts, self._attention_width)
        return True

    def _reshape(self, keep: list[int], new: _NewRows | None = None) -> None:
        """Keep rows ``keep`` (trimming columns that none of them uses), add the ``new`` rows, and order all of
        them by their first real column (longest first), planning the attention's groups of rows."""
        assert self.cache is not None and self.mask is not None and self.next_ids is not None
        assert self.positions is not None
        index = torch.tensor(keep, dtype=torch.long, device=self.mask.device)
        mask = self.mask[index]
        used = mask.any(dim=0).nonzero()
        first = int(used[0]) if used.numel() else mask.shape[1]  # columns left of this are padding for every row
        width = max(mask.shape[1] - first, new[3].shape[1] if new is not None else 0)
        mask = pad_left(mask[:, first:], width, dim=1)
        next_ids, positions = self.next_ids[index], self.positions[index]
        states = [self.states[i] for i in keep]
        samplers = [self.samplers[i] for i in keep]
        sources = [(0, i) for i in keep]
        if new is not None:
            new_states, sampler, _, new_mask, new_ids, new_positions = new
            mask = torch.cat([mask, pad_left(new_mask, width, dim=1)])
            next_ids, positions = torch.cat([next_ids, new_ids]), torch.cat([positions, new_positions])
            states.extend(new_states)
            samplers.extend([sampler] * len(new_states))
            sources.extend((1, i) for i in range(len(new_states)))
        order, firsts = ragged.order_by_first_column(mask)
        rows = order.tolist()
        sources = [sources[i] for i in rows]
        if sources != [(0, i) for i in range(len(self.states))] or first:  # else the cache is as it should be
            rebuild_cache(self.cache, sources, first, width, new[2] if new is not None else None)
        self.mask, self.next_ids, self.positions = mask[order], next_ids[order], positions[order]
        self.states = [states[i] for i in rows]
        self.samplers = [samplers[i] for i in rows]
        self.groups = ragged.plan(firsts, self._attention_width)

    # -- step --

    def step(self) -> None:
        """One decoding step for every running row; finished rows leave the batch."""
        assert self.cache is not None and self.mask is not None and self.next_ids is not None
        assert self.positions is not None
        if not self.cache.layers[0].room():  # rebuilt with room anyway: leave finished rows and trim columns now
            self._reshape([i for i, s in enumerate(self.states) if not s.done])
            assert self.mask is not None and self.next_ids is not None and self.positions is not None
        mask = with_step_column(self.mask)
        logits = self._decode(mask)
        self.mask = mask
        chosen, logprobs, tops = self._choose(logits)
        self._track(self.states, chosen, logprobs, tops)
        self.next_ids = chosen
        self.positions = self.positions + 1
        self._drop_finished()

    def _decode(self, mask: torch.Tensor) -> torch.Tensor:
        """The next-token logits of every running row; ``mask`` is the 2D mask with this step's column."""
        assert self.cache is not None and self.next_ids is not None and self.positions is not None
        ids, positions = self.next_ids[:, None], self.positions[:, None]
        if self._ready_mask:
            return self.forward(ids, mask[:, None, None, :].bool(), positions, self.cache, groups=self.groups)
        if self._ready_mask is False or bool(mask.all()):
            return self.forward(ids, mask, positions, self.cache)
        # The first step with padding: the 2D mask on the cache, then the ready mask and two groups of rows (however
        # little they save) on a copy of it as it was.
        before = copy.deepcopy(self.cache)
        logits = self.forward(ids, mask, positions, self.cache)
        try:
            trial: torch.Tensor | None = self.forward(
                ids, mask[:, None, None, :].bool(), positions, before, groups=ragged.halves(mask.argmax(1).tolist())
            )
        except Exception:  # refused (or out of memory): this step is already computed, with the 2D mask
            trial = None
        del before
        self._ready_mask = same_logits(trial, logits)
        log.info("decoding-step attention mask checked", extra={"ready_mask": self._ready_mask})
        return logits

    def _choose(self, logits: torch.Tensor) -> Choice:
        first = self.samplers[0]
        if all(s is first for s in self.samplers):
            return first.choose(logits, self.states)
        chosen = torch.empty(logits.shape[0], dtype=torch.long, device=logits.device)
        logprobs = torch.empty(logits.shape[0], dtype=torch.float32, device=logits.device)
        tops: list[Alternatives] | None = None
        groups: dict[int, tuple[Sampler, list[int]]] = {}
        for i, sampler in enumerate(self.samplers):
            groups.setdefault(id(sampler), (sampler, []))[1].append(i)
        for sampler, rows in groups.values():
            index = torch.tensor(rows, device=logits.device)
            ids, lps, group_tops = sampler.choose(logits[index], [self.states[i] for i in rows])
            chosen[index], logprobs[index] = ids, lps
            if group_tops is not None:
                if tops is None:
                    tops = [[] for _ in self.states]
                for i, alternatives in zip(rows, group_tops, strict=True):
                    tops[i] = alternatives
        return chosen, logprobs, tops

    def forward(
        self,
        ids: torch.Tensor,
        mask: torch.Tensor,
        positions: torch.Tensor,
        cache: DynamicCache,
        *,
        prefill: bool = False,
        groups: list[ragged.Group] | None = None,
    ) -> torch.Tensor:
        if self.threads is not None:
            self.threads.size_for(ids.shape[0], ids.shape[1], mask.shape[-1])
        kwargs: dict[str, Any] = {
            "input_ids": ids,
            "attention_mask": mask,
            "position_ids": positions,
            "past_key_values": cache,
            "use_cache": True,
        }
        if groups:
            kwargs["ragged_rows"] = groups
        if prefill and self._keep_one_logit:
            try:
                logits: torch.Tensor = self.model(**kwargs, logits_to_keep=1).logits[:, -1, :]
                return logits
            except TypeError:
                self._keep_one_logit = False  # an architecture without ``logits_to_keep``
        logits = self.model(**kwargs).logits[:, -1, :]
        return logits

    def _track(
        self,
        states: Sequence[RowState],
        chosen: torch.Tensor,
        logprobs: torch.Tensor,
        tops: list[Alternatives] | None,
    ) -> None:
        ids = chosen.tolist()
        lps = logprobs.tolist()
        now = time.monotonic()
        step = self.tracker.step
        if tops is None:
            for state, token_id, logprob in zip(states, ids, lps, strict=True):
                if not state.done:
                    step(state, token_id, logprob, now)
            return
        for state, token_id, logprob, top in zip(states, ids, lps, tops, strict=True):
            if not state.done:
                step(state, token_id, logprob, now, top)

    # -- leave --

    def _drop_finished(self) -> None:
        """Finished rows ride along (tokens ignored) until rows join or they are a quarter of the batch: one copy
        of the cache for many rows leaving. One leaves at once when its position passes every running row's
        (riding on could take it past the model's last position: a crash with learned position embeddings)."""
        keep = [i for i, s in enumerate(self.states) if not s.done]
        if len(keep) == len(self.states):
            return
        if not keep:
            self.clear()
            return
        assert self.positions is not None
        positions = self.positions.tolist()
        furthest = max(positions[i] for i in keep)
        if (len(self.states) - len(keep)) * 4 >= len(self.states) or max(positions) > furthest:
            self._reshape(keep)


def _attention(model: Any) -> str | None:
    implementation = getattr(getattr(model, "config", None), "_attn_implementation", None)
    return implementation if isinstance(implementation, str) else None
