"""The in-process limit: the model the gateway serves, loaded here with transformers and driven with no HTTP.

One batched ``generate`` of ``BATCH`` prompts is the throughput a server of that model is measured against, and
a single-prompt ``generate`` is its latency floor. Both are measured at torch's default thread count and at the
gateway's (cores less one), and the better counts.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from bench.workload import BATCH, prompts


def gateway_threads() -> int:
    """The torch thread count of the gateway's small passes: the cores less one."""
    from gateway.runners.threads import small_pool, usable_cores

    return small_pool(usable_cores())


class InProcessModel:
    """A causal LM loaded with ``from_pretrained`` from ``model_dir``, greedy, ``max_new_tokens`` a call."""

    def __init__(self, model_dir: Path, max_new_tokens: int) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from gateway.runners.threads import usable_cores

        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.tokenizer.padding_side = "left"  # as the gateway pads causal LMs
        self.model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
        self.max_new_tokens = max_new_tokens
        self.pool = prompts(BATCH)
        self.eos = self.model.generation_config.eos_token_id
        # Every core (torch's default in a fresh process; another model's ``rest`` may have lowered it) and the
        # gateway's small pool.
        self.thread_options = sorted({usable_cores(), gateway_threads()})
        for threads in self.thread_options:
            torch.set_num_threads(threads)
            self.generate(self.pool)
            self.generate(self.pool[:1])
        self.rest()

    def generate(self, texts: list[str]) -> tuple[float, int]:
        """(seconds, generated tokens) of one ``generate`` call, tokenizing included."""
        started = time.perf_counter()
        enc = self.tokenizer(texts, return_tensors="pt", padding=True)
        with self.torch.inference_mode():
            out = self.model.generate(
                **enc,
                max_new_tokens=self.max_new_tokens,
                do_sample=False,
                pad_token_id=self.tokenizer.pad_token_id,
            )
        elapsed = time.perf_counter() - started
        new = out[:, enc["input_ids"].shape[1] :].tolist()
        tokens = sum(next((i + 1 for i, t in enumerate(row) if t == self.eos), len(row)) for row in new)
        return elapsed, tokens

    def batched_tps(self, repeats: int) -> tuple[float, int]:
        """(tokens/s, threads) of the best batched generate of ``BATCH`` prompts over ``repeats`` runs."""
        best = (0.0, 0)
        for threads in self.thread_options:
            self.torch.set_num_threads(threads)
            for _ in range(repeats):
                elapsed, tokens = self.generate(self.pool)
                best = max(best, (tokens / elapsed, threads))
        self.rest()
        return best

    def single_times(self, n: int) -> tuple[list[float], int]:
        """(times, threads) of ``n`` single-prompt generates, at the thread count with the lower median."""
        best: tuple[list[float], int] | None = None
        for threads in self.thread_options:
            self.torch.set_num_threads(threads)
            times = [self.generate([self.pool[i % BATCH]])[0] for i in range(n)]
            if best is None or statistics.median(times) < statistics.median(best[0]):
                best = (times, threads)
        self.rest()
        assert best is not None
        return best

    def single_at_gateway_threads(self, prompt: str) -> float:
        """Seconds of one single-prompt generate at the gateway's thread count (the pool is left running: call
        ``rest`` after a series)."""
        self.torch.set_num_threads(gateway_threads())
        return self.generate([prompt])[0]

    def rest(self) -> None:
        """One thread, and a moment for torch's pool threads to stop spinning before a server's turn."""
        self.torch.set_num_threads(1)
        time.sleep(0.3)
