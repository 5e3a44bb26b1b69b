"""The auth file: what it accepts, and the reasons it refuses (with no secret in them)."""

from __future__ import annotations

import hashlib

import pytest

from pyserving.auth import AuthConfigError, parse_auth_config

DIGEST = hashlib.sha256(b"k").hexdigest()


def test_yaml_and_json_give_the_same_config():
    yaml_text = f"""
api_keys:
  - sha256: {DIGEST}
    scopes: [infer, read]
    models: [mnist]
jwt:
  issuer: https://i
  audience: a
  jwks_url: https://i/jwks
client_certificates:
  - name: ops
    scopes: [admin]
failure_limit: {{max_failures: 3, window_seconds: 5}}
"""
    json_text = ('{"api_keys": [{"sha256": "%s", "scopes": ["infer", "read"], "models": ["mnist"]}],'
                 '"jwt": {"issuer": "https://i", "audience": "a", "jwks_url": "https://i/jwks"},'
                 '"client_certificates": [{"name": "ops", "scopes": ["admin"]}],'
                 '"failure_limit": {"max_failures": 3, "window_seconds": 5}}') % DIGEST
    config = parse_auth_config(yaml_text)
    assert config == parse_auth_config(json_text)
    key = config.api_keys[0]
    assert key.digest == bytes.fromhex(DIGEST) and key.scopes == {"infer", "read"} and key.models == {"mnist"}
    assert config.jwt is not None and config.jwt.algorithms == ("RS256", "ES256")
    assert config.failure_limit.max_failures == 3


def test_an_empty_file_configures_nobody():
    config = parse_auth_config("")
    assert config.api_keys == () and config.jwt is None and config.client_certificates == ()


@pytest.mark.parametrize("text,reason", [
    ("api_keys: [{sha256: abc, scopes: [read]}]", "64 hex digits"),
    (f"api_keys: [{{sha256: {DIGEST}, scopes: [write]}}]", "unknown scope(s) write"),
    (f"api_keys: [{{sha256: {DIGEST}}}]", "expected a list of non-empty strings"),
    (f"api_keys: [{{sha256: {DIGEST}, scopes: [read], key: secret}}]", "unknown field(s) key"),
    ("jwt: {issuer: i, audience: a, jwks_url: https://x, algorithms: [HS256]}", "HS256 not allowed"),
    ("jwt: {issuer: i, audience: a, jwks_url: https://x, algorithms: [none]}", "none not allowed"),
    ("jwt: {issuer: i, audience: a}", "exactly one of jwks_url"),
    ("jwt: {issuer: i, audience: a, jwks_url: https://x, jwks_file: /f}", "exactly one of jwks_url"),
    ("jwt: {issuer: i, audience: a, jwks_url: file:///etc/passwd}", "http(s) URL"),
    ("jwt: {audience: a, jwks_url: https://x}", "jwt.issuer: required"),
    ("failure_limit: {max_failures: 0}", "integer >= 1"),
    ("[1, 2]", "expected a mapping"),
    ("api_keys: {a: b", "not valid YAML or JSON"),
    ("tokens: []", "unknown field(s) tokens"),
])
def test_malformed_files_say_why(text, reason):
    with pytest.raises(AuthConfigError, match=None) as info:
        parse_auth_config(text)
    assert reason in str(info.value)
    assert "secret" not in str(info.value)
