"""Guard: authenticates a request's credentials and decides whether its scope allows the
operation, for every front end.

    denial = await guard.check(entrypoint="rest", address="10.0.0.7", bearer=token,
                               peer_names=names, scope=INFER, model="mnist")
    # None: go on; else a ServingError to answer (UNAUTHENTICATED, PERMISSION_DENIED, or
    # RESOURCE_EXHAUSTED for an address over the failure limit)

Credentials, in this order: a bearer value (an API key, compared with every configured key's
SHA-256 in constant time; else a JWT when `jwt:` is configured), then the names of a verified
client certificate (mutual TLS) matched against `client_certificates`. Operations on one
model name it; with a `models` list, only those models are allowed, and operations on no
particular model (`model=None`: config reload, the profiler, metrics) need a principal with
no such list. Messages tell the client no more than which rule failed (never whether a key
or user exists); every denial is counted (`pyserving_auth_denials_total`) and logged once
with the address and the reason.

`reload(config)` swaps the rules in one assignment: a request sees the old rules or the new.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from dataclasses import dataclass
from typing import Callable, Sequence

from pyserving.auth.config import AuthConfig
from pyserving.auth.jwt_verifier import InvalidToken, JwtVerifier, Principal
from pyserving.auth.limiter import FailureLimiter
from pyserving.errors import Code, ServingError

__all__ = ["Guard", "bearer_token", "UNAUTHENTICATED_MESSAGE"]

log = logging.getLogger("pyserving.auth")

UNAUTHENTICATED_MESSAGE = "Missing or invalid credentials"
_LIMITED_MESSAGE = "Too many failed authentication attempts from this address; retry later"


def bearer_token(value: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` value; None for any other form."""
    if not value or len(value) < 8 or value[:7].lower() != "bearer ":
        return None
    token = value[7:].strip()
    return token or None


@dataclass(frozen=True)
class _Rules:
    config: AuthConfig
    keys: tuple[tuple[bytes, Principal], ...]
    certificates: dict[str, Principal]
    verifier: JwtVerifier | None


class Guard:
    def __init__(self, config: AuthConfig, *, denials: Callable[[str, str], None] | None = None) -> None:
        """`denials(entrypoint, reason)`: counts a denial (a metric)."""
        self._denials = denials or (lambda entrypoint, reason: None)
        self.limiter = FailureLimiter(config.failure_limit.max_failures, config.failure_limit.window_seconds)
        self._rules = self._build(config, None)

    @staticmethod
    def _build(config: AuthConfig, previous: _Rules | None) -> _Rules:
        keys = tuple((k.digest, Principal(f"api key #{i + 1}", k.scopes, k.models))
                     for i, k in enumerate(config.api_keys))
        certificates = {c.name: Principal(f"client certificate {c.name}", c.scopes, c.models)
                        for c in config.client_certificates}
        verifier = None
        if config.jwt is not None:
            same = previous is not None and previous.verifier is not None and previous.verifier.settings == config.jwt
            verifier = previous.verifier if same and previous is not None else JwtVerifier(config.jwt)
        return _Rules(config, keys, certificates, verifier)

    @property
    def config(self) -> AuthConfig:
        return self._rules.config

    @property
    def verifier(self) -> JwtVerifier | None:
        return self._rules.verifier

    async def start(self) -> None:
        if self._rules.verifier is not None:
            await self._rules.verifier.start()

    async def stop(self) -> None:
        if self._rules.verifier is not None:
            await self._rules.verifier.stop()

    async def reload(self, config: AuthConfig) -> None:
        """Apply a new config (its key set fetched before it applies, when it is new)."""
        rules = self._build(config, self._rules)
        old = self._rules.verifier
        if rules.verifier is not None and rules.verifier is not old:
            await rules.verifier.start()
        self._rules = rules
        self.limiter.configure(config.failure_limit.max_failures, config.failure_limit.window_seconds)
        if old is not None and old is not rules.verifier:
            await old.stop()

    @property
    def wants_peer_names(self) -> bool:
        return bool(self._rules.certificates)

    def _api_key(self, rules: _Rules, token: str) -> Principal | None:
        digest = hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()
        found = None
        for expected, principal in rules.keys:  # every key compared: the time says nothing
            if hmac.compare_digest(expected, digest):
                found = principal
        return found

    async def authenticate(self, bearer: str | None,
                           peer_names: Callable[[], Sequence[str]] | None) -> tuple[Principal | None, str]:
        """(principal, "") or (None, the reason, for the log)."""
        rules = self._rules
        if bearer is not None:
            principal = self._api_key(rules, bearer)
            if principal is not None:
                return principal, ""
            if rules.verifier is not None and bearer.count(".") == 2:
                try:
                    return await rules.verifier.verify(bearer), ""
                except InvalidToken as exc:
                    return None, f"invalid token ({exc})"
            return None, "unknown API key" if rules.keys else "invalid bearer credentials"
        if rules.certificates and peer_names is not None:
            for name in peer_names():
                principal = rules.certificates.get(name)
                if principal is not None:
                    return principal, ""
            return None, "client certificate not mapped to any scope"
        return None, "no credentials"

    async def check(self, *, entrypoint: str, address: str, bearer: str | None,
                    peer_names: Callable[[], Sequence[str]] | None, scope: str, model: str | None,
                    what: str) -> ServingError | None:
        limiter = self.limiter
        if limiter.blocked(address):
            self._denials(entrypoint, "limited")
            return ServingError(Code.RESOURCE_EXHAUSTED, _LIMITED_MESSAGE)
        principal, reason = await self.authenticate(bearer, peer_names)
        if principal is None:
            self._denials(entrypoint, "missing" if reason == "no credentials" else "invalid")
            log.warning("Denied %s from %s: %s", what, address, reason)
            if limiter.failed(address):
                log.warning("Refusing %s for %g s: %d failed authentication attempts", address,
                            limiter.window_seconds, limiter.max_failures)
            return ServingError(Code.UNAUTHENTICATED, UNAUTHENTICATED_MESSAGE)
        if scope not in principal.scopes:
            self._denials(entrypoint, "forbidden")
            log.warning("Denied %s from %s: %s lacks the %s scope", what, address, principal.name, scope)
            return ServingError(Code.PERMISSION_DENIED, f"Permission denied: the {scope} scope is required")
        if principal.models is not None and (model is None or model not in principal.models):
            self._denials(entrypoint, "forbidden")
            log.warning("Denied %s from %s: %s is not allowed %s", what, address, principal.name,
                        f"model {model!r}" if model is not None else "server-wide operations")
            return ServingError(Code.PERMISSION_DENIED, "Permission denied for this model" if model is not None
                                else "Permission denied: a credential limited to models cannot do this")
        return None
