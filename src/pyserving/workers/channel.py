"""Channel: calls and notes between the supervisor and one worker over a socket pair.

Each message is a 4-byte big-endian length and a pickle of `(kind, id, op, payload)`:
`call` expects a `reply` with the same id, `note` does not. Both ends are this package's
code in processes the supervisor started, over a socket pair nobody else holds, so pickle
carries the project's own dataclasses as they are. Errors cross as `(code, message)` and
are raised again as `ServingError` on the calling side.

`serve()` reads until the other end closes (a worker that died, a supervisor that is
gone); each call is handled in its own task, so a slow one (a config reload waiting for
loads) never holds up the notes behind it. Loop thread only.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import pickle
import socket
import struct
from typing import Any, Awaitable, Callable

from pyserving.errors import Code, ServingError

__all__ = ["Channel", "ChannelClosed", "Handler"]

log = logging.getLogger("pyserving.workers")

_HEADER = struct.Struct(">I")
# A metrics page of a few hundred models is a few MB; nothing legitimate comes near this.
_MAX_MESSAGE = 1 << 30

Handler = Callable[[str, Any], Awaitable[Any]]


class ChannelClosed(ServingError):
    """The other end is gone."""

    def __init__(self, message: str = "the worker channel is closed") -> None:
        super().__init__(Code.UNAVAILABLE, message)


class Channel:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, handler: Handler) -> None:
        self._reader = reader
        self._writer = writer
        self._handler = handler
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.closed = asyncio.Event()

    @classmethod
    async def open(cls, sock: socket.socket, handler: Handler) -> Channel:
        reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 20)
        return cls(reader, writer, handler)

    def _write(self, message: tuple[str, int, str, Any]) -> None:
        if self.closed.is_set():
            raise ChannelClosed()
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        self._writer.write(_HEADER.pack(len(data)) + data)

    def note(self, op: str, payload: Any = None) -> None:
        """Send without waiting for an answer (dropped when the channel is closed)."""
        with contextlib.suppress(ChannelClosed):
            self._write(("note", 0, op, payload))

    async def call(self, op: str, payload: Any = None, timeout: float | None = None) -> Any:
        """The other end's answer; ServingError as it raised it, ChannelClosed if it is
        gone, DEADLINE_EXCEEDED after `timeout` seconds."""
        ident = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[ident] = future
        try:
            self._write(("call", ident, op, payload))
            await self._writer.drain()
            return await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError:
            raise ServingError(Code.DEADLINE_EXCEEDED, f"no answer to {op} within {timeout} s") from None
        finally:
            self._pending.pop(ident, None)

    async def serve(self) -> None:
        """Read and dispatch until the other end closes; then every pending call fails."""
        try:
            while True:
                try:
                    header = await self._reader.readexactly(_HEADER.size)
                    (size,) = _HEADER.unpack(header)
                    if size > _MAX_MESSAGE:
                        log.error("worker channel: a %d-byte message; closing", size)
                        break
                    kind, ident, op, payload = pickle.loads(await self._reader.readexactly(size))
                except (asyncio.IncompleteReadError, ConnectionError):
                    break
                if kind == "reply":
                    future = self._pending.get(ident)
                    if future is not None and not future.done():
                        ok, value = payload
                        if ok:
                            future.set_result(value)
                        else:
                            future.set_exception(ServingError(Code(value[0]), value[1]))
                elif kind == "call":
                    task = asyncio.create_task(self._answer(ident, op, payload))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
                else:
                    await self._dispatch_note(op, payload)
        finally:
            self.closed.set()
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(ChannelClosed())
            self._writer.close()

    async def _dispatch_note(self, op: str, payload: Any) -> None:
        try:
            await self._handler(op, payload)
        except Exception:
            log.exception("worker channel: %s failed", op)

    async def _answer(self, ident: int, op: str, payload: Any) -> None:
        try:
            reply: tuple[bool, Any] = (True, await self._handler(op, payload))
        except ServingError as err:
            reply = (False, (int(err.code), err.message))
        except Exception as exc:
            log.exception("worker channel: %s failed", op)
            reply = (False, (int(Code.INTERNAL), f"{op} failed: {exc}"))
        with contextlib.suppress(ChannelClosed, ConnectionError):
            self._write(("reply", ident, op, reply))
            await self._writer.drain()

    async def flush(self, timeout: float) -> None:
        """Until what was sent has left (a worker about to exit), at most `timeout` s."""
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._writer.drain(), timeout)

    def close(self) -> None:
        self._writer.close()
