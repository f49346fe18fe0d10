"""Built-in demo models: tiny random-weight transformers models that need no download.

They exist so that ``gateway serve`` works offline on a fresh machine and so that the tests run the real
loading and generation code. Their output is not meaningful. Each model is written once into a cache folder
(safetensors weights, a byte-level tokenizer) and then loaded through the same ``from_pretrained`` path as any
user model.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

DEMO_CAUSAL_ID = "gateway-demo/tiny-causal-lm"
DEMO_SEQ2SEQ_ID = "gateway-demo/tiny-seq2seq"
BENCH_CAUSAL_ID = "gateway-demo/bench-llama"
DEMO_LANGUAGES = ("en", "zh", "de", "fr", "es", "ja", "it", "pt", "ru", "ko")

# Bump when the recipe changes so that stale caches are rebuilt instead of loaded.
_RECIPE_VERSION = "3"
_SEED = 1234
_SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]
_CHAT_TEMPLATE = (
    "{% for message in messages %}<s>{{ message['role'] }}: {{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<s>assistant: {% endif %}"
)


def default_cache_dir() -> Path:
    """Where the demo models live unless ``GATEWAY_DEMO_CACHE_DIR`` says otherwise."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "llm-gateway" / "demo-models"


def _language_token(code: str) -> str:
    return f">>{code}<<"


def _build_tokenizer(with_languages: bool):  # type: ignore[no-untyped-def]
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    byte_alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {tok: i for i, tok in enumerate(_SPECIALS)}
    for ch in sorted(byte_alphabet):
        vocab[ch] = len(vocab)
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    extra = [_language_token(c) for c in DEMO_LANGUAGES] if with_languages else []
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        additional_special_tokens=extra,
        model_max_length=1024,
    )
    if not with_languages:
        tok.chat_template = _CHAT_TEMPLATE
    return tok


def _printable_byte_ids(tokenizer) -> list[int]:  # type: ignore[no-untyped-def]
    from tokenizers import pre_tokenizers

    # ByteLevel maps byte b to a unicode char; keep the ids of printable ASCII bytes.
    alphabet = {ch: tokenizer.convert_tokens_to_ids(ch) for ch in pre_tokenizers.ByteLevel.alphabet()}
    ids = []
    for ch, tid in alphabet.items():
        text = tokenizer.convert_tokens_to_string([ch])
        if len(text) == 1 and (text.isalnum() or text in " .,!?'-") and text.isascii():
            ids.append(tid)
    return ids


def _damp_unprintable(model, keep: list[int], eos_id: int) -> None:  # type: ignore[no-untyped-def]
    """Shrink output rows of unprintable bytes so greedy output of the random model reads as ASCII."""
    import torch

    weight = model.get_output_embeddings().weight
    with torch.no_grad():
        mask = torch.ones(weight.shape[0], dtype=torch.bool)
        mask[keep] = False
        mask[eos_id] = False
        weight[mask] *= 0.05
        weight[eos_id] *= 0.9


def _write_atomically(target: Path, build) -> None:  # type: ignore[no-untyped-def]
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    build(tmp)
    (tmp / "gateway-demo.json").write_text(json.dumps({"recipe": _RECIPE_VERSION}))
    try:
        os.replace(tmp, target)
    except OSError:
        # Another process won the race and its copy is equally good.
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


def _is_current(path: Path) -> bool:
    stamp = path / "gateway-demo.json"
    try:
        return bool(json.loads(stamp.read_text()).get("recipe") == _RECIPE_VERSION)
    except (OSError, ValueError):
        return False


def _build_causal(out: Path) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = _build_tokenizer(with_languages=False)
    torch.manual_seed(_SEED)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config).eval()
    _damp_unprintable(model, _printable_byte_ids(tok), tok.eos_token_id)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.bos_token_id = tok.bos_token_id
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)


def _build_seq2seq(out: Path) -> None:
    import torch
    from transformers import BartConfig, BartForConditionalGeneration

    tok = _build_tokenizer(with_languages=True)
    torch.manual_seed(_SEED + 1)
    config = BartConfig(
        vocab_size=len(tok),
        d_model=64,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=128,
        decoder_ffn_dim=128,
        max_position_embeddings=1024,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        decoder_start_token_id=tok.bos_token_id,
        forced_eos_token_id=None,
        tie_word_embeddings=False,
    )
    model = BartForConditionalGeneration(config).eval()
    _damp_unprintable(model, _printable_byte_ids(tok), tok.eos_token_id)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.decoder_start_token_id = tok.bos_token_id
    model.generation_config.forced_eos_token_id = None
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    (out / "gateway-languages.json").write_text(
        json.dumps({"style": "target_token", "languages": list(DEMO_LANGUAGES)})
    )


def _build_bench_causal(out: Path) -> None:
    """A Llama a few times the demo's size (6 layers, width 384), so that a batched step is mostly compute, with
    ``ByT5Tokenizer``: byte-level, pure Python, no fast version (``AutoTokenizer`` loads it as it is)."""
    import torch
    from transformers import ByT5Tokenizer, LlamaConfig, LlamaForCausalLM

    tok = ByT5Tokenizer(extra_ids=0)
    tok.chat_template = _CHAT_TEMPLATE.replace("<s>", "")
    torch.manual_seed(_SEED + 2)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=384,
        intermediate_size=1024,
        num_hidden_layers=6,
        num_attention_heads=6,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        pad_token_id=tok.pad_token_id,
        bos_token_id=None,
        eos_token_id=tok.eos_token_id,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config).eval()
    printable = [tok.convert_tokens_to_ids(chr(b)) for b in range(32, 127) if chr(b).isalnum() or chr(b) in " .,!?'-"]
    _damp_unprintable(model, printable, tok.eos_token_id)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)


def ensure_bench_model(cache_dir: Path | None = None) -> Path:
    """Build the benchmark's second model into ``cache_dir`` unless it is there already; return its path. Not a
    demo model the gateway serves by itself: it is served as ``GATEWAY_MODEL=<path>`` like a user's model."""
    path = (cache_dir or default_cache_dir()) / "bench-llama"
    if not _is_current(path):
        if path.exists():
            import shutil

            shutil.rmtree(path, ignore_errors=True)
        _write_atomically(path, _build_bench_causal)
    return path


def ensure_demo_models(cache_dir: Path | None = None) -> dict[str, Path]:
    """Build the demo models into ``cache_dir`` unless they are there already; return id -> path."""
    root = cache_dir or default_cache_dir()
    paths = {DEMO_CAUSAL_ID: root / "tiny-causal-lm", DEMO_SEQ2SEQ_ID: root / "tiny-seq2seq"}
    builders = {DEMO_CAUSAL_ID: _build_causal, DEMO_SEQ2SEQ_ID: _build_seq2seq}
    for model_id, path in paths.items():
        if not _is_current(path):
            if path.exists():
                import shutil

                shutil.rmtree(path, ignore_errors=True)
            _write_atomically(path, builders[model_id])
    return paths
