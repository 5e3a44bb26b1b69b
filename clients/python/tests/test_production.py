"""Deadlines, retries across a server restart, TLS and mTLS, against real server processes."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
from client_support import pyserving
from support import READY, make_certificates, ssl_config

from pyserving_client import (
    TLS,
    AsyncClient,
    Client,
    DeadlineExceededError,
    Retry,
    UnavailableError,
)

SLOW = {"n": np.array(10**9, np.int64)}  # a while loop of many seconds


def test_a_call_ends_at_its_deadline(target):
    with Client(target, timeout=60) as client:
        start = time.monotonic()
        with pytest.raises(DeadlineExceededError):
            client.predict("slow", SLOW, timeout=0.5)
        assert time.monotonic() - start < 5
        assert client.predict("slow", {"n": np.array(10, np.int64)})["count"] == 10.0


def test_the_clients_default_deadline_applies_to_every_call(target):
    with Client(target, timeout=0.5) as client, pytest.raises(DeadlineExceededError):
        client.predict("slow", SLOW)


def test_an_async_call_ends_at_its_deadline(target):
    async def main():
        async with AsyncClient(target) as client:
            with pytest.raises(DeadlineExceededError):
                await client.predict("slow", SLOW, timeout=0.5)

    start = time.monotonic()
    asyncio.run(main())
    assert time.monotonic() - start < 5


@pytest.fixture
def restartable(models):
    """A server with fixed ports, which a test may stop and start again."""
    first = pyserving(f"--model_config_file={models / 'models.config'}").start()
    yield first
    first.stop()


@pytest.mark.parametrize("protocol", ["grpc", "rest"])
def test_retries_carry_a_call_across_a_server_restart(restartable, protocol):
    target = restartable.grpc_target if protocol == "grpc" else restartable.url
    retry = Retry(attempts=1000, backoff_seconds=0.05, max_backoff_seconds=0.5)
    with Client(target, retry=retry, timeout=120) as client:
        assert client.predict("hpt", [1.0])["y"].tolist() == [2.5]
        restartable.stop()
        with Client(target, retry=Retry(attempts=1)) as once, pytest.raises(UnavailableError):
            once.predict("hpt", [1.0])  # without retries the outage shows
        second = pyserving(*restartable.args).launch()  # same ports
        try:
            asked = time.monotonic()
            assert client.predict("hpt", [2.0])["y"].tolist() == [3.0]
            ready_line = second.wait_for_log(READY, 10)
            ready_at = second.lines_with_times()[ready_line][0]
            assert asked < ready_at  # the call was made while the server was still starting
        finally:
            second.stop()


def test_reload_config_is_never_retried(restartable):
    restartable.stop()
    retry = Retry(attempts=100, backoff_seconds=1.0)
    with Client(restartable.grpc_target, retry=retry) as client:
        start = time.monotonic()
        with pytest.raises(UnavailableError):
            client.reload_config("model_config_list {}")
        assert time.monotonic() - start < 1.0
        with pytest.raises(UnavailableError):
            client.status("hpt", timeout=0.5)  # retried until its deadline, then the last error


@pytest.fixture(scope="module")
def certificates(tmp_path_factory):
    d = tmp_path_factory.mktemp("certs")
    certs = make_certificates(d)
    (d / "tls.pbtxt").write_text(ssl_config(certs, client_verify=False))
    (d / "mtls.pbtxt").write_text(ssl_config(certs, client_verify=True))
    return d


@pytest.fixture(scope="module")
def tls_servers(models, certificates):
    servers = [pyserving(f"--model_config_file={models / 'models.config'}", f"--ssl_config_file={certificates / f}")
               for f in ("tls.pbtxt", "mtls.pbtxt")]
    for s in servers:
        s.launch()
    for s in servers:
        s.wait_for_log(READY, 120)
    yield servers
    for s in servers:
        s.stop()


def test_grpc_over_tls(tls_servers, certificates):
    tls, _ = tls_servers
    with Client(tls.grpc_target, tls=TLS(ca_file=str(certificates / "ca.pem"))) as client:
        assert client.predict("hpt", [1.0])["y"].tolist() == [2.5]
    with Client(tls.grpc_target, timeout=2, retry=Retry(attempts=1)) as plain, pytest.raises(UnavailableError):
        plain.predict("hpt", [1.0])


def test_grpc_with_a_client_certificate(tls_servers, certificates):
    _, mtls = tls_servers
    c = certificates
    with Client(mtls.grpc_target, tls=TLS(str(c / "ca.pem"), str(c / "client.pem"), str(c / "client.key"))) as client:
        assert client.predict("hpt", [1.0])["y"].tolist() == [2.5]
    with Client(mtls.grpc_target, tls=TLS(ca_file=str(c / "ca.pem")), timeout=2, retry=Retry(attempts=1)) as anon:
        with pytest.raises(UnavailableError):
            anon.predict("hpt", [1.0])


KEYS = {"everything": ["infer", "read", "admin"], "infer-only": ["infer"]}


@pytest.fixture(scope="module")
def secure(models, certificates, tmp_path_factory):
    """TLS on both ports (`--ssl_config_file`, `--rest_api_ssl_config_file`) and API keys."""
    import hashlib

    auth = tmp_path_factory.mktemp("auth") / "auth.yaml"
    auth.write_text("api_keys:\n" + "".join(
        f'  - sha256: "{hashlib.sha256(key.encode()).hexdigest()}"\n    scopes: [{", ".join(scopes)}]\n'
        for key, scopes in KEYS.items()))
    tls = certificates / "tls.pbtxt"
    with pyserving(f"--model_config_file={models / 'models.config'}", f"--ssl_config_file={tls}",
                   f"--rest_api_ssl_config_file={tls}", f"--auth_config_file={auth}") as process:
        yield process


@pytest.fixture(params=["grpc", "rest"])
def secure_target(request, secure) -> str:
    return secure.grpc_target if request.param == "grpc" else f"https://127.0.0.1:{secure.rest_port}"


def test_api_key_in_headers_over_tls(secure_target, certificates):
    from pyserving_client import UnauthenticatedError

    tls = TLS(ca_file=str(certificates / "ca.pem"))
    with Client(secure_target, tls=tls, headers={"Authorization": "Bearer everything"}) as client:
        assert client.predict("hpt", [1.0])["y"].tolist() == [2.5]
        assert client.status("hpt")[0].state == "AVAILABLE"
    with Client(secure_target, tls=tls) as anonymous, pytest.raises(UnauthenticatedError):
        anonymous.predict("hpt", [1.0])


def test_a_key_that_may_only_infer(secure_target, certificates):
    """Predict works with a key lacking `read`, which the signature lookup needs: over REST
    the answer then keeps JSON's own types, and a single output, which TF Serving's JSON
    leaves unnamed, is called "outputs". Status is refused."""
    from pyserving_client import PermissionDeniedError

    tls = TLS(ca_file=str(certificates / "ca.pem"))
    with Client(secure_target, tls=tls, headers={"authorization": "Bearer infer-only"}) as client:
        outputs = client.predict("hpt", {"x": np.array([[1.0]], np.float32)})
        if secure_target.startswith("https"):
            assert outputs["outputs"].tolist() == [[2.5]]
        else:
            assert outputs["y"].dtype == np.float32 and outputs["y"].tolist() == [[2.5]]
        with pytest.raises(PermissionDeniedError):
            client.status("hpt")


def test_https_without_the_ca_is_refused(secure):
    with Client(f"https://127.0.0.1:{secure.rest_port}", retry=Retry(attempts=1)) as client:
        with pytest.raises(UnavailableError, match="CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
            client.predict("hpt", [1.0])
