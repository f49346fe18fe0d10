"""The decode paths' tensor helpers: prompts padded into a batch, and the position ids of a left-padded mask."""

from __future__ import annotations

import time

import torch

from gateway.runners.base import Row
from gateway.runners.tensors import pad_rows, padded_mask, positions_of
from gateway.types import GenerationParams
from tests.serving_helpers import KeepOutcome


def _rows(*prompts: list[int]) -> list[Row]:
    return [Row(p, GenerationParams(max_new_tokens=1), time.monotonic() + 60, KeepOutcome()) for p in prompts]


def test_left_padding_puts_each_prompt_at_the_right_edge() -> None:
    ids, mask = pad_rows(_rows([5, 6, 7], [8], [9, 10]), pad_id=0, left=True)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8], [0, 9, 10]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1], [0, 1, 1]]
    assert ids.dtype == mask.dtype == torch.long


def test_right_padding_keeps_each_prompt_at_the_left_edge() -> None:
    ids, mask = pad_rows(_rows([5, 6, 7], [8], [9, 10]), pad_id=3, left=False)
    assert ids.tolist() == [[5, 6, 7], [8, 3, 3], [9, 10, 3]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0], [1, 1, 0]]


def test_the_mask_alone_matches_the_padded_rows() -> None:
    assert padded_mask([2, 4], left=True).tolist() == [[0, 0, 1, 1], [1, 1, 1, 1]]
    assert padded_mask([2, 4], left=False).tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]


def test_positions_count_each_rows_real_columns_from_zero() -> None:
    mask = padded_mask([1, 3, 4], left=True)
    assert positions_of(mask).tolist() == [[0, 0, 0, 0], [0, 0, 1, 2], [0, 1, 2, 3]]
