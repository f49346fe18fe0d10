"""Named API keys (``gateway.keys``): the key file, ``GATEWAY_API_KEY`` as ``default``, identification; and the
HTTP side's header parsing and OpenAPI declaration (``gateway.http.keys``)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from gateway.http.keys import credentials, declare_security, presented_key
from gateway.keys import DEFAULT_KEY_NAME, KeyFileError, KeyLimits, KeyRing, key_ring, parse_key_file
from gateway.settings import Settings


def sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


KEY_FILE = f"""
- name: team-a
  sha256: {sha("alpha-key")}
  requests_per_minute: 60
  tokens_per_minute: 10000
  max_concurrent: 4
- name: batch.jobs
  sha256: {sha("beta-key").upper()}
"""


def test_a_key_file_gives_named_keys_with_their_limits() -> None:
    a, b = parse_key_file(KEY_FILE)
    assert a.name == "team-a" and a.limits == KeyLimits(60, 10000, 4)
    assert b.name == "batch.jobs" and b.limits == KeyLimits()  # no limits: unlimited
    ring = KeyRing([a, b])
    assert ring.identify("alpha-key") is a
    assert ring.identify("beta-key") is b  # the hash was written in upper case
    assert ring.identify("alpha-key ") is None and ring.identify("") is None and ring.identify("ALPHA-KEY") is None
    assert sha("alpha-key") not in repr(a) and "alpha" not in repr(a)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "non-empty YAML list"),
        ("[]", "non-empty YAML list"),
        ("name: a", "non-empty YAML list"),
        ("- [unclosed", "not valid YAML"),
        ("- just-a-string", "entry 0: must be a mapping"),
        (f"- {{name: a, sha256: {sha('k')}, colour: red}}", "unknown field(s) colour"),
        (f"- {{name: 'has space', sha256: {sha('k')}}}", "entry 0: name must be"),
        (f"- {{sha256: {sha('k')}}}", "entry 0: name must be"),
        ("- {name: a, sha256: not-hex}", "key 'a': sha256 must be"),
        (f"- {{name: a, sha256: {sha('k')[:-1]}}}", "key 'a': sha256 must be"),
        (f"- {{name: a, sha256: {sha('k')}, requests_per_minute: 0}}", "requests_per_minute must be a positive"),
        (f"- {{name: a, sha256: {sha('k')}, tokens_per_minute: 1.5}}", "tokens_per_minute must be a positive"),
        (f"- {{name: a, sha256: {sha('k')}, max_concurrent: true}}", "max_concurrent must be a positive"),
    ],
)
def test_a_bad_key_file_is_refused_naming_what_is_wrong(text: str, problem: str) -> None:
    with pytest.raises(KeyFileError) as caught:
        parse_key_file(text)
    assert problem in str(caught.value)


def test_names_and_keys_are_unique() -> None:
    with pytest.raises(KeyFileError, match="names must be unique"):
        KeyRing(parse_key_file(f"- {{name: a, sha256: {sha('1')}}}\n- {{name: a, sha256: {sha('2')}}}"))
    with pytest.raises(KeyFileError, match="appears twice"):
        KeyRing(parse_key_file(f"- {{name: a, sha256: {sha('1')}}}\n- {{name: b, sha256: {sha('1')}}}"))


def test_settings_give_the_file_keys_and_the_single_key_as_default(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text(KEY_FILE)
    ring = key_ring(Settings(api_keys_file=path, api_key="single-key"))
    assert ring.names == ("team-a", "batch.jobs", DEFAULT_KEY_NAME)
    default = ring.identify("single-key")
    assert default is not None and default.name == "default" and default.limits == KeyLimits()
    assert not key_ring(Settings())  # no key at all: the gateway is open
    assert key_ring(Settings(api_key="only")).names == (DEFAULT_KEY_NAME,)

    path.write_text(f"- {{name: default, sha256: {sha('x')}}}")
    with pytest.raises(KeyFileError, match="may not use that name"):
        key_ring(Settings(api_keys_file=path, api_key="single-key"))
    with pytest.raises(KeyFileError, match="cannot read the key file"):
        key_ring(Settings(api_keys_file=tmp_path / "missing.yaml"))


@pytest.mark.parametrize(
    ("authorization", "x_api_key", "presented"),
    [
        ("Bearer k1", "", "k1"),
        ("bearer k1", "", "k1"),  # the scheme is case-insensitive (RFC 7235 2.1)
        ("BEARER    k1", "", "k1"),  # 1*SP after the scheme
        (" \tBearer k1 \t", "", "k1"),  # optional whitespace around the field value
        ("Bearer\tk1", "", "k1"),
        ("Bearer k1", "k2", "k1"),  # a bearer token wins
        ("Basic dXNlcjpwdw==", "k2", "k2"),  # another scheme: the header key, if any
        ("Basic dXNlcjpwdw==", "", ""),
        ("Bearer", "k2", "k2"),  # a scheme with no token
        ("Bearer   ", "", ""),
        ("", " k2\t", "k2"),
        ("Bearerk1", "", ""),  # no separator: the scheme "bearerk1"
    ],
)
def test_the_key_a_request_presents(authorization: str, x_api_key: str, presented: str) -> None:
    assert presented_key(authorization, x_api_key) == presented


def test_credentials_split_scheme_and_rest() -> None:
    assert credentials("Digest  a=1, b=2") == ("digest", "a=1, b=2")
    assert credentials("  ") is None and credentials("") is None


def test_openapi_declares_the_schemes_on_protected_operations_only() -> None:
    schema = {
        "paths": {
            "/generate": {"post": {"responses": {}}},
            "/health": {"get": {"responses": {}}},
            "/admin/faults": {"post": {}, "delete": {}, "parameters": []},
        }
    }
    out = declare_security(schema, ["/health"])
    schemes = out["components"]["securitySchemes"]
    assert schemes["bearerAuth"] == {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer <key>"}
    assert schemes["apiKeyHeader"] == {"type": "apiKey", "in": "header", "name": "X-API-Key"}
    either = [{"bearerAuth": []}, {"apiKeyHeader": []}]
    assert out["paths"]["/generate"]["post"]["security"] == either
    assert out["paths"]["/admin/faults"]["delete"]["security"] == either
    assert out["paths"]["/health"]["get"]["security"] == []
    assert out["paths"]["/admin/faults"]["parameters"] == []  # not an operation: untouched
