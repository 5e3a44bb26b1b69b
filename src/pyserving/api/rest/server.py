"""The REST front end as a server: `RestApp` on uvicorn, bound to `--rest_api_port`.

Like `GrpcFrontEnd`: `start()` binds and serves, `should_exit = True` (or `await stop()`)
closes it once the requests it has finished; the process's signals belong to the caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl

import uvicorn

from pyserving.api.rest._http import HttpLimits, HttpProtocol
from pyserving.api.rest.app import RestApp, RestOptions
from pyserving.errors import StartupError
from pyserving.options import ServerOptions
from pyserving.server.prediction_service import PredictionService

__all__ = ["RestFrontEnd", "build_rest_app", "bind"]

log = logging.getLogger("pyserving")

# Uvicorn stops reading a request body every 64 KiB until the app has taken it
# (flow control, with no setting for the limit): a 79 MB body took ~310 pause/resume round
# trips, 0.20 s here; with 1 MiB, 0.12 s. The buffer per connection stays bounded.
_BODY_READ_BUFFER = 1 << 20
try:
    from uvicorn.protocols.http import httptools_impl as _httptools_impl

    _httptools_impl.HIGH_WATER_LIMIT = max(_httptools_impl.HIGH_WATER_LIMIT, _BODY_READ_BUFFER)
except (ImportError, AttributeError):  # pragma: no cover - another uvicorn layout
    pass


def bind(port: int, *, reuse_port: bool = False) -> socket.socket:
    """Listen on all interfaces, IPv6 dual-stack first like TF Serving, else IPv4.
    `reuse_port`: one of several listeners on the port (SO_REUSEPORT; the kernel spreads
    the connections over them)."""
    errors = []
    for family, host in ((socket.AF_INET6, "::"), (socket.AF_INET, "0.0.0.0")):
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.bind((host, port))
            sock.listen(2048)
            sock.setblocking(False)
            return sock
        except OSError as exc:
            sock.close()
            errors.append(exc)
    raise StartupError(f"Failed to start server. Error: cannot listen on port {port}: {errors[-1]}")


def build_rest_app(options: ServerOptions, service: PredictionService) -> RestApp:
    return RestApp(
        service,
        RestOptions(
            timeout_in_ms=options.rest_api_timeout_in_ms,
            max_body_bytes=options.rest_api_max_body_bytes,
            enable_cors=options.rest_api_enable_cors_support,
            access_log=options.access_log,
        ),
    )


class _Uvicorn(uvicorn.Server):
    def capture_signals(self):
        return contextlib.nullcontext()  # the caller owns the signals


class RestFrontEnd:
    """A started REST server; `should_exit = True` (or `await stop()`) closes it."""

    def __init__(self, server: _Uvicorn, task: asyncio.Task[None]) -> None:
        self._server = server
        self._task = task

    @classmethod
    async def start(cls, options: ServerOptions, app: RestApp, *, sock: socket.socket | None = None,
                    ssl_context: ssl.SSLContext | None = None) -> RestFrontEnd:
        """Bind `--rest_api_port`, or serve `sock`, a listening socket a worker process
        was given by its supervisor. With `ssl_context`, HTTPS only."""
        sock = bind(options.rest_api_port) if sock is None else sock
        config = uvicorn.Config(
            app, lifespan="off", access_log=False, log_config=None,
            http=HttpProtocol.with_limits(HttpLimits(
                max_head_bytes=options.rest_api_max_header_bytes,
                max_headers=options.rest_api_max_headers,
                read_timeout_seconds=options.rest_api_read_timeout_seconds,
            )),
            proxy_headers=False,  # nothing reads the client address: no rewriting layer
            server_header=False,  # TF Serving's libevent answers without a Server header
            # uvicorn declares int seconds; it only passes the value to asyncio, which takes floats
            timeout_graceful_shutdown=options.shutdown_grace_seconds,  # type: ignore[arg-type]
            timeout_keep_alive=75,
        )
        if ssl_context is not None:
            config.load()
            config.ssl = ssl_context  # ours: PEM contents rather than files, reloaded when they change
        server = _Uvicorn(config)
        task = asyncio.create_task(server.serve(sockets=[sock]), name="rest")
        log.info("Exporting HTTP/REST API at:localhost:%d%s ...", options.rest_api_port,
                 " with TLS" if ssl_context is not None else "")
        return cls(server, task)

    async def set_health(self, serving: bool) -> None:
        """REST health is asked for (/readyz), not pushed."""

    async def serve(self) -> None:
        await self._task

    @property
    def should_exit(self) -> bool:
        return bool(self._server.should_exit)

    @should_exit.setter
    def should_exit(self, value: bool) -> None:
        self._server.should_exit = value

    async def stop(self, grace_seconds: float | None = None) -> None:
        """Close the listener, finish the requests being answered within `grace_seconds`."""
        if grace_seconds is not None:
            self._server.config.timeout_graceful_shutdown = grace_seconds  # type: ignore[assignment]
        self._server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
