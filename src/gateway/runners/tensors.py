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
    longest = max(len(r.input_ids) for r in rows)
    ids = torch.full((len(rows), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), longest), dtype=torch.long)
    for i, row in enumerate(rows):
        n = len(row.input_ids)
        cols = slice(longest - n, longest) if left else slice(0, n)
        ids[i, cols] = torch.tensor(row.input_ids, dtype=torch.long)
        mask[i, cols] = 1
    return ids, mask


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
