"""Small tensor helpers of the decode paths: padding prompts into a batch, and telling whether two ways of
computing the same pass gave the same logits (the running batch checks its faster paths that way, once)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from gateway.runners.base import Row


def pad_rows(rows: Sequence[Row], pad_id: int, *, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(input ids, attention mask) of ``rows``, padded to the longest on the left (a causal LM continues from the
    right edge) or on the right (an encoder's input)."""
    mask = padded_mask([len(r.input_ids) for r in rows], left=left)
    ids = torch.full(mask.shape, pad_id, dtype=torch.long)
    ids[mask.bool()] = torch.tensor([i for row in rows for i in row.input_ids], dtype=torch.long)
    return ids, mask


def padded_mask(lengths: Sequence[int], *, left: bool, device: torch.device | None = None) -> torch.Tensor:
    """The 2D attention mask (1 real, 0 padding) of sequences of ``lengths`` padded to the longest, on the left or
    on the right."""
    columns = torch.arange(max(lengths), device=device)
    n = torch.tensor(lengths, device=device)[:, None]
    return (columns >= columns.numel() - n if left else columns < n).long()


def positions_of(mask: torch.Tensor) -> torch.Tensor:
    """Position ids of a left-padded 2D ``mask``: each row's real columns count from 0, its padding is 0."""
    return (mask.cumsum(-1) - 1).clamp(min=0)


def pad_left(t: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    """``t`` padded with zeros on the left of dimension ``dim`` to ``width``."""
    missing = width - t.shape[dim]
    if missing <= 0:
        return t
    pad = [0, 0] * (t.dim() - 1 - dim) + [missing, 0]
    return F.pad(t, pad)


def with_step_column(mask: torch.Tensor) -> torch.Tensor:
    """A running batch's 2D ``mask`` with the column a decoding step writes (real for every row)."""
    return torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)


def same_logits(a: torch.Tensor | None, b: torch.Tensor) -> bool:
    """Whether ``a`` (None: that way failed) chooses the same tokens as ``b`` and is close to it throughout."""
    return bool(
        a is not None
        and torch.equal(a.argmax(dim=-1), b.argmax(dim=-1))
        and torch.allclose(a.float(), b.float(), rtol=1e-3, atol=1e-4)
    )
