"""``/v1/chat/completions`` against ``/generate`` at concurrency 32 on the same gateway, windows alternating.

The chat route renders each message through the model's chat template, so the model sees a longer prompt than
the message (on the demo model 66 tokens instead of 46). Two comparisons, therefore:

- same tokens: ``/generate`` is sent the prompt the chat template renders from the message, so both routes hand
  the model the same token ids; the difference is what the OpenAI adapter costs (its body, response and route);
- same text: ``/generate`` is sent the bare message, as a user of either route would write it; the difference
  also holds the template's extra prompt tokens.

Each round runs one window of each route back to back, in alternating order (this machine's speed drifts); the
ratio of a round is chat over ``/generate``, and the median over rounds counts.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from bench.scenarios.uniform import Level, run_window
from bench.systems import OpenAIChatWire, System
from bench.workload import BATCH, Uniform, prompts


@dataclass
class ChatVsGenerate:
    """Tokens/s per round of chat, ``/generate`` on the rendered prompt and ``/generate`` on the bare message."""

    chat: Level = field(default_factory=lambda: Level(BATCH))
    same_tokens: Level = field(default_factory=lambda: Level(BATCH))
    same_text: Level = field(default_factory=lambda: Level(BATCH))
    rounds: list[tuple[float, float, float]] = field(default_factory=list)  # (chat, same tokens, same text)

    @property
    def ratio_same_tokens(self) -> float:
        return statistics.median(c / t for c, t, _ in self.rounds) if self.rounds else float("nan")

    @property
    def ratio_same_text(self) -> float:
        return statistics.median(c / x for c, _, x in self.rounds) if self.rounds else float("nan")


def rendered_prompts(model_dir: Path, texts: list[str]) -> tuple[str, ...]:
    """Each text as one user message rendered through the model's chat template, as the gateway renders it."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    return tuple(
        str(tokenizer.apply_chat_template([{"role": "user", "content": t}], tokenize=False, add_generation_prompt=True))
        for t in texts
    )


def run_chat_vs_generate(gateway: System, model_dir: Path, args: argparse.Namespace, rounds: int = 5) -> ChatVsGenerate:
    """``rounds`` rounds of one window per route (chat, /generate with the same tokens, /generate with the same
    text), the order turning each round."""
    chat = dataclasses.replace(gateway, name="gateway /v1/chat/completions", wire=OpenAIChatWire())
    asyncio.run(chat.warm(args.max_new_tokens))
    pool = prompts(256)
    result = ChatVsGenerate()
    windows = [
        (chat, result.chat, Uniform(args.max_new_tokens)),
        (gateway, result.same_tokens, Uniform(args.max_new_tokens, pool=rendered_prompts(model_dir, pool))),
        (gateway, result.same_text, Uniform(args.max_new_tokens, pool=tuple(pool))),
    ]
    for r in range(rounds):
        tps: dict[int, float] = {}
        for i in (r, r + 1, r + 2):
            system, level, workload = windows[i % 3]
            tps[i % 3] = asyncio.run(run_window(system, level, workload, args.warmup_s, args.measure_s))
        result.rounds.append((tps[0], tps[1], tps[2]))
    return result
