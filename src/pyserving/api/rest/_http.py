"""uvicorn's httptools protocol, sending each response in one write.

issue 4: uvicorn writes the status line and headers to the transport at
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
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


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


class HttpProtocol(HttpToolsProtocol):
    """uvicorn's `HttpToolsProtocol` (pass the class as `uvicorn.Config(http=...)`)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.transport = _CoalescingTransport(transport, self.loop)  # type: ignore[assignment]
