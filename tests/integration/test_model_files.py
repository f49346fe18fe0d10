"""A model's files without its weights (``ModelFiles``): the tokenizer as the gateway uses it, on the demo models."""

from __future__ import annotations

import random
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from gateway.demo import DEMO_CAUSAL_ID, DEMO_SEQ2SEQ_ID
from gateway.runners.base import RunnerConfig
from gateway.runners.model_files import ModelFiles

DIRS = {DEMO_CAUSAL_ID: "tiny-causal-lm", DEMO_SEQ2SEQ_ID: "tiny-seq2seq"}


@pytest.fixture(scope="module", params=sorted(DIRS))
def files(request: pytest.FixtureRequest, demo_cache_dir: Path) -> ModelFiles:
    return ModelFiles(RunnerConfig(request.param, path=str(demo_cache_dir / DIRS[request.param])))


def test_encode_takes_the_fast_path_and_gives_what_the_tokenizer_gives(files: ModelFiles) -> None:
    assert files._fast_encoder is not None
    rng = random.Random(7)
    alphabet = "abc XYZ 0123 \n\t éü ✓ 日本 <s></s><pad> .,;!?"
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60))) for _ in range(300)]
    for text in texts:
        assert files.encode(text) == list(files.tokenizer(text, add_special_tokens=True)["input_ids"]), text


class _Differs:
    """A stand-in for a backend whose ids differ from the wrapper's (a wrapper that adds something of its own)."""

    def __init__(self, real: Any) -> None:
        self.real = real

    def encode(self, text: str, add_special_tokens: bool = True) -> Any:
        encoding = self.real.encode(text, add_special_tokens=add_special_tokens)
        return SimpleNamespace(ids=[i + 1 for i in encoding.ids])


def test_a_backend_that_disagrees_with_the_wrapper_is_not_used(files: ModelFiles) -> None:
    real = files.backend_tokenizer
    try:
        files.backend_tokenizer = _Differs(real)
        assert files._checked_fast_encoder() is None
    finally:
        files.backend_tokenizer = real
    assert files._checked_fast_encoder() is real
