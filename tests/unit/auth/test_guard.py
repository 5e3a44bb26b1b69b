"""Guard decisions: key matching, scopes per operation and model, denials counted, the
failure limiter."""

from __future__ import annotations

import asyncio
import hashlib
import time

from pyserving.auth import Guard, bearer_token, parse_auth_config
from pyserving.auth.limiter import FailureLimiter
from pyserving.errors import Code


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


CONFIG = f"""
api_keys:
  - {{sha256: {digest("all")}, scopes: [infer, read, admin]}}
  - {{sha256: {digest("reader")}, scopes: [read]}}
  - {{sha256: {digest("mnist")}, scopes: [infer], models: [mnist]}}
client_certificates:
  - {{name: ops.example, scopes: [admin]}}
failure_limit: {{max_failures: 3, window_seconds: 60}}
"""


def make_guard() -> tuple[Guard, list[tuple[str, str]]]:
    denials: list[tuple[str, str]] = []
    return Guard(parse_auth_config(CONFIG), denials=lambda e, r: denials.append((e, r))), denials


def check(guard: Guard, bearer: str | None, scope: str, model: str | None = "m", *, address: str = "a",
          names: list[str] | None = None):
    return asyncio.run(guard.check(entrypoint="rest", address=address, bearer=bearer,
                                   peer_names=(lambda: names) if names is not None else None,
                                   scope=scope, model=model, what="op"))


def test_bearer_token_takes_only_the_bearer_scheme():
    assert bearer_token("Bearer abc") == "abc"
    assert bearer_token("bearer   abc ") == "abc"
    assert bearer_token("Basic abc") is None
    assert bearer_token("Bearer ") is None
    assert bearer_token(None) is None


def test_keys_scopes_and_models():
    guard, denials = make_guard()
    assert check(guard, "all", "admin", None) is None
    assert check(guard, "reader", "read") is None
    assert check(guard, "reader", "infer").code == Code.PERMISSION_DENIED
    assert check(guard, "mnist", "infer", "mnist") is None
    assert check(guard, "mnist", "infer", "other").code == Code.PERMISSION_DENIED
    assert check(guard, "mnist", "infer", None).code == Code.PERMISSION_DENIED  # server-wide
    assert denials == [("rest", "forbidden")] * 3


def test_unknown_or_missing_credentials_say_the_same():
    guard, denials = make_guard()
    wrong = check(guard, "al", "read", address="1")
    missing = check(guard, None, "read", address="2")
    assert (wrong.code, wrong.message) == (missing.code, missing.message) == \
        (Code.UNAUTHENTICATED, "Missing or invalid credentials")
    assert denials == [("rest", "invalid"), ("rest", "missing")]


def test_client_certificate_names_map_to_scopes():
    guard, _ = make_guard()
    assert check(guard, None, "admin", None, names=["client", "ops.example"]) is None
    assert check(guard, None, "admin", None, names=["someone"]).code == Code.UNAUTHENTICATED
    # a bearer value wins over the certificate
    assert check(guard, "reader", "admin", None, names=["ops.example"]).code == Code.PERMISSION_DENIED


def test_an_address_over_the_failure_limit_is_refused_even_with_a_good_key():
    guard, denials = make_guard()
    for _ in range(3):
        assert check(guard, "nope", "read", address="x").code == Code.UNAUTHENTICATED
    assert check(guard, "all", "read", address="x").code == Code.RESOURCE_EXHAUSTED
    assert check(guard, "all", "read", address="y") is None
    assert denials[-1] == ("rest", "limited")


def test_reload_swaps_the_rules():
    guard, _ = make_guard()
    asyncio.run(guard.reload(parse_auth_config(f"api_keys: [{{sha256: {digest('new')}, scopes: [read]}}]")))
    assert check(guard, "all", "read").code == Code.UNAUTHENTICATED
    assert check(guard, "new", "read") is None


def test_limiter_window_and_bound():
    now = [0.0]
    limiter = FailureLimiter(2, 10, max_addresses=2, clock=lambda: now[0])
    assert not limiter.failed("a")
    assert limiter.failed("a")  # the second failure blocks
    assert limiter.blocked("a") and not limiter.blocked("b")
    now[0] = 10.0
    assert not limiter.blocked("a")  # the window ended
    limiter.failed("b")
    limiter.failed("c")
    limiter.failed("d")  # the oldest address is forgotten, the table stays at 2
    assert len(limiter._failures) == 2


def test_a_key_check_is_cheap():
    guard, _ = make_guard()
    loop = asyncio.new_event_loop()
    try:
        async def many(n: int) -> float:
            start = time.perf_counter()
            for _ in range(n):
                await guard.check(entrypoint="rest", address="a", bearer="reader", peer_names=None, scope="read",
                                  model="m", what="op")
            return (time.perf_counter() - start) / n

        per_check = loop.run_until_complete(many(5000))
    finally:
        loop.close()
    assert per_check < 50e-6  # a few microseconds here; generous for a loaded machine
