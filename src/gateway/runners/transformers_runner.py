"""The transformers runner: the only module that imports torch.

Loads a model through the Auto classes (safetensors only, ``trust_remote_code`` only when asked), and runs one
batch per ``generate`` call with per-row stopping: each row stops at its own ``max_new_tokens``, stop sequences,
EOS, cancellation or deadline, and is answered at that step while the others go on.
"""

from __future__ import annotations

import inspect
import json
import logging
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    LogitsProcessor,
    LogitsProcessorList,
    StoppingCriteria,
    StoppingCriteriaList,
)
from transformers.utils import logging as hf_logging

from gateway.errors import DeadlineExceeded, GatewayError, ModelError, OutOfMemory, RequestCancelled
from gateway.languages import LANGUAGE_NAMES, NLLB_CODES
from gateway.runners.base import Row, TranslationSpec
from gateway.runners.faults import FaultInjector
from gateway.types import FinishReason, GenerationOutput, ModelInfo, Token

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


def leave_a_core_to_the_event_loop() -> None:
    """Size torch's CPU thread pool to the cores less one, unless the operator chose (``OMP_NUM_THREADS``).

    torch takes every core by default, and its threads wait on one another at each op. The event loop (HTTP,
    tokenizing, answering) needs a core too: sharing one with the pool stalls every step of the model, which on a
    small machine costs more than the extra thread gains.
    """
    if os.environ.get("OMP_NUM_THREADS"):
        return
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    torch.set_num_threads(max(1, cores - 1))


def _decode_stream_class() -> Any:
    """tokenizers' incremental decoder (tokenizers >= 0.21), or None."""
    try:
        from tokenizers.decoders import DecodeStream
    except ImportError:  # pragma: no cover - older tokenizers
        return None
    return DecodeStream


def is_oom(error: BaseException) -> bool:
    if isinstance(error, torch.cuda.OutOfMemoryError | MemoryError):
        return True
    return isinstance(error, RuntimeError) and any(m in str(error) for m in _CPU_OOM_MARKERS)


class _LogprobStash(LogitsProcessor):
    """Last in the processor list: keeps the log-probabilities the next token is chosen from."""

    def __init__(self) -> None:
        self.last: torch.Tensor | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        self.last = torch.log_softmax(scores.float(), dim=-1)
        return scores


# LogitsProcessorList.__call__ runs inspect.signature() on every processor at every step; a signature stored on the
# function is returned at once instead of being rebuilt (a few percent of a small model's step time).
_LogprobStash.__call__.__signature__ = inspect.signature(_LogprobStash.__call__)  # type: ignore[attr-defined]


class _RowState:
    __slots__ = (
        "done",
        "emitted_text",
        "first_token_at",
        "ids",
        "max_new_tokens",
        "prefix_offset",
        "read_offset",
        "row",
        "sink",
        "stop",
        "stream",
        "tokens",
    )

    def __init__(self, row: Row, stream: Any) -> None:
        self.row = row
        self.stream = stream
        # Copied out of the row: read for every row at every step.
        self.sink = row.sink
        self.stop = row.params.stop
        self.max_new_tokens = row.params.max_new_tokens
        self.ids: list[int] = []
        self.tokens: list[Token] = []
        self.done = False
        self.prefix_offset = 0
        self.read_offset = 0
        self.emitted_text = ""
        self.first_token_at: float | None = None


