"""The REST server's transport wrapper: one write per response, bytes never reordered."""

from __future__ import annotations

import asyncio
import functools
import socket

import pytest
import uvicorn

from pyserving.api.rest._http import HttpProtocol, _CoalescingTransport


class RecordingTransport(asyncio.Transport):
    """An asyncio transport that records what it is asked to send, call by call."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, bytes]] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        self.calls.append(("write", bytes(data)))

    def writelines(self, chunks) -> None:  # type: ignore[override]
        self.calls.append(("writelines", b"".join(chunks)))

    def write_eof(self) -> None:
        self.calls.append(("write_eof", b""))

    def close(self) -> None:
        self.closing = True
        self.calls.append(("close", b""))

    def abort(self) -> None:
        self.closing = True
        self.calls.append(("abort", b""))

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name, default=None):  # type: ignore[override]
        return {"peername": ("127.0.0.1", 1)}.get(name, default)


def synchronously(test):
    """Run an async test on a fresh event loop (the suite has no asyncio plugin)."""
    @functools.wraps(test)
    def run(*args, **kwargs):
        return asyncio.run(test(*args, **kwargs))
    return run


async def _next_pass() -> None:
    await asyncio.sleep(0)  # the loop runs what `call_soon` scheduled before this task resumes


@synchronously
async def test_headers_and_body_go_out_in_one_call() -> None:
    inner = RecordingTransport()
    t = _CoalescingTransport(inner, asyncio.get_running_loop())
    t.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    assert inner.calls == []
    t.write(b"{}")
    assert inner.calls == [("writelines", b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")]
    await _next_pass()
    assert len(inner.calls) == 1  # the scheduled flush found nothing left


@synchronously
async def test_a_write_nothing_follows_goes_out_in_the_next_pass() -> None:
    inner = RecordingTransport()
    t = _CoalescingTransport(inner, asyncio.get_running_loop())
    t.write(b"HTTP/1.1 204 No Content\r\n\r\n")  # (HEAD, 204, 304: no body write follows)
    assert t.get_write_buffer_size() == len(b"HTTP/1.1 204 No Content\r\n\r\n")
    await _next_pass()
    assert inner.calls == [("write", b"HTTP/1.1 204 No Content\r\n\r\n")]


@synchronously
async def test_order_is_kept_over_many_writes_close_and_eof() -> None:
    inner = RecordingTransport()
    t = _CoalescingTransport(inner, asyncio.get_running_loop())
    for chunk in (b"a", b"b", b"c", b"d", b"e"):
        t.write(chunk)
    t.write(b"")  # nothing to send: nothing held
    t.write_eof()
    t.close()
    await _next_pass()
    sent = b"".join(data for kind, data in inner.calls if kind in ("write", "writelines"))
    assert sent == b"abcde"
    assert [kind for kind, _ in inner.calls][-2:] == ["write_eof", "close"]


@synchronously
async def test_abort_drops_what_is_held_and_a_closed_transport_gets_nothing() -> None:
    inner = RecordingTransport()
    t = _CoalescingTransport(inner, asyncio.get_running_loop())
    t.write(b"lost")
    t.abort()
    await _next_pass()
    assert inner.calls == [("abort", b"")]

    inner = RecordingTransport()
    t = _CoalescingTransport(inner, asyncio.get_running_loop())
    t.write(b"late")
    inner.closing = True  # the peer went away before the loop's next pass
    await _next_pass()
    assert inner.calls == []


@synchronously
async def test_other_attributes_are_the_transports() -> None:
    inner = RecordingTransport()
    t = _CoalescingTransport(inner, asyncio.get_running_loop())
    assert t.get_extra_info("peername") == ("127.0.0.1", 1)
    assert t.is_closing() is False


async def _serve(app) -> tuple[uvicorn.Server, asyncio.Task, int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    sock.setblocking(False)
    config = uvicorn.Config(app, lifespan="off", http=HttpProtocol, access_log=False, log_config=None)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    return server, task, sock.getsockname()[1]  # listening already: a client may connect now


@pytest.mark.parametrize("method", ["GET", "HEAD"])
@synchronously
async def test_real_connection_keeps_alive_and_answers_every_request(method: str) -> None:
    """Through uvicorn and a real socket: three requests on one connection, each answer
    whole and in order (HEAD: headers only, flushed without a body write)."""
    async def app(scope, receive, send):
        body = scope["path"].encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    server, task, port = await _serve(app)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for path in ("/one", "/two", "/three"):
            writer.write(f"{method} {path} HTTP/1.1\r\nhost: x\r\n\r\n".encode())
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            assert head.startswith(b"HTTP/1.1 200 OK\r\n")
            assert f"content-length: {len(path)}\r\n".encode() in head
            if method == "GET":
                assert await asyncio.wait_for(reader.readexactly(len(path)), 10) == path.encode()
        writer.close()
    finally:
        server.should_exit = True
        await task


async def _accepted(server: uvicorn.Server) -> HttpProtocol:
    """The protocol of the one connection the server has accepted (a bounded wait)."""
    for _ in range(500):
        if server.server_state.connections:
            return next(iter(server.server_state.connections))  # type: ignore[return-value]
        await asyncio.sleep(0.01)
    raise AssertionError("the connection was not accepted")


async def _hello(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"hi"})


@synchronously
async def test_a_request_on_its_way_when_the_server_stops_is_answered_then_closed() -> None:
    """A connection accepted with nothing read yet when the server stops: its request
    (sent by the client as the server stopped) is answered, with `connection: close`."""
    server, task, port = await _serve(_hello)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        (await _accepted(server)).shutdown()  # what uvicorn does to each connection on stop
        writer.write(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"connection: close\r\n" in head
        assert await asyncio.wait_for(reader.read(), 10) == b"hi"  # then EOF: closed
        writer.close()
    finally:
        server.should_exit = True
        await task


@synchronously
async def test_a_connection_that_sends_nothing_is_closed_after_the_grace(monkeypatch) -> None:
    import pyserving.api.rest._http as http

    monkeypatch.setattr(http, "_FIRST_REQUEST_GRACE_SECONDS", 0.05)
    server, task, port = await _serve(_hello)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        (await _accepted(server)).shutdown()
        assert await asyncio.wait_for(reader.read(), 10) == b""
        writer.close()
    finally:
        server.should_exit = True
        await task


@synchronously
async def test_an_idle_keep_alive_connection_is_closed_at_once_on_stop() -> None:
    server, task, port = await _serve(_hello)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        await asyncio.wait_for(reader.readuntil(b"hi"), 10)
        (await _accepted(server)).shutdown()
        assert await asyncio.wait_for(reader.read(), 1) == b""
        writer.close()
    finally:
        server.should_exit = True
        await task
