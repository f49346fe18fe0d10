"""Named API keys: who a request is, and that key's limits.

Keys come from ``GATEWAY_API_KEYS_FILE``, a YAML list of ``{name, sha256, requests_per_minute?,
tokens_per_minute?, max_concurrent?}`` where ``sha256`` is the hex SHA-256 of the key (so the file holds no
secret), and from ``GATEWAY_API_KEY``, one key named ``default`` with no limits. ``KeyRing.identify`` hashes the
presented key and compares it with every stored hash in constant time; only the key's name ever leaves this
module (logs, metric labels).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from gateway.settings import Settings

__all__ = ["DEFAULT_KEY_NAME", "ApiKey", "KeyFileError", "KeyLimits", "KeyRing", "key_ring", "parse_key_file"]

DEFAULT_KEY_NAME = "default"
_HEX_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
# Names become metric label values and log fields: short, plain, no spaces.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,63}$")
_LIMIT_FIELDS = ("requests_per_minute", "tokens_per_minute", "max_concurrent")


class KeyFileError(ValueError):
    """The key file cannot be used; the message names the entry and field at fault (never a key)."""


@dataclass(frozen=True)
class KeyLimits:
    """A key's limits; None: unlimited."""

    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    max_concurrent: int | None = None


@dataclass(frozen=True)
class ApiKey:
    name: str
    digest: bytes  # SHA-256 of the key
    limits: KeyLimits = KeyLimits()

    def __repr__(self) -> str:  # the digest stays out of reprs and tracebacks
        return f"ApiKey(name={self.name!r}, limits={self.limits!r})"


def sha256_digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


class KeyRing:
    """The configured keys; empty: the gateway is open (no key needed anywhere)."""

    def __init__(self, keys: Iterable[ApiKey]) -> None:
        self.keys: tuple[ApiKey, ...] = tuple(keys)
        names = [k.name for k in self.keys]
        if len(set(names)) != len(names):
            raise KeyFileError("key names must be unique")
        if len({k.digest for k in self.keys}) != len(self.keys):
            raise KeyFileError("the same key (sha256) appears twice")

    def __bool__(self) -> bool:
        return bool(self.keys)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(k.name for k in self.keys)

    def identify(self, presented: str) -> ApiKey | None:
        """The key ``presented`` is, or None. Every stored digest is compared (``hmac.compare_digest``), so the
        time taken says nothing about which key, or how much of one, matched."""
        if not presented:
            return None
        digest = sha256_digest(presented)
        found: ApiKey | None = None
        for key in self.keys:
            if hmac.compare_digest(digest, key.digest):
                found = key
        return found


def _limit(entry: dict[str, Any], field: str, where: str) -> int | None:
    value = entry.get(field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise KeyFileError(f"{where}: {field} must be a positive integer")
    return value


def _entry(raw: object, index: int) -> ApiKey:
    where = f"entry {index}"
    if not isinstance(raw, dict):
        raise KeyFileError(f"{where}: must be a mapping with name and sha256")
    unknown = sorted(set(raw) - {"name", "sha256", *_LIMIT_FIELDS})
    if unknown:
        raise KeyFileError(f"{where}: unknown field(s) {', '.join(map(str, unknown))}")
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise KeyFileError(f"{where}: name must be 1-64 characters of letters, digits, '.', '_' or '-'")
    where = f"key {name!r}"
    digest = raw.get("sha256")
    if not isinstance(digest, str) or not _HEX_SHA256.match(digest.strip()):
        raise KeyFileError(f"{where}: sha256 must be the 64 hex digits of the key's SHA-256")
    limits = KeyLimits(*(_limit(raw, field, where) for field in _LIMIT_FIELDS))
    return ApiKey(name=name, digest=bytes.fromhex(digest.strip()), limits=limits)


def parse_key_file(text: str) -> list[ApiKey]:
    """The keys of a key file's YAML text (a non-empty list of entries); ``KeyFileError`` when it is not one."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise KeyFileError(f"not valid YAML: {exc}") from None
    if not isinstance(data, list) or not data:
        raise KeyFileError("the key file must be a non-empty YAML list of {name, sha256, ...} entries")
    return [_entry(raw, i) for i, raw in enumerate(data)]


def key_ring(settings: Settings) -> KeyRing:
    """The keys the settings configure: the key file's, and ``GATEWAY_API_KEY`` as the key ``default``."""
    keys: list[ApiKey] = []
    if settings.api_keys_file is not None:
        path = Path(settings.api_keys_file)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise KeyFileError(f"cannot read the key file {path}: {exc.strerror}") from None
        keys += parse_key_file(text)
    if settings.api_key is not None and settings.api_key.get_secret_value():
        if any(k.name == DEFAULT_KEY_NAME for k in keys):
            raise KeyFileError(f"GATEWAY_API_KEY is the key {DEFAULT_KEY_NAME!r}; the key file may not use that name")
        keys.append(ApiKey(DEFAULT_KEY_NAME, sha256_digest(settings.api_key.get_secret_value())))
    return KeyRing(keys)
