"""A worker process: one `Server` on the shared ports, told its models by the supervisor.

Started by the supervisor as `python -m pyserving.workers.worker <fd> <index> <log level>`
(a fresh interpreter: nothing of the supervisor's state is inherited), with one end of a
socket pair as `<fd>`. The supervisor's first note, `hello`, carries the options, the worker's
index, the models and the versions to load. From then on:

- supervisor -> worker notes: `config` (a new model list), `versions` (a model's aspired
  set, version -> path), `view` (status and readiness merged over every worker), `retire`
  (close the listeners, finish what is in flight, exit); calls: `metrics` (this worker's
  families);
- worker -> supervisor notes: `state` (each version state change), `ready` (the models
  it was started with are loaded), `startup_error`; calls: `reload` (a config reload that
  reached this worker over gRPC), `metrics` (the page summed over every worker).

SIGTERM drains and stops the worker as it stops a single server (a second one changes
nothing); SIGINT is ignored (a Ctrl-C in a terminal reaches every process of the group:
the supervisor decides). A supervisor that goes away (its end of the pair closes) stops the
worker too.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import sys
from dataclasses import dataclass, field
from typing import Any

import orjson

from pyserving.core.event_bus import EventBus
from pyserving.core.servable_state import ServableState
from pyserving.errors import Code, ServingError, StartupError
from pyserving.options import ServerOptions
from pyserving.server.model_config import ModelConfig
from pyserving.server.model_control import VersionStatus, pick_status
from pyserving.workers.channel import Channel

__all__ = ["Hello", "WorkerLink", "main"]

log = logging.getLogger("pyserving.workers")


@dataclass(frozen=True)
class Hello:
    """What a worker is started with."""

    options: ServerOptions
    index: int
    bind_when_ready: bool
    models: list[ModelConfig]
    versions: dict[str, dict[int, str]]
    initial_names: set[str] = field(default_factory=set)
    rest_fd: int | None = None  # the supervisor's REST listening socket, inherited


class WorkerLink:
    """The worker's side of the channel; the `Supervision` its `Server` is built with."""

    def __init__(self) -> None:
        self.channel: Channel | None = None
        self.hello: asyncio.Future[Hello] = asyncio.get_running_loop().create_future()
        self.bus: EventBus[Any] = EventBus()
        self._status: dict[str, list[VersionStatus]] = {}
        self._ready: tuple[bool, str] = (False, "waiting for the supervisor's view of the workers")
        self._models: dict[str, ModelConfig] = {}
        self._server: Any = None
        self._started = asyncio.Event()

    # -- Supervision --------------------------------------------------------------------
    @property
    def index(self) -> int:
        return self.hello.result().index

    @property
    def bind_when_ready(self) -> bool:
        return self.hello.result().bind_when_ready

    @property
    def initial_models(self) -> list[ModelConfig]:
        return self.hello.result().models

    @property
    def initial_names(self) -> set[str]:
        return self.hello.result().initial_names

    @property
    def models(self) -> dict[str, ModelConfig]:
        return dict(self._models)

    def rest_socket(self) -> socket.socket | None:
        fd = self.hello.result().rest_fd
        return None if fd is None else socket.socket(fileno=fd)

    def model_status(self, name: str, version: int | None = None) -> list[VersionStatus]:
        return pick_status(name, version, self._status.get(name, []))

    def is_ready(self) -> tuple[bool, str]:
        return self._ready

    async def reload_config(self, models: list[ModelConfig], *, wait_timeout: float | None = None,
                            wait: bool = True) -> None:
        assert self.channel is not None
        await self.channel.call("reload", (models, wait_timeout))

    async def metrics_page(self) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        from pyserving.api.rest.errors import http_status
        from pyserving.monitoring.exporter import CONTENT_TYPE

        assert self.channel is not None
        try:
            body = await self.channel.call("metrics", timeout=30)
        except ServingError as err:  # the supervisor is gone or slow: TF Serving's error shape
            return http_status(err.code), [(b"content-type", b"application/json")], orjson.dumps({"error": err.message})
        return 200, [(b"content-type", CONTENT_TYPE)], body

    def attach(self, server: Any) -> None:
        self._server = server
        self._models = {m.name: m for m in self.initial_models}
        loop = asyncio.get_running_loop()

        def forward(event: ServableState) -> None:  # any thread
            err = event.error
            note = (event.id.name, event.id.version, int(event.state),
                    int(err.code) if err else 0, err.message if err else "")
            try:
                loop.call_soon_threadsafe(self._note, "state", note)
            except RuntimeError:  # loop closed: the worker is exiting
                pass

        server.core.bus.subscribe(forward)

    # -- channel --------------------------------------------------------------------------
    def _note(self, op: str, payload: Any) -> None:
        if self.channel is not None:
            self.channel.note(op, payload)

    def started(self) -> None:
        self._started.set()

    async def handle(self, op: str, payload: Any) -> Any:
        if op == "hello":
            self.hello.set_result(payload)
            return None
        if op == "view":
            self._status, self._ready = payload
            self.bus.publish(None)  # health re-checks readiness
            return None
        if op == "metrics":
            from pyserving.workers.metrics import dump

            await self._started.wait()
            return (await asyncio.to_thread(dump, self._server.metrics.registry),
                    dict(self._server.metrics.exposition_names))
        await self._started.wait()  # config and versions apply in order, after the start
        server = self._server
        if op == "config":
            self._models = {m.name: m for m in payload}
            server.core.configure(payload)
        elif op == "versions":
            name, versions = payload
            await asyncio.to_thread(server.core.set_versions, name, versions)
        elif op == "retire":
            log.info("Retiring: closing the listeners, finishing the requests in flight")
            server.request_stop(drain=False)
        else:
            raise ServingError(Code.UNIMPLEMENTED, f"unknown worker operation {op}")
        return None