class _BatchTracker(StoppingCriteria):
    """Called by ``generate`` after every step: records each row's new token and finishes rows one by one."""

    def __init__(self, runner: TransformersRunner, rows: Sequence[Row], stash: _LogprobStash, seed: int | None):
        self.runner = runner
        self.states = [_RowState(r, runner.decode_stream()) for r in rows]
        self.stash = stash
        self.seed = seed
        self.started = time.monotonic()
        # generate() pads finished rows when an EOS criterion is present; this attribute marks us as one.
        self.eos_token_id = runner.eos_ids
        self.eos_ids = frozenset(runner.eos_ids)
        self.special_ids = runner.special_ids
        self.backend = runner.backend_tokenizer
        self._active = list(range(len(self.states)))  # rows still generating
        self._done: torch.Tensor | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
        now = time.monotonic()
        last = input_ids[:, -1].tolist()
        logprobs = None
        if self.stash.last is not None:
            logprobs = self.stash.last.gather(1, input_ids[:, -1:]).squeeze(1).tolist()
        states = self.states
        finished = False
        for i in self._active:
            state = states[i]
            self._step(state, last[i], None if logprobs is None else logprobs[i], now)
            finished = finished or state.done
        if finished or self._done is None:
            # Rebuilt only when a row finishes: this runs at every step of every batch.
            self._active = [i for i in self._active if not states[i].done]
            self._done = torch.tensor([s.done for s in states], dtype=torch.bool, device=input_ids.device)
        return self._done  # type: ignore[return-value]  # a BoolTensor in all but name

    def _step(self, state: _RowState, token_id: int, logprob: float | None, now: float) -> None:
        row = state.row
        sink = state.sink
        if sink.cancelled():
            self._finish(state, RequestCancelled())
            return
        if now > row.deadline:
            self._finish(state, DeadlineExceeded(during_generation=True))
            return
        if state.first_token_at is None:
            state.first_token_at = now
        state.ids.append(token_id)
        special = token_id in self.special_ids
        if special:
            text = ""
        elif state.stream is not None:
            # tokenizers' stream decoder: the incremental algorithm below, in Rust (a microsecond per token).
            text = state.stream.step(self.backend, token_id) or ""
            state.emitted_text += text
        else:
            text = self._incremental_text(state)
        if logprob is not None and not math.isfinite(logprob):
            logprob = None
        token = Token(token_id, text, logprob, special)
        state.tokens.append(token)
        reason: FinishReason | None = None
        if token_id in self.eos_ids:
            reason = FinishReason.EOS
        elif state.stop and text and self._hit_stop(state, len(text)):
            reason = FinishReason.STOP
        elif len(state.ids) >= state.max_new_tokens:
            reason = FinishReason.LENGTH
        if reason is None:
            sink.on_token(token)
            row.emitted_tokens += 1
        else:
            self._complete(state, reason, token)

    @staticmethod
    def _hit_stop(state: _RowState, new_chars: int) -> bool:
        # Only the tail can hold a stop sequence that was not there one step ago.
        text = state.emitted_text
        return any(s in text[-(len(s) + new_chars) :] for s in state.stop)

    def _incremental_text(self, state: _RowState) -> str:
        # TGI-style incremental detokenization: hold back text that ends inside a multi-byte character.
        decode = self.runner.decode
        prefix = decode(state.ids[state.prefix_offset : state.read_offset])
        full = decode(state.ids[state.prefix_offset :])
        if len(full) > len(prefix) and not full.endswith("\ufffd"):
            new = full[len(prefix) :]
            state.prefix_offset = state.read_offset
            state.read_offset = len(state.ids)
            state.emitted_text += new
            return new
        return ""

    def _complete(self, state: _RowState, reason: FinishReason, last: Token) -> None:
        text = self.runner.decode(state.ids)
        if not text.startswith(state.emitted_text):
            text = state.emitted_text
        rest = text[len(state.emitted_text) :]
        if rest:
            # Bytes that were held back (an incomplete character at the very end) go out with the last token.
            last = Token(id=last.id, text=last.text + rest, logprob=last.logprob, special=last.special)
            state.tokens[-1] = last
            state.emitted_text += rest
        state.row.sink.on_token(last)
        state.row.emitted_tokens += 1
        now = time.monotonic()
        output = GenerationOutput(
            text=text,
            finish_reason=reason,
            prompt_tokens=len(state.row.input_ids),
            tokens=state.tokens,
            seed=self.seed,
            inference_s=now - self.started,
            first_token_s=(state.first_token_at - self.started) if state.first_token_at else None,
            batch_size=len(self.states),
        )
        self._finish(state, output)

    def _finish(self, state: _RowState, outcome: GenerationOutput | GatewayError) -> None:
        state.done = True
        state.row.done = True
        state.row.sink.on_done(outcome)

    def finish_remaining(self) -> None:
        for state in self.states:
            if not state.done:
                last = state.tokens[-1] if state.tokens else Token(id=-1, text="", logprob=None, special=True)
                if not state.tokens:
                    state.tokens.append(last)
                self._complete(state, FinishReason.LENGTH, last)


