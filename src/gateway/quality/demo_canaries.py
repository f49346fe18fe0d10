"""The built-in canary set of the demo models: their exact greedy output on a few prompts.

The demo models have random weights (fixed seed), so their text means nothing, but greedy decoding makes it
exact: any change in what the serving path feeds the model or how it chooses tokens (a degraded runner, a
broken cache, padding leaking into attention) changes these strings. The strings were produced by the real app
(``POST /generate`` with ``do_sample`` false, ``POST /translate``) on CPU in float32;
tests/quality/test_demo_canaries.py checks they still hold. On another device or dtype the random weights may
choose differently: configure ``GATEWAY_CANARY_FILE`` there.
"""

from __future__ import annotations

from typing import Final

from gateway.demo import DEMO_CAUSAL_ID, DEMO_SEQ2SEQ_ID
from gateway.quality.canary import CanaryCase, Expectation

__all__ = ["DEMO_CANARIES"]

DEMO_CANARIES: Final[tuple[CanaryCase, ...]] = (
    CanaryCase(
        name="demo-generate-greeting",
        kind="generate",
        text="Hello, my name is",
        model=DEMO_CAUSAL_ID,
        max_new_tokens=12,
        expect=Expectation(exact="TtDB.T1.T1.T"),
    ),
    CanaryCase(
        name="demo-generate-capital",
        kind="generate",
        text="The capital of France is",
        model=DEMO_CAUSAL_ID,
        max_new_tokens=12,
        expect=Expectation(exact="1HltDDDDTtDD"),
    ),
    CanaryCase(
        name="demo-translate-en-de",
        kind="translate",
        text="Good morning",
        source_lang="en",
        target_lang="de",
        model=DEMO_SEQ2SEQ_ID,
        max_new_tokens=12,
        expect=Expectation(exact="VnItMUc2sM-Y"),
    ),
)
