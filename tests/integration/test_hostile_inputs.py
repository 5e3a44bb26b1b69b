"""Hostile and malformed input against a real server process: each case must get a clean
error in TF Serving's shape (or be ignored), never a 500, a traceback, unbounded state or a
write outside the server's own directories.

One shared server (`server`): model `m` (half_plus_two), TF Serving's monitoring config,
`--access_log`, the profiler on (TF Serving's default) writing under a test directory.
"""

from __future__ import annotations

import socket

import pytest

import modelgen
from support import TESTDATA, ServerProcess


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("hostile")


@pytest.fixture(scope="module")
def server(root):
    modelgen.make_half_plus_two(root / "models" / "m", 1)
    with ServerProcess(
        "--model_name=m", f"--model_base_path={root / 'models' / 'm'}",
        f"--monitoring_config_file={TESTDATA / 'monitoring_config.txt'}", "--access_log",
        f"--profiler_dir={root / 'profiles'}",
    ) as s:
        yield s


def raw_http(server: ServerProcess, request: bytes) -> bytes:
    """Send `request` as is (no client-side encoding) and read until the server closes."""
    with socket.create_connection(("127.0.0.1", server.rest_port), timeout=30) as conn:
        conn.sendall(request)
        chunks = []
        while data := conn.recv(65536):
            chunks.append(data)
    return b"".join(chunks)


# --------------------------------------------------------------------------- REST


def test_not_found_page_escapes_the_requested_path(server):
    path = b"/<script>alert('x')</script>&\"q"
    response = raw_http(server, b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 404 "), response
    assert b"<script>" not in body
    assert body == (b"<html><head><title>404 Not Found</title></head><body><h1>Not Found</h1>"
                    b"<p>The requested URL /&lt;script&gt;alert(&#039;x&#039;)&lt;/script&gt;&amp;&quot;q "
                    b"was not found on this server.</p></body></html>")
