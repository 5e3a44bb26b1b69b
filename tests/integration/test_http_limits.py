"""What a REST client may send before a request is refused: head size, header count, and
how slowly. Raw sockets, since an HTTP library will not send such requests."""

from __future__ import annotations

import socket
import time

import pytest

import modelgen
from support import ServerProcess

MiB = 1 << 20


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("limits") / "m"
    modelgen.make_half_plus_two(base, 1)
    with ServerProcess("--model_name=m", f"--model_base_path={base}", "--rest_api_read_timeout_seconds=1",
                       grpc=False) as s:
        yield s


def exchange(server: ServerProcess, data: bytes, *, then_wait: float = 10) -> bytes:
    """Send `data` (as much as the server takes), then read until the server closes."""
    with socket.create_connection(("127.0.0.1", server.rest_port), timeout=then_wait) as sock:
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused before all of it was sent: the answer is what counts
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except ConnectionResetError:
            pass
        return answer


def status(answer: bytes) -> int:
    assert answer.startswith(b"HTTP/1.1 "), answer[:200]
    return int(answer.split(b" ", 2)[1])


def test_a_head_over_the_limit_answers_431(server):
    head = b"GET /v1/models/m HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (100 * 1024) + b"\r\n\r\n"
    answer = exchange(server, head)
    assert status(answer) == 431 and b"connection: close" in answer.lower()


def test_an_unterminated_header_costs_the_limit_not_what_is_sent(server):
    before = server.peak_rss()
    answer = exchange(server, b"GET /v1/models/m HTTP/1.1\r\nX-Endless: " + b"a" * (200 * MiB))
    assert status(answer) == 431
    assert server.peak_rss() - before < 50 * MiB


def test_too_many_header_fields_answer_431(server):
    head = b"GET /v1/models/m HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(500)) + b"\r\n"
    assert status(exchange(server, head)) == 431


def test_a_head_that_never_ends_times_out_with_408(server):
    started = time.monotonic()
    answer = exchange(server, b"GET /v1/models/m HTTP/1.1\r\nHost: x\r\n")
    assert status(answer) == 408
    assert time.monotonic() - started < 5


def test_a_body_that_stops_arriving_times_out_with_408(server):
    head = b"POST /v1/models/m:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n"
    answer = exchange(server, head + b'{"instances": [1.0, ')
    assert status(answer) == 408


def test_ordinary_requests_are_unaffected(server):
    body = b'{"instances": [' + b",".join([b"1.0"] * 1_000_000) + b"]}"
    r = server.post("/v1/models/m:predict", data=body)
    assert r.status_code == 200 and len(r.json()["predictions"]) == 1_000_000
    head = b"GET /v1/models/m HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: %s\r\n" % (i, b"v" * 500)
                                                                for i in range(50)) + b"Connection: close\r\n\r\n"
    assert status(exchange(server, head)) == 200
    # a keep-alive connection that stays idle is the keep-alive timeout's business, not a 408
    with socket.create_connection(("127.0.0.1", server.rest_port), timeout=10) as sock:
        sock.sendall(b"GET /v1/models/m HTTP/1.1\r\nHost: x\r\n\r\n")
        first = sock.recv(65536)
        assert status(first) == 200
        sock.settimeout(2.5)
        with pytest.raises(socket.timeout):
            sock.recv(65536)  # nothing: no 408 on an idle connection
        sock.sendall(b"GET /v1/models/m HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        sock.settimeout(10)
        assert status(sock.recv(65536)) == 200