class TransformersRunner:
    """A transformers model and tokenizer on one device."""

    def __init__(
        self,
        model_id: str,
        *,
        path: str | None = None,
        revision: str | None = None,
        device: str = "auto",
        dtype: str = "auto",
        trust_remote_code: bool = False,
        is_demo: bool = False,
        faults: FaultInjector | None = None,
    ) -> None:
        source = path or model_id
        hf_logging.disable_progress_bar()  # progress bars are not JSON; load events are logged instead
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        if self.device.type == "cpu":
            leave_a_core_to_the_event_loop()
        self.faults = faults or FaultInjector()
        self.source = source
        common: dict[str, Any] = {"revision": revision, "trust_remote_code": trust_remote_code}
        config = AutoConfig.from_pretrained(source, **common)
        self.is_seq2seq = bool(getattr(config, "is_encoder_decoder", False))
        self.tokenizer = AutoTokenizer.from_pretrained(source, **common)
        auto = AutoModelForSeq2SeqLM if self.is_seq2seq else AutoModelForCausalLM
        self.model = auto.from_pretrained(source, dtype=self.dtype, use_safetensors=True, **common)
        self.model.to(self.device)
        self.model.eval()
        self.model_type = str(getattr(config, "model_type", ""))
        gen_cfg = self.model.generation_config
        eos = gen_cfg.eos_token_id if gen_cfg.eos_token_id is not None else self.tokenizer.eos_token_id
        self.eos_ids: list[int] = [int(e) for e in (eos if isinstance(eos, list) else [eos]) if e is not None]
        pad = self.tokenizer.pad_token_id
        if pad is None:
            pad = gen_cfg.pad_token_id if gen_cfg.pad_token_id is not None else (self.eos_ids or [0])[0]
        self.pad_id = int(pad)
        self.special_ids = frozenset(int(i) for i in self.tokenizer.all_special_ids)
        # Incremental decoding through the fast tokenizer's own stream decoder, when it decodes exactly like
        # ``decode`` (no clean-up of tokenization spaces applied on the Python side).
        self.backend_tokenizer = getattr(self.tokenizer, "backend_tokenizer", None)
        stream_class = _decode_stream_class()
        self._decode_stream_class = (
            stream_class
            if self.backend_tokenizer is not None and not getattr(self.tokenizer, "clean_up_tokenization_spaces", False)
            else None
        )
        resolved_revision = revision or str(getattr(config, "_commit_hash", None) or "local")
        self.info = ModelInfo(
            model_id=model_id,
            revision=resolved_revision,
            task="text2text-generation" if self.is_seq2seq else "text-generation",
            device=str(self.device),
            dtype=str(self.dtype).removeprefix("torch."),
            is_demo=is_demo,
        )

    # -- tokenizer helpers (called from the event loop thread; the fast tokenizer is thread safe for these) --

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=True)["input_ids"])

    def decode(self, ids: Sequence[int]) -> str:
        return str(self.tokenizer.decode(list(ids), skip_special_tokens=True))

    def decode_stream(self) -> Any:
        """A fresh incremental decoder for one row, or None to use the pure-Python algorithm."""
        cls = self._decode_stream_class
        return None if cls is None else cls(skip_special_tokens=True)

    def render_chat(self, user_message: str) -> str | None:
        if not getattr(self.tokenizer, "chat_template", None):
            return None
        rendered = self.tokenizer.apply_chat_template(
            [{"role": "user", "content": user_message}], tokenize=False, add_generation_prompt=True
        )
        return str(rendered)

    def token_id(self, token: str) -> int | None:
        tid = self.tokenizer.convert_tokens_to_ids(token)
        if tid is None or tid == self.tokenizer.unk_token_id:
            return None
        return int(tid)

    def translation_spec(self, template_languages: Sequence[str]) -> TranslationSpec:
        """Work out how this model translates (see ``TranslationSpec``)."""
        sidecar = Path(self.source) / "gateway-languages.json"
        if sidecar.is_file():
            data = json.loads(sidecar.read_text())
            langs = tuple(data["languages"])
            return TranslationSpec(style=data["style"], languages=langs, language_tokens={c: f">>{c}<<" for c in langs})
        if not self.is_seq2seq:
            return TranslationSpec(style="template", languages=tuple(template_languages))
        if self.model_type == "m2m_100":
            vocab = self.tokenizer.get_vocab()
            if "eng_Latn" in vocab:
                tokens = {iso: code for iso, code in NLLB_CODES.items() if code in vocab}
            else:
                tokens = {iso: f"__{iso}__" for iso in LANGUAGE_NAMES if f"__{iso}__" in vocab}
            return TranslationSpec(style="forced_bos", languages=tuple(sorted(tokens)), language_tokens=tokens)
        if self.model_type == "t5":
            langs = ("en", "de", "fr", "ro")
            return TranslationSpec(style="t5_prefix", languages=langs, source_languages=("en",))
        vocab = self.tokenizer.get_vocab()
        target_tokens = {iso: f">>{iso}<<" for iso in LANGUAGE_NAMES if f">>{iso}<<" in vocab}
        if target_tokens:
            return TranslationSpec(
                style="target_token", languages=tuple(sorted(target_tokens)), language_tokens=target_tokens
            )
        # Marian single pair, named like Helsinki-NLP/opus-mt-en-zh.
        name = self.info.model_id.rstrip("/").rsplit("/", 1)[-1]
        parts = name.split("-")
        if len(parts) >= 2 and all(p in LANGUAGE_NAMES for p in parts[-2:]):
            src, tgt = parts[-2], parts[-1]
            return TranslationSpec(style="fixed_pair", languages=(tgt,), source_languages=(src,))
        return TranslationSpec(style="fixed_pair", languages=tuple(template_languages))

    # -- generation (worker thread) --

    def generate(self, rows: Sequence[Row]) -> None:
        try:
            self.faults.before_batch(torch.cuda.OutOfMemoryError)
            with torch.inference_mode():
                self._generate(rows)
        except GatewayError:
            raise
        except Exception as exc:
            if is_oom(exc):
                raise OutOfMemory() from exc
            log.error("generate failed", extra={"error_type": "model_error", "error": repr(exc)[:500]})
            raise ModelError() from exc

    def _generate(self, rows: Sequence[Row]) -> None:
        sampling = rows[0].params.sampling
        longest = max(len(r.input_ids) for r in rows)
        input_ids = torch.full((len(rows), longest), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(rows), longest), dtype=torch.long)
        for i, row in enumerate(rows):
            n = len(row.input_ids)
            # Causal LMs continue from the right edge, so they are padded on the left.
            cols = slice(longest - n, longest) if not self.is_seq2seq else slice(0, n)
            input_ids[i, cols] = torch.tensor(row.input_ids, dtype=torch.long)
            attention[i, cols] = 1
        stash = _LogprobStash()
        seed = sampling.seed if sampling.do_sample else None
        if sampling.do_sample:
            if seed is None:
                seed = int(torch.randint(0, 2**31 - 1, (1,)).item())
            torch.manual_seed(seed)
        tracker = _BatchTracker(self, rows, stash, seed)
        kwargs: dict[str, Any] = {
            "max_new_tokens": max(r.params.max_new_tokens for r in rows),
            "do_sample": sampling.do_sample,
            "pad_token_id": self.pad_id,
            "logits_processor": LogitsProcessorList([stash]),
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

    def close(self) -> None:
        del self.model
        self.free_memory()
