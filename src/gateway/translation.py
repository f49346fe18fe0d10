"""Translation on top of a model service: language checks and turning segments into model inputs.

Each model declares the languages it accepts (``TranslationSpec``); a code outside them is refused with 422
naming it, before anything is queued. Segments of one request become rows of the same batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

from gateway.errors import InvalidRequest
from gateway.languages import LANGUAGE_NAMES, language_name, parse_language
from gateway.runners.base import TranslationSpec
from gateway.service import Generation, ModelService, TokenBudget
from gateway.types import GenerationParams

_T5_NAMES = {"en": "English", "de": "German", "fr": "French", "ro": "Romanian"}


class Translator:
    """Turns translation requests into rows of one model's service, in that model's style."""

    def __init__(self, service: ModelService, spec: TranslationSpec, prompt_template: str) -> None:
        self.service = service
        self.spec = spec
        self.template = prompt_template

    @property
    def languages(self) -> tuple[str, ...]:
        return self.spec.languages

    def check_languages(self, source: str, target: str) -> tuple[str, str]:
        """Return the normalized (source, target) tags or raise ``InvalidRequest`` naming the bad one."""
        src = self._check("source_lang", source, self.spec.source_languages or self.spec.languages)
        tgt = self._check("target_lang", target, self.spec.languages)
        return src, tgt

    @staticmethod
    def _check(field: str, code: str, allowed: Sequence[str]) -> str:
        parsed = parse_language(code)
        if parsed is None:
            raise InvalidRequest(f"{field}: {code!r} is not an ISO 639-1 language code")
        base, tag = parsed
        if base not in allowed:
            raise InvalidRequest(f"{field}: {code!r} is not supported by this model; supported: {', '.join(allowed)}")
        return tag

    async def translate(
        self,
        texts: Sequence[str],
        source: str,
        target: str,
        params: GenerationParams,
        timeout_s: float,
        budget: TokenBudget | None = None,
    ) -> Generation:
        """Translate each segment as a row of one request; the outputs in segment order (``budget``: the key's
        token account, charged at admission)."""
        prompts = [self._prompt(t, source, target) for t in texts]
        encode: Callable[[str], list[int]] | None = None
        if self.spec.style == "forced_bos":
            params, encode = self._forced_bos(params, source, target)
        result = await self.service.generate(prompts, [params] * len(prompts), timeout_s, encode, budget)
        for out in result.outputs:
            out.text = out.text.strip()
        return result

    def _prompt(self, text: str, source: str, target: str) -> str:
        src_base, tgt_base = source.split("-")[0], target.split("-")[0]
        style = self.spec.style
        if style == "target_token":
            return self.spec.language_tokens[tgt_base] + text
        if style == "t5_prefix":
            return f"translate {_T5_NAMES.get(src_base, src_base)} to {_T5_NAMES.get(tgt_base, tgt_base)}: {text}"
        if style == "template":
            message = (
                self.template.replace("{source_lang}", language_name(source))
                .replace("{target_lang}", language_name(target))
                .replace("{text}", text)
            )
            return self.service.runner.render_chat(message) or message
        return text

    def _forced_bos(
        self, params: GenerationParams, source: str, target: str
    ) -> tuple[GenerationParams, Callable[[str], list[int]]]:
        runner = self.service.runner
        tokens = self.spec.language_tokens
        tgt_id = runner.token_id(tokens[target.split("-")[0]])
        src_id = runner.token_id(tokens[source.split("-")[0]])
        lang_ids = {runner.token_id(t) for t in tokens.values()}
        params = replace(params, sampling=replace(params.sampling, forced_bos_token_id=tgt_id))

        def encode(text: str) -> list[int]:
            # NLLB/M2M100 tokenizers put their default source-language token first; swap in the request's.
            ids = runner.encode(text)
            if ids and ids[0] in lang_ids and src_id is not None:
                ids[0] = src_id
            return ids

        return params, encode


def default_template_languages() -> tuple[str, ...]:
    return tuple(sorted(LANGUAGE_NAMES))
