"""The transformers runner: loads a model and runs its decode loop on a thread of its own.

Loads a model through the Auto classes (safetensors only, ``trust_remote_code`` only when asked). ``submit``
hands a group of rows (one submission, equal sampling settings) to the decode loop and returns at once:

- causal LMs use continuous batching (``CausalBatch``): a submission is prefilled and joins the running batch
  between two decoding steps, and each row leaves the batch the step it finishes;
- sequence-to-sequence models (and causal LMs whose cache the batch cannot reshape) run each submission as one
  ``generate`` call, with per-row stopping through a stopping criterion.

Either way each row stops at its own ``max_new_tokens``, stop sequences, EOS, cancellation or deadline, and is
answered that step. torch is imported by this module, ``causal_batch`` and ``logits`` only.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    LogitsProcessor,
    LogitsProcessorList,
    StoppingCriteria,
    StoppingCriteriaList,
)

from gateway.errors import GatewayError, ModelError, OutOfMemory
from gateway.runners.base import Row, RunnerConfig, Submission
from gateway.runners.causal_batch import BatchLost, CausalBatch
from gateway.runners.faults import FaultInjector
from gateway.runners.kv_cache import supports_continuous_batching
from gateway.runners.logits import Degrade, LogitBias, LogprobStash, Penalties, top_alternatives
from gateway.runners.model_files import ModelFiles
from gateway.runners.rows import RowState, RowTracker
from gateway.runners.sampler import Sampler
from gateway.runners.tensors import pad_rows
from gateway.runners.threads import ThreadPolicy, leave_a_core_to_the_event_loop

log = logging.getLogger("gateway.runner")

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_CPU_OOM_MARKERS = ("can't allocate memory", "not enough memory", "out of memory")


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} requested but CUDA is not available")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype != "auto":
        return _DTYPES[dtype]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def is_oom(error: BaseException) -> bool:
    if isinstance(error, torch.cuda.OutOfMemoryError | MemoryError):
        return True
    return isinstance(error, RuntimeError) and any(m in str(error) for m in _CPU_OOM_MARKERS)


class _StaticTracker(StoppingCriteria):
    """For one ``generate`` call: after every step, hands each row's new token to the ``RowTracker``."""

    def __init__(
        self,
        tracker: RowTracker,
        rows: Sequence[Row],
        stash: LogprobStash,
        seed: int | None,
        after_step: Callable[[], None],
    ):
        started = time.monotonic()
        self.tracker = tracker
        self.after_step = after_step
        self.states = [tracker.start(r, seed, started) for r in rows]
        for state in self.states:
            state.batch_size = len(rows)
        self.stash = stash
        wants = [s.top_logprobs for s in self.states]
        self._wants = wants if any(wants) else None  # rows' ``top_logprobs``, when any row asks
        # generate() pads finished rows when an EOS criterion is present; this attribute marks us as one.
        self.eos_token_id = list(tracker.eos_ids)
        self._active = list(range(len(self.states)))  # rows still generating
        self._done: torch.Tensor | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
        now = time.monotonic()
        last = input_ids[:, -1].tolist()
        logprobs = tops = None
        distribution = self.stash.last
        if distribution is not None:
            logprobs = distribution.gather(1, input_ids[:, -1:]).squeeze(1).tolist()
            if self._wants is not None:
                tops = top_alternatives(distribution, self._wants)
        states = self.states
        finished = False
        step = self.tracker.step
        for i in self._active:
            state = states[i]
            step(state, last[i], None if logprobs is None else logprobs[i], now, None if tops is None else tops[i])
            finished = finished or state.done
        if finished or self._done is None:
            # Rebuilt only when a row finishes: this runs at every step of every batch.
            self._active = [i for i in self._active if not states[i].done]
            self._done = torch.tensor([s.done for s in states], dtype=torch.bool, device=input_ids.device)
        self.after_step()
        return self._done  # type: ignore[return-value]  # a BoolTensor in all but name

    def finish_remaining(self) -> None:
        for state in self.states:
            self.tracker.finish_at_length(state)


