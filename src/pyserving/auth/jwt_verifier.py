"""JwtVerifier: bearer tokens checked with PyJWT against a key set (JWKS URL or file, or a
PEM public key).

Checked: the signature (only the configured asymmetric algorithms, so `alg: none` and an
HS256 token signed with the public key are refused), `iss`, `aud`, `exp` (required),
`nbf`, within `leeway_seconds`. A verified token is cached by its string until it
expires (at most `CACHE_SIZE` of them), so a client reusing its token costs one dict
lookup per request; the cache is emptied whenever the key set changes, so a key dropped
from the set stops its tokens at once.

The key set is fetched off the event loop: at start, every `jwks_refresh_seconds`, and
once for a `kid` it does not hold (then not again for that kid; and not more than once per
`jwks_refetch_cooldown_seconds` whatever the kids, so random kids cannot make the server
hammer the identity provider). Concurrent requests wanting a fetch share one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import urllib.request
from dataclasses import dataclass
from typing import Any, Callable

from pyserving.auth.config import AuthConfigError, JwtSettings
from pyserving.sources import stores

__all__ = ["Principal", "InvalidToken", "JwtVerifier", "CACHE_SIZE"]

log = logging.getLogger("pyserving.auth")

CACHE_SIZE = 10_000
_FETCH_TIMEOUT_SECONDS = 10.0
_TRIED_KIDS = 1_000


@dataclass(frozen=True)
class Principal:
    """Who a request comes from and what it may do; `models` None: every model."""

    name: str  # for logs; never a secret
    scopes: frozenset[str]
    models: frozenset[str] | None = None


class InvalidToken(Exception):
    """The token is not acceptable; the message is for the log, never for the client."""


def _read_url(url: str) -> str:
    with urllib.request.urlopen(url, timeout=_FETCH_TIMEOUT_SECONDS) as response:  # noqa: S310 - http(s) only
        return response.read(1 << 20).decode()


class JwtVerifier:
    def __init__(self, settings: JwtSettings, *, fetch_url: Callable[[str], str] = _read_url) -> None:
        try:
            import jwt  # the `auth` extra
        except ImportError:
            raise AuthConfigError("jwt: verifying tokens needs PyJWT (pip install 'pyserving[auth]')") from None

        self._jwt = jwt
        self.settings = settings
        self._fetch_url = fetch_url
        # kid (None: a key without one) -> (PyJWK, the JWK as a dict)
        self._keys: dict[str | None, tuple[Any, dict[str, Any]]] = {}
        self._cache: dict[str, tuple[Principal, float]] = {}  # token -> (principal, exp)
        self._fetching: asyncio.Future[None] | None = None
        self._last_fetch = float("-inf")
        self._tried_kids: dict[str, None] = {}
        self._task: asyncio.Task[None] | None = None

    # -- the key set ------------------------------------------------------------------------
    def _load_keys(self) -> dict[str | None, tuple[Any, dict[str, Any]]]:
        """Blocking: read and parse the key set (a worker thread calls it)."""
        s = self.settings
        jwt = self._jwt
        if s.public_key_file:
            pem = stores.read_text(s.public_key_file)
            algorithm = jwt.get_algorithm_by_name(s.algorithms[0])
            data = {**json.loads(algorithm.to_jwk(algorithm.prepare_key(pem))), "alg": s.algorithms[0]}
            return {None: (jwt.PyJWK.from_dict(data), data)}
        text = self._fetch_url(s.jwks_url) if s.jwks_url else stores.read_text(s.jwks_file)
        keys: dict[str | None, tuple[Any, dict[str, Any]]] = {}
        for entry in json.loads(text).get("keys", []):
            if entry.get("use", "sig") != "sig" or entry.get("kty") == "oct":
                continue  # encryption keys and shared secrets never verify a token here
            try:
                key = jwt.PyJWK.from_dict(entry)
            except jwt.PyJWTError as exc:
                log.warning("JWKS key %s skipped: %s", entry.get("kid"), exc)
                continue
            keys[key.key_id] = (key, entry)
        return keys

    async def refresh(self) -> None:
        """Fetch the key set now (shared with any fetch under way); a failure keeps the old set."""
        if self._fetching is None:
            self._fetching = asyncio.ensure_future(self._fetch())
        fetching = self._fetching
        await asyncio.shield(fetching)

    async def _fetch(self) -> None:
        try:
            self._last_fetch = time.monotonic()
            keys = await asyncio.to_thread(self._load_keys)
        except Exception as exc:  # an unreachable provider: keep what we have
            source = self.settings.jwks_url or self.settings.jwks_file or self.settings.public_key_file
            log.error("Cannot read the JWT key set from %s: %s", source, exc)
        else:
            if {k: v[1] for k, v in keys.items()} != {k: v[1] for k, v in self._keys.items()}:
                log.info("JWT key set: %d key(s) (kids: %s)", len(keys),
                         ", ".join(sorted(str(k) for k in keys)) or "none")
                self._keys = keys
                self._cache.clear()
        finally:
            self._fetching = None

    async def start(self) -> None:
        await self.refresh()
        if self.settings.jwks_refresh_seconds > 0 and not self.settings.public_key_file:
            self._task = asyncio.create_task(self._refresh_loop(), name="jwks-refresh")

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.jwks_refresh_seconds)
            await self.refresh()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    # -- tokens -----------------------------------------------------------------------------
    async def verify(self, token: str) -> Principal:
        cached = self._cache.get(token)
        if cached is not None:
            if cached[1] > time.time():
                return cached[0]
            del self._cache[token]
        jwt = self._jwt
        try:
            header = jwt.get_unverified_header(token)
        except (jwt.PyJWTError, ValueError, TypeError) as exc:
            raise InvalidToken(f"malformed token: {exc}") from None
        kid = header.get("kid")
        if not isinstance(kid, (str, type(None))):
            raise InvalidToken("malformed token: kid is not a string")
        s = self.settings
        found = self._keys.get(None if s.public_key_file else kid)
        if found is None and kid is not None and not s.public_key_file and await self._refetch_for(kid):
            found = self._keys.get(kid)
        if found is None:
            raise InvalidToken(f"no key for kid {kid!r}")
        key, data = found
        algorithms = list(s.algorithms)
        if data.get("alg") in algorithms:
            algorithms = [data["alg"]]  # a key that names its algorithm verifies only that one
        try:
            claims = jwt.decode(token, key, algorithms=algorithms, audience=s.audience, issuer=s.issuer,
                                leeway=s.leeway_seconds, options={"require": ["exp", "iss", "aud"]})
        except (jwt.PyJWTError, ValueError, TypeError, KeyError) as exc:  # whatever a forged token makes it raise
            raise InvalidToken(f"{type(exc).__name__}: {exc}") from None
        principal = self._principal(claims)
        if len(self._cache) >= CACHE_SIZE:
            del self._cache[next(iter(self._cache))]
        self._cache[token] = (principal, float(claims["exp"]) + s.leeway_seconds)
        return principal

    async def _refetch_for(self, kid: str) -> bool:
        """Fetch the key set for an unknown kid: once per kid, once per cooldown."""
        if kid in self._tried_kids:
            return False
        if self._fetching is None and \
                time.monotonic() - self._last_fetch < self.settings.jwks_refetch_cooldown_seconds:
            return False
        if len(self._tried_kids) >= _TRIED_KIDS:
            del self._tried_kids[next(iter(self._tried_kids))]
        self._tried_kids[kid] = None
        await self.refresh()
        return True

    def _principal(self, claims: dict[str, Any]) -> Principal:
        s = self.settings
        raw = claims.get(s.scopes_claim, "")
        scopes = raw.split() if isinstance(raw, str) else [v for v in raw if isinstance(v, str)] \
            if isinstance(raw, list) else []
        models = claims.get(s.models_claim)
        allowed = None
        if models is not None:
            allowed = frozenset(m for m in (models if isinstance(models, list) else [models]) if isinstance(m, str))
        subject = claims.get("sub")
        return Principal(f"token of {subject}" if isinstance(subject, str) else "token", frozenset(scopes), allowed)
