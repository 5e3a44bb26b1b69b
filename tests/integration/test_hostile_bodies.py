"""Bodies built to be expensive: one huge JSON string, a huge base64 value, one long string
among many numbers, a small gzip body that inflates to 300 MiB of whitespace. Each gets its 400 quickly, other clients are
not stalled meanwhile (a health probe every 50 ms answers within a second) and the
server's memory stays bounded."""

from __future__ import annotations

import gzip
import threading
import time

import pytest
import requests

import modelgen
from support import ServerProcess

MiB = 1 << 20


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("hostile") / "m"
    modelgen.make_half_plus_two(base, 1)
    with ServerProcess("--model_name=m", f"--model_base_path={base}", grpc=False) as s:
        yield s


class Prober:
    """GET /healthz every 50 ms on its own connection; the slowest answer is `worst`."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.worst = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        session = requests.Session()
        while not self._stop.wait(0.05):
            started = time.monotonic()
            session.get(self.url + "/healthz", timeout=30).raise_for_status()
            self.worst = max(self.worst, time.monotonic() - started)

    def __enter__(self) -> "Prober":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(60)


BODIES = {
    "a 30 MiB JSON string": (b'{"instances": ["' + b"a" * (30 * MiB) + b'"]}', {}),
    "a 50 MB base64 value": (b'{"instances": [{"b64": "' + b"QUFB" * 12_500_000 + b'"}]}', {}),
    "a 10,000-character string among 100,000 numbers (4 GB as a numpy string array)": (
        b'{"instances": ["' + b"a" * 10_000 + b'"' + b", 1" * 100_000 + b"]}", {}),
    "300 MiB of whitespace in a 300 KB gzip body": (gzip.compress(b" " * (300 * MiB), 9),
                                                    {"content-encoding": "gzip"}),
}


@pytest.mark.parametrize("name", list(BODIES))
def test_an_expensive_bad_body_is_refused_without_stalling_anyone(server, name):
    body, headers = BODIES[name]
    before = server.peak_rss()
    with Prober(server.url) as prober:
        started = time.monotonic()
        r = server.post("/v1/models/m:predict", data=body, headers=headers, timeout=120)
        took = time.monotonic() - started
    assert r.status_code == 400, r.text[:300]
    error = r.json()["error"]
    assert len(error) < 2000  # the value is quoted in part, not all of it
    assert took < 10
    assert prober.worst < 1.0, f"a health probe waited {prober.worst:.2f} s"
    assert server.peak_rss() - before < 1024 * MiB
    assert server.post("/v1/models/m:predict", json={"instances": [1.0]}).json() == {"predictions": [2.5]}
