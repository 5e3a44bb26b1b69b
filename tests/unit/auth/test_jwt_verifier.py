"""JWT verification against a key set file: claims, algorithms, the token cache, kids."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from pathlib import Path

import pytest
from auth_support import TokenIssuer

from pyserving.auth.config import JwtSettings
from pyserving.auth.jwt_verifier import InvalidToken, JwtVerifier


@pytest.fixture(scope="module")
def issuer() -> TokenIssuer:
    issuer = TokenIssuer("https://i", "aud")
    issuer.add_key("k1")
    return issuer


def verifier_for(issuer: TokenIssuer, tmp_path: Path, **settings) -> tuple[JwtVerifier, list[str]]:
    fetched: list[str] = []

    def fetch(url: str) -> str:
        fetched.append(url)
        return json.dumps(issuer.jwks())

    verifier = JwtVerifier(JwtSettings(issuer="https://i", audience="aud", algorithms=("RS256",),
                                       jwks_url="http://jwks", leeway_seconds=0,
                                       jwks_refetch_cooldown_seconds=0, **settings), fetch_url=fetch)
    return verifier, fetched


def run(coroutine):
    return asyncio.run(coroutine)


def test_good_token_gives_its_scopes_and_models(issuer, tmp_path):
    verifier, _ = verifier_for(issuer, tmp_path)

    async def go():
        await verifier.refresh()
        return await verifier.verify(issuer.token("k1", scope="infer read", models=["mnist"]))

    principal = run(go())
    assert principal.scopes == {"infer", "read"} and principal.models == {"mnist"}


@pytest.mark.parametrize("claims", [{"lifetime": -5}, {"aud": "x"}, {"iss": "x"}, {"exp": None},
                                    {"nbf": 4_000_000_000}])
def test_bad_claims(issuer, tmp_path, claims):
    verifier, _ = verifier_for(issuer, tmp_path)

    async def go():
        await verifier.refresh()
        await verifier.verify(issuer.token("k1", **claims))

    with pytest.raises(InvalidToken):
        run(go())


def test_alg_none_and_hs256_with_the_public_key(issuer, tmp_path):
    verifier, _ = verifier_for(issuer, tmp_path)

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    body = issuer.token("k1").split(".")[1]
    head = b64(json.dumps({"alg": "HS256", "kid": "k1"}).encode())
    confused = f"{head}.{body}.{b64(hmac.new(issuer.public_pem('k1'), f'{head}.{body}'.encode(), hashlib.sha256).digest())}"
    none = f"{b64(json.dumps({'alg': 'none', 'kid': 'k1'}).encode())}.{body}."

    async def go(token):
        await verifier.refresh()
        await verifier.verify(token)

    garbage = [f"{b64(h)}.{body}.{b64(b'x')}" for h in (
        b"[]", b'{"alg": ["RS256"], "kid": "k1"}', b'{"alg": "RS256", "kid": 5}', b'{"alg": "RS256", "kid": "k1",'
        b' "crit": ["x"]}', b"\xff\xfe", b'{"alg": "RS256", "kid": "k1", "b64": false}')]
    for token in (confused, none, "not.a.token", "..", "a..b", *garbage):
        with pytest.raises(InvalidToken):
            run(go(token))


def test_unknown_kid_fetches_once(issuer, tmp_path):
    verifier, fetched = verifier_for(issuer, tmp_path)
    issuer.add_key("hidden", publish=False)
    token = issuer.token("hidden")

    async def go():
        await verifier.refresh()
        for _ in range(3):
            with pytest.raises(InvalidToken):
                await verifier.verify(token)

    run(go())
    assert len(fetched) == 2  # the start, then one for the unknown kid


def test_cached_tokens_go_when_the_key_set_changes(issuer, tmp_path):
    verifier, fetched = verifier_for(issuer, tmp_path)
    token = issuer.token("k1")

    async def go():
        await verifier.refresh()
        await verifier.verify(token)
        await verifier.verify(token)  # from the cache
        issuer.published[:] = []
        try:
            await verifier.refresh()
            with pytest.raises(InvalidToken):
                await verifier.verify(token)
        finally:
            issuer.published[:] = ["k1"]

    run(go())


def test_a_pem_public_key_file(issuer, tmp_path):
    (tmp_path / "key.pem").write_bytes(issuer.public_pem("k1"))
    verifier = JwtVerifier(JwtSettings(issuer="https://i", audience="aud", algorithms=("RS256",),
                                       public_key_file=str(tmp_path / "key.pem")))

    async def go():
        await verifier.start()
        try:
            return await verifier.verify(issuer.token("k1"))
        finally:
            await verifier.stop()

    assert run(go()).scopes == {"infer", "read"}
