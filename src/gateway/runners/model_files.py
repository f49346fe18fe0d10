"""A model's files without its weights: config, generation config and tokenizer, and what they tell.

Both runners build on it: the in-process ``TransformersRunner`` and the gateway side of ``ProcessRunner``,
which tokenizes here while the weights live in the model process. No torch here.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from transformers import AutoConfig, AutoTokenizer, GenerationConfig
from transformers.utils import logging as hf_logging

from gateway.languages import LANGUAGE_NAMES, NLLB_CODES
from gateway.runners.base import RunnerConfig, TranslationSpec
from gateway.types import ModelInfo


def _decode_stream_class() -> Any:
    """tokenizers' incremental decoder (tokenizers >= 0.21), or None."""
    try:
        from tokenizers.decoders import DecodeStream
    except ImportError:  # pragma: no cover - older tokenizers
        return None
    return DecodeStream


# Spaces, accents, other scripts, control characters, special-token look-alikes: where a wrapper would differ.
_ENCODE_PROBES = ("Hello world", " leading space", "Ünïcödé — ✓ 日本語", "a\nb\tc", "   ", "<s> </s> <pad> text", "")


class ModelFiles:
    """Config and tokenizer of one model (helpers are called from the event loop; the fast tokenizer is thread
    safe for them)."""

    def __init__(self, config: RunnerConfig) -> None:
        hf_logging.disable_progress_bar()  # progress bars are not JSON; load events are logged instead
        revision, trust_remote_code = config.revision, config.trust_remote_code
        self.model_id = config.model_id
        self.source = config.path or config.model_id
        self.revision = revision
        common: dict[str, Any] = {"revision": revision, "trust_remote_code": trust_remote_code}
        config = AutoConfig.from_pretrained(self.source, **common)
        self.is_seq2seq = bool(getattr(config, "is_encoder_decoder", False))
        self.model_type = str(getattr(config, "model_type", ""))
        self.resolved_revision = revision or str(getattr(config, "_commit_hash", None) or "local")
        self.tokenizer = AutoTokenizer.from_pretrained(self.source, **common)
        try:
            gen_cfg = GenerationConfig.from_pretrained(self.source, revision=revision)
        except OSError:  # no generation_config.json: the model config's own values
            gen_cfg = GenerationConfig.from_model_config(config)
        eos = gen_cfg.eos_token_id if gen_cfg.eos_token_id is not None else self.tokenizer.eos_token_id
        self.eos_ids: list[int] = [int(e) for e in (eos if isinstance(eos, list) else [eos]) if e is not None]
        pad = self.tokenizer.pad_token_id
        if pad is None:
            pad = gen_cfg.pad_token_id if gen_cfg.pad_token_id is not None else (self.eos_ids or [0])[0]
        self.pad_id = int(pad)
        self.special_ids = frozenset(int(i) for i in self.tokenizer.all_special_ids)
        # The ids the tokenizer knows are 0..vocab_size-1: the range a ``logit_bias`` id must be in. (A model's
        # logits may be wider, padded; the decode loop ignores a bias on an id outside them.)
        self.vocab_size = len(self.tokenizer)
        self._token_texts: dict[int, str] = {}
        # A token's string is at least as long as the text it stands for (byte-level BPE spells each byte as one
        # character, WordPiece adds "##", byte fallback "<0x..>"): the longest bounds the characters per token.
        self.max_token_chars = max((len(t) for t in self.tokenizer.get_vocab()), default=1) or 1
        # Incremental decoding through the fast tokenizer's own stream decoder, when it decodes exactly like
        # ``decode`` (no clean-up of tokenization spaces applied on the Python side).
        self.backend_tokenizer = getattr(self.tokenizer, "backend_tokenizer", None)
        stream_class = _decode_stream_class()
        self._decode_stream_class = (
            stream_class
            if self.backend_tokenizer is not None and not getattr(self.tokenizer, "clean_up_tokenization_spaces", False)
            else None
        )
        self._fast_encoder = self._checked_fast_encoder()

    def model_info(self, *, device: str, dtype: str, is_demo: bool, continuous_batching: bool) -> ModelInfo:
        return ModelInfo(
            model_id=self.model_id,
            revision=self.resolved_revision,
            task="text2text-generation" if self.is_seq2seq else "text-generation",
            device=device,
            dtype=dtype,
            is_demo=is_demo,
            continuous_batching=continuous_batching,
        )

    def encode(self, text: str) -> list[int]:
        if self._fast_encoder is not None:
            return list(self._fast_encoder.encode(text, add_special_tokens=True).ids)
        return list(self.tokenizer(text, add_special_tokens=True)["input_ids"])

    def _checked_fast_encoder(self) -> Any:
        """The fast tokenizer's own encoder, if it gives what ``tokenizer(text)`` gives on a few probes; else None.

        transformers' wrapper around it costs more than the encoding itself (about 50 us a prompt, on the event
        loop); a tokenizer whose wrapper adds something of its own keeps the wrapper.
        """
        backend = self.backend_tokenizer
        if backend is None or getattr(backend, "truncation", None) or getattr(backend, "padding", None):
            return None
        for text in _ENCODE_PROBES:
            if (
                backend.encode(text, add_special_tokens=True).ids
                != self.tokenizer(text, add_special_tokens=True)["input_ids"]
            ):
                return None
        return backend

    def decode(self, ids: Sequence[int]) -> str:
        return str(self.tokenizer.decode(list(ids), skip_special_tokens=True))

    def token_text(self, token_id: int) -> str:
        """One token's text on its own, special tokens included (as TGI shows the alternatives of a step)."""
        text = self._token_texts.get(token_id)
        if text is None:
            text = self._token_texts[token_id] = str(self.tokenizer.decode([token_id], skip_special_tokens=False))
        return text

    def decode_stream(self) -> Any:
        """A fresh incremental decoder for one row, or None to use the pure-Python algorithm."""
        cls = self._decode_stream_class
        return None if cls is None else cls(skip_special_tokens=True)

    def render_chat(self, user_message: str) -> str | None:
        return self.render_messages([{"role": "user", "content": user_message}])

    def render_messages(self, messages: Sequence[dict[str, str]]) -> str | None:
        """The prompt of a conversation through the tokenizer's chat template (None: the model has none)."""
        if not getattr(self.tokenizer, "chat_template", None):
            return None
        rendered = self.tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
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
        name = self.model_id.rstrip("/").rsplit("/", 1)[-1]
        parts = name.split("-")
        if len(parts) >= 2 and all(p in LANGUAGE_NAMES for p in parts[-2:]):
            src, tgt = parts[-2], parts[-1]
            return TranslationSpec(style="fixed_pair", languages=(tgt,), source_languages=(src,))
        return TranslationSpec(style="fixed_pair", languages=tuple(template_languages))
