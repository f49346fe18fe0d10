"""Language codes: ISO 639-1 with an optional script or region subtag (``zh-Hant``, ``pt-BR``)."""

from __future__ import annotations

import re

LANGUAGE_NAMES: dict[str, str] = {
    "ar": "Arabic", "bn": "Bengali", "cs": "Czech", "da": "Danish", "de": "German", "el": "Greek",
    "en": "English", "es": "Spanish", "fa": "Persian", "fi": "Finnish", "fr": "French", "he": "Hebrew",
    "hi": "Hindi", "hu": "Hungarian", "id": "Indonesian", "it": "Italian", "ja": "Japanese", "km": "Khmer",
    "ko": "Korean", "ms": "Malay", "my": "Burmese", "nl": "Dutch", "no": "Norwegian", "pl": "Polish",
    "pt": "Portuguese", "ro": "Romanian", "ru": "Russian", "sv": "Swedish", "th": "Thai", "tl": "Filipino",
    "tr": "Turkish", "uk": "Ukrainian", "ur": "Urdu", "vi": "Vietnamese", "zh": "Chinese",
}  # fmt: skip

# NLLB's FLORES-200 codes for the ISO 639-1 codes above (M2M100 uses the plain ISO codes).
NLLB_CODES: dict[str, str] = {
    "ar": "arb_Arab", "bn": "ben_Beng", "cs": "ces_Latn", "da": "dan_Latn", "de": "deu_Latn",
    "el": "ell_Grek", "en": "eng_Latn", "es": "spa_Latn", "fa": "pes_Arab", "fi": "fin_Latn",
    "fr": "fra_Latn", "he": "heb_Hebr", "hi": "hin_Deva", "hu": "hun_Latn", "id": "ind_Latn",
    "it": "ita_Latn", "ja": "jpn_Jpan", "km": "khm_Khmr", "ko": "kor_Hang", "ms": "zsm_Latn",
    "my": "mya_Mymr", "nl": "nld_Latn", "no": "nob_Latn", "pl": "pol_Latn", "pt": "por_Latn",
    "ro": "ron_Latn", "ru": "rus_Cyrl", "sv": "swe_Latn", "th": "tha_Thai", "tl": "tgl_Latn",
    "tr": "tur_Latn", "uk": "ukr_Cyrl", "ur": "urd_Arab", "vi": "vie_Latn", "zh": "zho_Hans",
}  # fmt: skip

_TAG = re.compile(r"^(?P<base>[A-Za-z]{2})(?:-(?P<script>[A-Za-z]{4}))?(?:-(?P<region>[A-Za-z]{2}|\d{3}))?$")


def parse_language(code: str) -> tuple[str, str] | None:
    """Return (base, normalized tag) for a well-formed tag, else None. ``ZH-hant`` -> (``zh``, ``zh-Hant``)."""
    match = _TAG.match(code.strip())
    if match is None:
        return None
    base = match["base"].lower()
    parts = [base]
    if match["script"]:
        parts.append(match["script"].title())
    if match["region"]:
        parts.append(match["region"].upper())
    return base, "-".join(parts)


def language_name(tag: str) -> str:
    """English name for the prompt template; a script subtag is spelled out for Chinese."""
    parsed = parse_language(tag)
    if parsed is None:
        return tag
    base, norm = parsed
    name = LANGUAGE_NAMES.get(base, base)
    if norm.startswith("zh-Hant"):
        return "Traditional Chinese"
    return name