class _DecodeLoop:
    """The runner's thread: admits submissions between steps and decodes the running batch.

    A reset abandons a loop (its thread may be stuck in a hung kernel or an injected stall): ``stopped`` is set,
    and when the thread wakes it touches only its own batch and futures that are already answered.
    """

    def __init__(self, runner: TransformersRunner, generation: int) -> None:
        self.runner = runner
        self.inbox: deque[Submission] = deque()
        self.running: list[tuple[Submission, list[RowState]]] = []
        self.admitting: Submission | None = None
        self.condition = threading.Condition()
        self.stopped = False
        self.batch = (
            CausalBatch(runner.model, runner.tracker, runner.pad_id, runner.device, runner.threads)
            if runner.continuous
            else None
        )
        name = f"gateway-{runner.info.model_id.replace('/', '_')}-loop{generation}"
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    def put(self, submission: Submission) -> None:
        with self.condition:
            if self.stopped:
                raise RuntimeError("decode loop stopped")
            self.inbox.append(submission)
            self.condition.notify()

    def stop(self, reason: GatewayError) -> None:
        """Stop taking work; every submission not finished yet fails with ``reason``."""
        with self.condition:
            self.stopped = True
            pending = [*self.inbox, *(s for s, _ in self.running)]
            if self.admitting is not None:
                pending.append(self.admitting)
            self.inbox.clear()
            self.running = []
            self.condition.notify()
        for submission in pending:
            submission.fail(reason)

    def _take(self, block: bool) -> list[Submission]:
        with self.condition:
            while block and not self.inbox and not self.stopped:
                self.condition.wait()
            if self.stopped:
                return []
            taken = list(self.inbox)
            self.inbox.clear()
            return taken

    def _run(self) -> None:
        with torch.inference_mode():
            while not self.stopped:
                for submission in self._take(block=not self.batch):
                    self._admit(submission)
                    self.runner.pass_done()
                if self.batch and not self.stopped:
                    self._step()
                    self.runner.pass_done()

    def _admit(self, submission: Submission) -> None:
        self.admitting = submission
        try:
            self._join(submission)
        finally:
            self.admitting = None

    def _join(self, submission: Submission) -> None:
        rows = submission.rows
        try:
            if submission.fault is not None:
                self.runner.faults.apply(submission.fault, torch.cuda.OutOfMemoryError)
            if self.stopped:
                return
            degrade = submission.fault.degrade if submission.fault is not None else None
            if self.batch is None:
                self.runner.generate_static(rows, degrade=degrade)
                submission.finish(len(rows))
                return
            sampler = Sampler(
                rows[0].params.sampling, self.runner.device, degrade=degrade, eos_id=self.runner.first_eos_id
            )
            states = self.batch.join(rows, sampler)
        except BatchLost as lost:  # the pass decoded the running rows too: they fail with this submission
            self._fail_running(self.runner.failure(lost.__cause__ or lost))
            submission.fail(self.runner.failure(lost.__cause__ or lost))
            return
        except Exception as exc:
            submission.fail(self.runner.failure(exc))
            return
        submission.admit()
        self.running.append((submission, states))
        self._settle_finished()

    def _step(self) -> None:
        assert self.batch is not None
        try:
            self.batch.step()
        except Exception as exc:
            self.batch.clear()  # the rows not answered yet go back to the scheduler with the error
            self._fail_running(self.runner.failure(exc))
            return
        self._settle_finished()

    def _fail_running(self, error: GatewayError) -> None:
        running, self.running = self.running, []
        for submission, _ in running:
            submission.fail(error)

    def _settle_finished(self) -> None:
        if not self.running:
            return
        still = []
        for submission, states in self.running:
            if all(s.done for s in states):
                submission.finish(max(s.batch_size for s in states))
            else:
                still.append((submission, states))
        self.running = still


