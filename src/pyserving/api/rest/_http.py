"""uvicorn's httptools protocol, with limits on what a client may send, sending each
response in one write.

Limits (`HttpLimits`; uvicorn's httptools protocol has none): a request head (request
line and headers) over `max_head_bytes` or with more than `max_headers` headers answers
431 and the connection closes, counted as the bytes arrive, so an unterminated header
costs at most that much memory; a head not complete within `read_timeout_seconds` of its
first byte, or a body that sends nothing for that long, answers 408 and closes (idle
keep-alive connections are uvicorn's `timeout_keep_alive`).

uvicorn writes the status line and headers to the transport at
`http.response.start` and the body at `http.response.body`. uvloop's transport writes
at once when its buffer is empty, so every response cost two `send` calls and two TCP
segments; on loopback the sending CPU also runs the receiving side of each segment.

`_CoalescingTransport` holds a write until the next one (the body) arrives and sends
both together (`writelines`: one `writev`). A write that nothing follows goes out
from a `call_soon` callback, in the loop's next pass, before it polls for I/O again.
Holding never reorders bytes: every write, close and `write_eof` goes after what is
held.

A write to a connection that is closing or closed is dropped, as asyncio's own transports
do once the connection is lost; uvloop's raise `RuntimeError` instead. uvicorn expects the
drop: when a pipelining client disconnects, it marks only the last request it parsed as
disconnected, so the request running then still sends its response into the closed
transport (which is a client going away, not a server error).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from pyserving.auth.tls import peer_names_of

# How long a connection with nothing answered yet may still deliver its request once the
# server stops (see `HttpProtocol.shutdown`).
_FIRST_REQUEST_GRACE_SECONDS = 2.0


class _CoalescingTransport:
    __slots__ = ("_transport", "_held", "_call_soon")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._held: bytes | None = None
        self._call_soon = loop.call_soon

    def write(self, data: bytes) -> None:
        held = self._held
        if held is not None:
            self._held = None
            if not self._transport.is_closing():
                self._transport.writelines((held, data))
        elif data:
            self._held = data
            self._call_soon(self._flush)

    def writelines(self, chunks: Any) -> None:
        for data in chunks:
            self.write(data)

    def _flush(self) -> None:
        held = self._held
        if held is not None:
            self._held = None
            if not self._transport.is_closing():
                self._transport.write(held)

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + len(self._held or b"")

    def write_eof(self) -> None:
        self._flush()
        if not self._transport.is_closing():
            self._transport.write_eof()

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def abort(self) -> None:
        self._held = None
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:  # everything else is the transport's
        return getattr(self._transport, name)


@dataclass(frozen=True)
class HttpLimits:
    max_head_bytes: int = 64 * 1024
    max_headers: int = 100
    read_timeout_seconds: float = 30.0


class _HeadRejected(Exception):
    """Raised from a parser callback: the head broke a limit (answered 431)."""


class HttpProtocol(HttpToolsProtocol):
    """uvicorn's `HttpToolsProtocol` (pass the class, or `with_limits(...)`, as
    `uvicorn.Config(http=...)`)."""

    limits = HttpLimits()

    @classmethod
    def with_limits(cls, limits: HttpLimits) -> type["HttpProtocol"]:
        return type(cls.__name__, (cls,), {"limits": limits})

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.transport = _CoalescingTransport(transport, self.loop)  # type: ignore[assignment]
        self._head_bytes: int | None = 0  # bytes of the head being read; None: reading a body or idle
        self._header_count = 0
        self._rejected: tuple[int, str] | None = None
        self._read_timer: asyncio.TimerHandle | None = None
        self._fresh = True  # nothing received yet
        self._closing = False  # the server is stopping: answer what is on its way, then close
        # A verified client certificate's names (mutual TLS), for authentication
        self._peer_names: list[str] | None = None
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            self._peer_names = peer_names_of(ssl_object.getpeercert())

    # -- limits -------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if self._rejected is not None:
            return
        self._fresh = False
        if self._head_bytes is not None:
            if self._head_bytes == 0:
                self._arm_read_timer("Request head not received in time")
            self._head_bytes += len(data)
        elif self._read_timer is not None:  # reading a body: it is alive
            self._arm_read_timer("Request body not received in time")
        super().data_received(data)
        # still in the head after this data: httptools holds what it has of it
        if self._rejected is None and self._head_bytes is not None \
                and self._head_bytes > self.limits.max_head_bytes:
            self._reject(431, "Request header fields too large")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > self.limits.max_headers:
            self._rejected = (431, "Too many request header fields")
            raise _HeadRejected
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        size = len(self.url) + sum(len(n) + len(v) + 4 for n, v in self.headers)
        if size > self.limits.max_head_bytes:
            self._rejected = (431, "Request header fields too large")
            raise _HeadRejected
        self._head_bytes = None
        self._header_count = 0
        if self._peer_names:
            self.scope["pyserving.peer_names"] = self._peer_names  # type: ignore[typeddict-unknown-key]
        super().on_headers_complete()
        if self._closing and self.cycle is not None:
            self.cycle.keep_alive = False
        if self._read_timer is not None:
            self._arm_read_timer("Request body not received in time")

    def on_message_complete(self) -> None:
        self._cancel_read_timer()
        self._head_bytes = 0  # the next request on this connection
        super().on_message_complete()

    def send_400_response(self, msg: str) -> None:
        if self._rejected is not None:  # a parser error raised by our own limit
            self._send_and_close(*self._rejected)
        else:
            super().send_400_response(msg)

    def _reject(self, status: int, reason: str) -> None:
        self._rejected = (status, reason)
        self._send_and_close(status, reason)

    def _send_and_close(self, status: int, reason: str) -> None:
        self._cancel_read_timer()
        cycle = self.cycle
        if cycle is not None and cycle.response_started and not cycle.response_complete:
            self.transport.close()  # a response is under way: nothing clean can be said
            return
        if cycle is not None:
            cycle.keep_alive = False
        body = ('{ "error": "' + reason + '" }').encode()
        self.transport.write(b"".join((
            STATUS_LINE[status], b"content-type: application/json\r\n",
            b"content-length: ", str(len(body)).encode(), b"\r\nconnection: close\r\n\r\n", body)))
        self.transport.close()

    def _arm_read_timer(self, reason: str) -> None:
        self._cancel_read_timer()
        self._read_timer = self.loop.call_later(self.limits.read_timeout_seconds, self._read_timed_out, reason)

    def _cancel_read_timer(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def _read_timed_out(self, reason: str) -> None:
        self._read_timer = None
        if not self.transport.is_closing():
            self._reject(408, reason)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_read_timer()
        super().connection_lost(exc)

    def shutdown(self) -> None:
        """The server stops (a drain ended, a worker replaced). uvicorn closes every
        connection without a request in progress, but a connection just accepted, or
        with part of a head read, has a request on its way that the client already sent:
        closing it fails that request. Such a connection gets a moment to deliver it; it
        is answered and then closed."""
        if self.cycle is None and (self._fresh or self._head_bytes):
            self._closing = True
            self.loop.call_later(_FIRST_REQUEST_GRACE_SECONDS, self._close_if_nothing_came)
            return
        super().shutdown()

    def _close_if_nothing_came(self) -> None:
        if self.cycle is None and not self.transport.is_closing():
            self.transport.close()
