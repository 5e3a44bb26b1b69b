"""`--auth_config_file`: who may call what, as a typed `AuthConfig`.

The file is YAML (JSON, being YAML, is accepted too), local or in a model store:

    api_keys:                      # `Authorization: Bearer <key>` (REST), `authorization` metadata (gRPC)
      - sha256: "<hex digest of the key>"   # the key itself is never written down
        scopes: [infer, read]
        models: [mnist]            # optional: only these models
    jwt:                           # bearer tokens signed by an identity provider
      issuer: https://issuer.example
      audience: pyserving
      algorithms: [RS256, ES256]   # asymmetric only: "none" and HS* are refused
      jwks_url: https://issuer.example/.well-known/jwks.json   # or jwks_file, or public_key_file (PEM)
      scopes_claim: scope          # a space-separated string or a list
      models_claim: models         # optional claim; absent: every model
      leeway_seconds: 30
      jwks_refresh_seconds: 300
      jwks_refetch_cooldown_seconds: 10
    client_certificates:           # mutual TLS: a verified certificate's CN or SAN
      - name: ops.example.com
        scopes: [admin, read]
    failure_limit:                 # failed attempts one address may make in a window
      max_failures: 20
      window_seconds: 60

Scopes: `infer` (predict, classify, regress, multi-inference, V2 infer), `read` (status,
metadata, metrics), `admin` (config reload, profiler). Anything malformed raises
`AuthConfigError` with the reason; no secret is ever part of a message.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

__all__ = ["SCOPES", "INFER", "READ", "ADMIN", "AuthConfigError", "ApiKey", "JwtSettings", "ClientCertificate",
           "FailureLimit", "AuthConfig", "parse_auth_config"]

INFER, READ, ADMIN = "infer", "read", "admin"
SCOPES = frozenset((INFER, READ, ADMIN))
ASYMMETRIC_ALGORITHMS = frozenset(("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES256K",
                                   "ES384", "ES512", "EdDSA"))
_HEX_SHA256 = re.compile(r"[0-9a-fA-F]{64}")


class AuthConfigError(ValueError):
    pass


@dataclass(frozen=True)
class ApiKey:
    digest: bytes  # sha256 of the key
    scopes: frozenset[str]
    models: frozenset[str] | None  # None: every model


@dataclass(frozen=True)
class JwtSettings:
    issuer: str
    audience: str
    algorithms: tuple[str, ...]
    jwks_url: str = ""
    jwks_file: str = ""
    public_key_file: str = ""
    scopes_claim: str = "scope"
    models_claim: str = "models"
    leeway_seconds: float = 30.0
    jwks_refresh_seconds: float = 300.0
    jwks_refetch_cooldown_seconds: float = 10.0


@dataclass(frozen=True)
class ClientCertificate:
    name: str  # matched against the certificate's subject CN and its SANs
    scopes: frozenset[str]
    models: frozenset[str] | None


@dataclass(frozen=True)
class FailureLimit:
    max_failures: int = 20
    window_seconds: float = 60.0


@dataclass(frozen=True)
class AuthConfig:
    api_keys: tuple[ApiKey, ...] = ()
    jwt: JwtSettings | None = None
    client_certificates: tuple[ClientCertificate, ...] = ()
    failure_limit: FailureLimit = field(default_factory=FailureLimit)


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise AuthConfigError(f"{where}: expected a mapping")
    return value


def _known(entry: dict[str, Any], keys: set[str], where: str) -> None:
    unknown = sorted(str(k) for k in entry if k not in keys)
    if unknown:
        raise AuthConfigError(f"{where}: unknown field(s) {', '.join(unknown)}")


def _strings(value: Any, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise AuthConfigError(f"{where}: expected a list of non-empty strings")
    return value


def _scopes(entry: dict[str, Any], where: str) -> frozenset[str]:
    scopes = _strings(entry.get("scopes"), f"{where}.scopes")
    bad = sorted(set(scopes) - SCOPES)
    if bad:
        raise AuthConfigError(f"{where}.scopes: unknown scope(s) {', '.join(bad)} (known: admin, infer, read)")
    return frozenset(scopes)


def _models(entry: dict[str, Any], where: str) -> frozenset[str] | None:
    if entry.get("models") is None:
        return None
    return frozenset(_strings(entry["models"], f"{where}.models"))


def _number(entry: dict[str, Any], key: str, default: float, where: str) -> float:
    value = entry.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise AuthConfigError(f"{where}.{key}: expected a number >= 0")
    return float(value)


def _api_key(entry: Any, where: str) -> ApiKey:
    entry = _mapping(entry, where)
    _known(entry, {"sha256", "scopes", "models", "name"}, where)
    digest = entry.get("sha256")
    if not isinstance(digest, str) or not _HEX_SHA256.fullmatch(digest):
        raise AuthConfigError(f"{where}.sha256: expected the 64 hex digits of the key's SHA-256")
    return ApiKey(bytes.fromhex(digest), _scopes(entry, where), _models(entry, where))


def _jwt(entry: Any) -> JwtSettings:
    where = "jwt"
    entry = _mapping(entry, where)
    _known(entry, {"issuer", "audience", "algorithms", "jwks_url", "jwks_file", "public_key_file", "scopes_claim",
                   "models_claim", "leeway_seconds", "jwks_refresh_seconds", "jwks_refetch_cooldown_seconds"}, where)
    for key in ("issuer", "audience"):
        if not isinstance(entry.get(key), str) or not entry[key]:
            raise AuthConfigError(f"{where}.{key}: required (a non-empty string)")
    algorithms = _strings(entry.get("algorithms", ["RS256", "ES256"]), f"{where}.algorithms")
    bad = sorted(set(algorithms) - ASYMMETRIC_ALGORITHMS)
    if bad:
        raise AuthConfigError(f"{where}.algorithms: {', '.join(bad)} not allowed (asymmetric algorithms only: "
                              f"{', '.join(sorted(ASYMMETRIC_ALGORITHMS))})")
    sources = [k for k in ("jwks_url", "jwks_file", "public_key_file") if entry.get(k)]
    if len(sources) != 1:
        raise AuthConfigError(f"{where}: set exactly one of jwks_url, jwks_file, public_key_file")
    for key in ("jwks_url", "jwks_file", "public_key_file", "scopes_claim", "models_claim"):
        if key in entry and not isinstance(entry[key], str):
            raise AuthConfigError(f"{where}.{key}: expected a string")
    url = entry.get("jwks_url", "")
    if url and not url.startswith(("https://", "http://")):
        raise AuthConfigError(f"{where}.jwks_url: expected an http(s) URL")
    return JwtSettings(
        issuer=entry["issuer"], audience=entry["audience"], algorithms=tuple(algorithms),
        jwks_url=url, jwks_file=entry.get("jwks_file", ""), public_key_file=entry.get("public_key_file", ""),
        scopes_claim=entry.get("scopes_claim", "scope"), models_claim=entry.get("models_claim", "models"),
        leeway_seconds=_number(entry, "leeway_seconds", 30.0, where),
        jwks_refresh_seconds=_number(entry, "jwks_refresh_seconds", 300.0, where),
        jwks_refetch_cooldown_seconds=_number(entry, "jwks_refetch_cooldown_seconds", 10.0, where),
    )


def _client_certificate(entry: Any, where: str) -> ClientCertificate:
    entry = _mapping(entry, where)
    _known(entry, {"name", "scopes", "models"}, where)
    if not isinstance(entry.get("name"), str) or not entry["name"]:
        raise AuthConfigError(f"{where}.name: required (the certificate's CN or a SAN)")
    return ClientCertificate(entry["name"], _scopes(entry, where), _models(entry, where))


def _failure_limit(entry: Any) -> FailureLimit:
    entry = _mapping(entry, "failure_limit")
    _known(entry, {"max_failures", "window_seconds"}, "failure_limit")
    limit = _number(entry, "max_failures", 20, "failure_limit")
    if limit != int(limit) or limit < 1:
        raise AuthConfigError("failure_limit.max_failures: expected an integer >= 1")
    return FailureLimit(int(limit), _number(entry, "window_seconds", 60.0, "failure_limit"))


def _load_document(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        import yaml
    except ImportError:  # pragma: no cover - the `auth` extra is missing
        raise AuthConfigError("a YAML auth config needs PyYAML (pip install 'pyserving[auth]'); "
                              "JSON needs nothing") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise AuthConfigError(f"not valid YAML or JSON: {exc}") from None


def parse_auth_config(text: str) -> AuthConfig:
    document = _load_document(text)
    if document is None:
        document = {}
    document = _mapping(document, "auth config")
    _known(document, {"api_keys", "jwt", "client_certificates", "failure_limit"}, "auth config")
    keys = document.get("api_keys") or []
    if not isinstance(keys, list):
        raise AuthConfigError("api_keys: expected a list")
    certs = document.get("client_certificates") or []
    if not isinstance(certs, list):
        raise AuthConfigError("client_certificates: expected a list")
    return AuthConfig(
        api_keys=tuple(_api_key(e, f"api_keys[{i}]") for i, e in enumerate(keys)),
        jwt=_jwt(document["jwt"]) if document.get("jwt") is not None else None,
        client_certificates=tuple(_client_certificate(e, f"client_certificates[{i}]") for i, e in enumerate(certs)),
        failure_limit=_failure_limit(document["failure_limit"]) if "failure_limit" in document else FailureLimit(),
    )