class TransformersRunner(ModelFiles):
    """A transformers model and its decode loop on one device."""

    def __init__(self, config: RunnerConfig, faults: FaultInjector | None = None) -> None:
        super().__init__(config)
        revision, trust_remote_code = config.revision, config.trust_remote_code
        self.device = resolve_device(config.device)
        self.dtype = resolve_dtype(config.dtype, self.device)
        if self.device.type == "cpu":
            leave_a_core_to_the_event_loop()
        self.faults = faults or FaultInjector()
        auto = AutoModelForSeq2SeqLM if self.is_seq2seq else AutoModelForCausalLM
        common: dict[str, Any] = {"revision": revision, "trust_remote_code": trust_remote_code}
        self.model = auto.from_pretrained(self.source, dtype=self.dtype, use_safetensors=True, **common)
        self.model.to(self.device)
        self.model.eval()
        self.tracker = RowTracker(
            self.decode, self.decode_stream, self.backend_tokenizer, self.eos_ids, self.special_ids, self.token_text
        )
        self.continuous = not self.is_seq2seq and supports_continuous_batching(self.model)
        # The running batch sizes torch's pool per pass on the CPU (a big pass gets the core left to the loop).
        self.threads = ThreadPolicy(self.model) if self.device.type == "cpu" else None
        # Called on the decode loop's thread after each forward pass and what it reported (a join, a step, a step of
        # one ``generate``): the model process sends the pass's events then.
        self.after_pass: Callable[[], None] | None = None
        self._lock = threading.Lock()
        self._loop: _DecodeLoop | None = None
        self._generation = 0
        self.info = self.model_info(
            device=str(self.device),
            dtype=str(self.dtype).removeprefix("torch."),
            is_demo=config.is_demo,
            continuous_batching=self.continuous,
        )

    # -- generation --

    def start(self) -> None:
        """Start the decode loop (idempotent)."""
        with self._lock:
            if self._loop is None:
                self._loop = self._new_loop()

    def _new_loop(self) -> _DecodeLoop:
        self._generation += 1
        loop = _DecodeLoop(self, self._generation)
        loop.thread.start()
        return loop

    @property
    def alive(self) -> bool:
        loop = self._loop
        return loop is not None and loop.thread.is_alive() and not loop.stopped

    def submit(self, rows: Sequence[Row]) -> Submission:
        """Hand ``rows`` (equal sampling settings) to the decode loop; returns at once."""
        submission = Submission(rows=list(rows), fault=self.faults.take())
        self.enqueue(submission)
        return submission

    def enqueue(self, submission: Submission) -> None:
        """Hand over a submission built elsewhere (the model process builds them from the gateway's messages)."""
        self.start()
        assert self._loop is not None
        self._loop.put(submission)

    def reset(self, reason: GatewayError) -> None:
        """Abandon the decode loop (stuck, or its batch must go): pending submissions fail with ``reason``."""
        with self._lock:
            old, self._loop = self._loop, None
            if old is not None:
                old.stop(reason)
            self._loop = self._new_loop()

    def failure(self, exc: BaseException) -> GatewayError:
        """What a failed forward pass means for its rows (runs on the loop thread)."""
        if isinstance(exc, GatewayError):
            return exc
        if is_oom(exc):
            self.free_memory()
            return OutOfMemory()
        log.error("generate failed", extra={"error_type": "model_error", "error": repr(exc)[:500]})
        return ModelError()

    @property
    def first_eos_id(self) -> int | None:
        return min(self.tracker.eos_ids) if self.tracker.eos_ids else None

    def generate_static(self, rows: Sequence[Row], *, degrade: str | None = None) -> None:
        """One ``generate`` call for ``rows``: the path of seq2seq models. ``degrade``: an injected fault's
        degenerate output (``Degrade``)."""
        sampling = rows[0].params.sampling
        input_ids, attention = pad_rows(rows, self.pad_id, left=not self.is_seq2seq)
        stash = LogprobStash()
        seed = sampling.seed if sampling.do_sample else None
        if sampling.do_sample:
            if seed is None:
                seed = int(torch.randint(0, 2**31 - 1, (1,)).item())
            torch.manual_seed(seed)
        tracker = _StaticTracker(self.tracker, rows, stash, seed, self.pass_done)
        # After generate's own repetition penalty and before its warpers: the order of the continuous batch.
        processors: list[LogitsProcessor] = [LogitBias(sampling.logit_bias)] if sampling.logit_bias else []
        penalties = Penalties(sampling.presence_penalty, sampling.frequency_penalty)
        if penalties.active:
            processors.append(penalties)
        if degrade is not None:
            processors.append(Degrade(degrade, self.first_eos_id))  # last: it overrides every other choice
        kwargs: dict[str, Any] = {
            "max_new_tokens": max(r.params.max_new_tokens for r in rows),
            "do_sample": sampling.do_sample,
            "pad_token_id": self.pad_id,
            "logits_processor": LogitsProcessorList([*processors, stash]),
            "stopping_criteria": StoppingCriteriaList([tracker]),
        }
        if sampling.do_sample:
            kwargs.update(temperature=sampling.temperature, top_k=sampling.top_k or None, top_p=sampling.top_p)
            if sampling.typical_p < 1.0:
                kwargs["typical_p"] = sampling.typical_p
        else:
            kwargs.update(temperature=None, top_k=None, top_p=None)
        if sampling.repetition_penalty != 1.0:
            kwargs["repetition_penalty"] = sampling.repetition_penalty
        if sampling.forced_bos_token_id is not None:
            kwargs["forced_bos_token_id"] = sampling.forced_bos_token_id
        self.model.generate(input_ids=input_ids.to(self.device), attention_mask=attention.to(self.device), **kwargs)
        tracker.finish_remaining()

    def free_memory(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def pass_done(self) -> None:
        """The ``after_pass`` hook, if any; a failure of it is logged and the decode loop goes on."""
        hook = self.after_pass
        if hook is not None:
            try:
                hook()
            except Exception:
                log.exception("after-pass hook failed")

    def close(self) -> None:
        with self._lock:
            old, self._loop = self._loop, None
        if old is not None:
            old.stop(ModelError("the model was unloaded"))
            # Let it leave torch before the interpreter shuts down (a daemon thread killed inside an op aborts).
            old.thread.join(timeout=10)
        del self.model
        self.free_memory()