_left_behind: list[bool] = []  # the server's threads_left_behind, for the exit


async def _serve(fd: int) -> int:
    from pyserving.model_server import Server

    link = WorkerLink()
    sock = socket.socket(fileno=fd)
    channel = link.channel = await Channel.open(sock, link.handle)
    reader = asyncio.create_task(channel.serve(), name="supervisor-channel")
    hello_or_gone: set[asyncio.Future[Any]] = {link.hello, reader}
    await asyncio.wait(hello_or_gone, return_when=asyncio.FIRST_COMPLETED)
    if not link.hello.done():
        return 1  # the supervisor went away before saying anything
    hello = link.hello.result()
    server: Server | None = None
    try:
        server = Server(hello.options, supervisor=link)
    except StartupError as exc:
        channel.note("startup_error", str(exc))
        await channel.flush(5)
        raise
    _stop_on_signals(server)
    reader.add_done_callback(lambda _: server.request_stop() if server is not None else None)

    async def on_started() -> None:
        for name, versions in hello.versions.items():
            await asyncio.to_thread(server.core.set_versions, name, versions)
        link.started()

    def on_ready() -> None:
        channel.note("ready")

    try:
        await server.run(on_ready=on_ready, on_started=on_started)
    except StartupError as exc:
        channel.note("startup_error", str(exc))
        await channel.flush(5)
        raise
    finally:
        if not channel.closed.is_set():  # its counts stay in the supervisor's sums
            from pyserving.workers.metrics import dump

            channel.note("final_metrics", dump(server.metrics.registry))
            await channel.flush(5)
        channel.close()
        _left_behind.append(server.threads_left_behind)
    return 0


def _stop_on_signals(server: Any) -> None:
    """SIGTERM drains, once: a worker can get it twice (from its supervisor, and from
    whatever signals the whole group, such as systemd stopping the service), and a second
    one must not cut the drain short; the supervisor kills a worker that outlives the grace."""
    seen = False

    def on_term() -> None:
        nonlocal seen
        if seen:
            return
        seen = True
        log.info("Received SIGTERM: draining requests in flight, then exiting")
        server.request_stop()

    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, on_term)
    loop.add_signal_handler(signal.SIGINT, lambda: None)


def main(argv: list[str] | None = None) -> int:
    from pyserving.process import configure_logging, exit_code, keep_freed_memory, run_loop
    from pyserving.platforms.tensorflow.runtime import import_tensorflow

    argv = sys.argv[1:] if argv is None else argv
    fd, index, level = int(argv[0]), int(argv[1]), argv[2]
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # until the loop installs its handlers
    configure_logging(level, f"[worker {index}] ")
    keep_freed_memory()
    import_tensorflow(level == "DEBUG")
    try:
        code = run_loop(_serve(fd))
    except StartupError as exc:
        print(str(exc), file=sys.stderr)
        code = exc.exit_code
    return exit_code(code, any(_left_behind))


if __name__ == "__main__":
    raise SystemExit(main())
