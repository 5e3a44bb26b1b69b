"""The supervisor of `--workers=N`: worker processes on the same ports, one lifecycle.

The supervisor parses the flags and the model config, polls the base paths and applies
config reloads (the config file, and `HandleReloadConfigRequest` forwarded by whichever
worker received it): it is the `ModelControl` of the whole server. Every aspired set goes
to every worker, whose own aspired-versions manager loads the new version before it
unloads the old, so each worker swaps without failing a request. Each worker reports its
version states; `ClusterStates` merges them, and the merged states are what model status,
readiness, the version state gauge and every worker's answers say (pushed to the workers
as a `view`). It never imports TensorFlow and serves no port itself.

Workers (`workers/worker.py`) are fresh interpreters (spawned, never forked), each a
`Server` on the same ports, where the kernel spreads the connections over one listener per
worker (SO_REUSEPORT). REST: the supervisor makes worker i's listener and keeps it, and a
replacement of worker i inherits it, so the connections the old one had not accepted yet
are the new one's, never reset (a listener that closes loses its queue). gRPC: each worker
binds its own (gRPC takes addresses, not sockets); a gRPC client whose connection is reset
before its call was sent retries the call by itself. `--grpc_socket_path` is bound by worker 0 only (a Unix socket
cannot be shared); while worker 0 is being replaced the socket does not answer and the
TCP port still does. The profiler profiles the worker that receives the request.

- A worker that dies (a signal, an abort, out of memory) is started again with a backoff
  (0.5 s doubling to 30 s; back to 0.5 s once a worker has served for a minute), counted in
  `pyserving_worker_restarts{reason="exit"}`. The replacement loads the current versions
  before it opens its ports; the others serve meanwhile, and readiness stays true while at
  least one worker serves.
- `--worker_max_rss_mb`: a worker over it is replaced (`reason="memory"`), and with
  `--recycle_workers_on_unload` a worker that unloaded a version is (`reason="recycle"`),
  so that memory TensorFlow keeps after an unload goes back to the system. One worker at
  a time, and only while another one serves: the replacement is started and loads first,
  then the old one closes its listeners and finishes what it has in flight.
- SIGTERM (or SIGINT) drains every worker as a single server drains; the supervisor exits
  once all of them have.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from pyserving.core.servable_id import ServableId
from pyserving.core.servable_state import ManagerState, ServableState
from pyserving.errors import Code, ServingError, StartupError
from pyserving.options import ServerOptions
from pyserving.server.model_config import ModelConfig
from pyserving.server.model_control import ModelControl
from pyserving.monitoring.metrics import StoreMetrics
from pyserving.sources.object_store import ModelStores, store_settings
from pyserving.workers.channel import Channel
from pyserving.workers.cluster import ClusterStates
from pyserving.workers.worker import Hello

__all__ = ["Supervisor", "ClusterControl"]

log = logging.getLogger("pyserving.workers")

_BACKOFF_FIRST, _BACKOFF_MAX, _STABLE_SECONDS = 0.5, 30.0, 60.0
_RSS_CHECK_SECONDS = 5.0


class ClusterControl(ModelControl):
    """The control plane over the workers: aspired sets go to them, their states merge."""

    def __init__(self, supervisor: Supervisor) -> None:
        options = supervisor.options
        super().__init__(poll_wait_seconds=options.file_system_poll_wait_seconds,
                         allow_version_labels_for_unavailable_models=options.allow_version_labels_for_unavailable_models,
                         stores=ModelStores(store_settings(
                             options.model_cache_dir, options.max_num_load_retries,
                             max(0, options.load_retry_interval_micros) / 1e6, options.file_system_poll_wait_seconds)))
        self._supervisor = supervisor
        self.aspired: dict[str, dict[int, str]] = {}
        self.cluster = ClusterStates(self._on_merged, self._is_aspired)
        self.stopping = False

    def _on_versions(self, name: str, versions: dict[int, str]) -> None:  # poll thread
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._aspire, name, dict(versions))

    def _aspire(self, name: str, versions: dict[int, str]) -> None:
        if self.stopping or self.aspired.get(name) == versions:
            return
        self.aspired[name] = versions
        self._supervisor.broadcast("versions", (name, versions))
        self.cluster.refresh()
        self._end_round()

    def _configured(self, models: list[ModelConfig]) -> None:
        self._supervisor.broadcast("config", models)

    def _is_aspired(self, sid: ServableId) -> bool:
        return sid.version in self.aspired.get(sid.name, {})

    def _on_merged(self, event: ServableState) -> None:
        self.bus.publish(event)
        # The workers hear of it before the log says it: a status asked after the log
        # line answers the new state whichever worker answers.
        self._supervisor.push_view()
        if event.error is not None:
            log.error("Servable %s is %s with error: %s", event.id, event.state.name, event.error.message)
        else:
            log.info("Servable %s is %s (every worker)", event.id, event.state.name)
        self._end_round()

    def _end_round(self) -> None:
        super()._end_round()
        self._supervisor.schedule_view()

    def is_ready(self) -> tuple[bool, str]:
        if self.stopping:
            return False, "the server is shutting down"
        if not self._initial_done:
            return False, "loading the initial models (" + ", ".join(sorted(self._models)) + ")"
        if not self.cluster.joined():
            return False, "no worker is serving"
        return super().is_ready()

    def served_names(self) -> set[str]:
        """Models with a version AVAILABLE everywhere (what a replacement loads before it serves)."""
        return {name for name in self._models if self.available_versions(name)}

    async def stop(self) -> None:
        self.stopping = True
        await self._stop_polling()


@dataclass(eq=False)
class _Worker:
    index: int
    key: int
    process: asyncio.subprocess.Process
    channel: Channel
    started: float
    joined: bool = False
    retiring: bool = False
    serving: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)


def _threads_configured(options: ServerOptions) -> bool:
    return bool(options.tensorflow_session_parallelism or options.tensorflow_intra_op_parallelism
                or options.tensorflow_inter_op_parallelism or options.tensorflow_session_config_file)


def _worker_options(options: ServerOptions, count: int) -> ServerOptions:
    """A worker's options. Unless TensorFlow's threads are configured, the workers share the
    cores: each runs its sessions with cores / workers intra-op threads (at least 1) and
    inter-op threads (at least 2). With TensorFlow's default (every core, in every worker),
    2 workers on 2 cores oversubscribe them: MNIST CNN batches ran 2.4x slower, and 64-client
    REST throughput was 5,724 req/s against 6,883 with one intra-op thread each."""
    if _threads_configured(options):
        return dataclasses.replace(options, workers=1)
    from pyserving.workers.cpus import available_cpus

    share = max(1, available_cpus() // count)
    return dataclasses.replace(options, workers=1, tensorflow_intra_op_parallelism=share,
                               tensorflow_inter_op_parallelism=max(2, share))


def _rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


class Supervisor:
    def __init__(self, options: ServerOptions, count: int) -> None:
        from pyserving.model_server import initial_model_configs

        if options.port == 0 and not options.grpc_socket_path and not options.rest_api_port:
            raise StartupError(
                "At least one of server_options.grpc_port or server_options.grpc_socket_path must be set."
            )
        if options.port == 0 and not options.rest_api_port:
            raise StartupError("Failed to start server. Error: --workers needs --port or --rest_api_port: "
                               "a Unix socket (--grpc_socket_path) is served by one process")
        self.options = options
        self.count = count
        self.worker_options = _worker_options(options, count)
        self.models, self.config_text = initial_model_configs(options)
        self.metrics_path = self._metrics_path()
        self.control = ClusterControl(self)
        self.registry = CollectorRegistry(auto_describe=False)
        self.restarts = Counter("pyserving_worker_restarts", "Worker processes started again, by reason (exit: "
                                "the worker died; memory: over --worker_max_rss_mb; recycle: after an unload).",
                                ["reason"], registry=self.registry)
        self.version_state = Gauge(
            "pyserving_model_version_state", "ModelVersionStatus.State of each version (10 START, 20 LOADING, "
            "30 AVAILABLE, 40 UNLOADING, 50 END).", ["model", "version"], registry=self.registry)
        # The supervisor lists and copies remote versions: its page part counts that.
        self.control.source.stores.observer = StoreMetrics(self.registry)
        self.control.bus.subscribe(
            lambda e: self.version_state.labels(e.id.name, str(e.id.version)).set(int(e.state)))
        self._workers: dict[int, _Worker] = {}
        self._keys = itertools.count(1)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stop_requested: asyncio.Event | None = None
        self._fatal: asyncio.Future[str] | None = None
        self._ready = False
        self._view_scheduled = False
        self._reload_lock = asyncio.Lock()
        self._failures: dict[int, int] = {}  # slot -> consecutive early exits
        self._replace_wanted: dict[int, str] = {}  # slot -> reason
        self._replace_wake: asyncio.Event | None = None
        self._membership = asyncio.Event()  # a worker joined or exited
        self._retired: list[Any] = []  # the last counters of workers that exited after retiring
        self._rest_sockets: dict[int, socket.socket] = {}  # worker index -> its REST listener

    def _metrics_path(self) -> str | None:
        from pyserving.monitoring.exporter import MonitoringConfigError, read_monitoring_config

        if not self.options.monitoring_config_file:
            return None
        try:
            settings = read_monitoring_config(self.options.monitoring_config_file)
        except MonitoringConfigError as exc:
            raise StartupError(f"Failed to start server. Error: {exc}") from None
        return settings.path if settings.enable and self.options.rest_api_port else None

    # -- talking to the workers ---------------------------------------------------------
    def broadcast(self, op: str, payload: Any) -> None:
        for worker in list(self._workers.values()):
            worker.channel.note(op, payload)

    def schedule_view(self) -> None:
        if not self._view_scheduled:
            self._view_scheduled = True
            asyncio.get_running_loop().call_soon(self.push_view)

    def _view(self) -> tuple[dict[str, Any], tuple[bool, str]]:
        control = self.control
        return {name: control.status_table(name) for name in control.monitor.names()}, control.is_ready()

    def push_view(self) -> None:
        self._view_scheduled = False
        self.broadcast("view", self._view())

    async def _handle(self, worker: _Worker, op: str, payload: Any) -> Any:
        if op == "state":
            name, version, state, code, message = payload
            error = ServingError(Code(code), message) if code else None
            self.control.cluster.update(worker.key, ServableState(ServableId(name, version), ManagerState(state), error))
            if (state == ManagerState.END and error is None and self.options.recycle_workers_on_unload
                    and self._ready and not worker.retiring):
                self._want_replaced(worker.index, "recycle")
            return None
        if op == "ready":
            worker.joined = True
            worker.serving.set()
            self._membership.set()
            log.info("Worker %d (pid %d) is serving", worker.index, worker.process.pid)
            self.control.cluster.join(worker.key)
            self.schedule_view()
            return None
        if op == "startup_error":
            if not self._ready and self._fatal is not None and not self._fatal.done():
                self._fatal.set_result(str(payload))
            else:
                log.error("Worker %d could not start: %s", worker.index, payload)
            return None
        if op == "reload":
            models, wait_timeout = payload
            async with self._reload_lock:
                await self.control.reload_config(models, wait_timeout=wait_timeout)
            return None
        if op == "metrics":
            return await self.metrics_page()
        if op == "final_metrics":  # a worker's counts outlive it in the sums
            self._retired.append([f for f in payload if f[1] in ("counter", "histogram", "summary")])
            return None
        raise ServingError(Code.UNIMPLEMENTED, f"unknown supervisor operation {op}")

    # -- workers --------------------------------------------------------------------------
    async def _spawn(self, index: int, *, bind_when_ready: bool, initial: bool) -> _Worker:
        parent, child = socket.socketpair()
        rest_fd = self._rest_socket(index)
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "pyserving.workers.worker", str(child.fileno()), str(index),
                self.options.log_level, pass_fds=(child.fileno(),) + ((rest_fd,) if rest_fd is not None else ()),
                stdin=asyncio.subprocess.DEVNULL)
        finally:
            child.close()
        key = next(self._keys)
        holder: list[_Worker] = []

        async def handle(op: str, payload: Any) -> Any:
            return await self._handle(holder[0], op, payload)

        channel = await Channel.open(parent, handle)
        worker = _Worker(index, key, process, channel, time.monotonic())
        holder.append(worker)
        # Registered and greeted in one step of the loop: every aspired set after this
        # snapshot reaches it as a note.
        self._workers[key] = worker
        self.control.cluster.add(key, counted=initial)
        control = self.control
        options = dataclasses.replace(
            self.worker_options, grpc_socket_path=self.options.grpc_socket_path if index == 0 else "")
        names = set(control.models) if initial else control.served_names()
        channel.note("hello", Hello(options, index, bind_when_ready, list(control.models.values()),
                                    {n: dict(v) for n, v in control.aspired.items()}, names, rest_fd))
        channel.note("view", self._view())
        log.info("Started worker %d (pid %d)", index, process.pid)
        self._spawn_task(channel.serve(), f"worker-{index}-channel")
        self._spawn_task(self._watch(worker), f"worker-{index}")
        return worker

    def _rest_socket(self, index: int) -> int | None:
        """The fd of worker `index`'s REST listener: one socket per worker index, made by the
        supervisor and kept across replacements of that worker."""
        options = self.options
        if not options.rest_api_port or options.rest_api_port == options.port:
            return None
        sock = self._rest_sockets.get(index)
        if sock is None:
            from pyserving.api.rest.server import bind

            sock = self._rest_sockets[index] = bind(options.rest_api_port, reuse_port=True)
        return sock.fileno()

    def _spawn_task(self, coro: Any, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _watch(self, worker: _Worker) -> None:
        code = await worker.process.wait()
        self._workers.pop(worker.key, None)
        worker.channel.close()
        self.control.cluster.remove(worker.key)
        self._membership.set()
        self.schedule_view()
        if self._stop_requested is None or self._stop_requested.is_set() or worker.retiring:
            return
        # Its REST listener goes too: new connections go to the other workers at once rather
        # than wait in its queue for the replacement (the few queued now are reset, as the
        # ones it had accepted were).
        sock = self._rest_sockets.pop(worker.index, None)
        if sock is not None:
            sock.close()
        how = f"signal {signal.Signals(-code).name}" if code < 0 else f"status {code}"
        served = time.monotonic() - worker.started
        failures = 0 if worker.joined and served > _STABLE_SECONDS else self._failures.get(worker.index, 0)
        self._failures[worker.index] = failures + 1
        delay = min(_BACKOFF_MAX, _BACKOFF_FIRST * 2 ** failures)
        log.error("Worker %d (pid %d) exited with %s after %.1f s; starting it again in %g s",
                  worker.index, worker.process.pid, how, served, delay)
        self.restarts.labels("exit").inc()
        await asyncio.sleep(delay)
        if not self._stop_requested.is_set():
            await self._spawn(worker.index, bind_when_ready=True, initial=not self._ready)

    def _want_replaced(self, index: int, reason: str) -> None:
        self._replace_wanted.setdefault(index, reason)
        if self._replace_wake is not None:
            self._replace_wake.set()

    async def _replace_loop(self) -> None:
        """Replace the workers asked for, one at a time, each only while another serves."""
        assert self._replace_wake is not None
        while True:
            await self._replace_wake.wait()
            self._replace_wake.clear()
            while self._replace_wanted:
                index, reason = next(iter(self._replace_wanted.items()))
                old = next((w for w in self._workers.values() if w.index == index and not w.retiring), None)
                if old is None or not old.joined:
                    self._replace_wanted.pop(index)
                    continue
                if sum(1 for w in self._workers.values() if w.joined and not w.retiring) < 2:
                    self._membership.clear()  # another worker is being replaced or restarted
                    await self._membership.wait()
                    continue
                self._replace_wanted.pop(index)
                await self._replace(old, reason)

    async def _replace(self, old: _Worker, reason: str) -> None:
        why = {"memory": "over its resident memory bound", "recycle": "it unloaded a version"}[reason]
        log.info("Replacing worker %d (pid %d): %s", old.index, old.process.pid, why)
        self.restarts.labels(reason).inc()
        old.retiring = True
        if old.index == 0 and self.options.grpc_socket_path:
            # The socket is worker 0's alone: the old one goes first, the TCP ports keep serving.
            old.channel.note("retire")
            await old.process.wait()
            new = await self._spawn(old.index, bind_when_ready=True, initial=False)
        else:
            new = await self._spawn(old.index, bind_when_ready=True, initial=False)
            serving = asyncio.ensure_future(new.serving.wait())
            exited = asyncio.ensure_future(new.process.wait())
            await asyncio.wait({serving, exited}, return_when=asyncio.FIRST_COMPLETED)
            serving.cancel()
            exited.cancel()
            old.channel.note("retire")
        with contextlib.suppress(Exception):
            await asyncio.wait_for(old.process.wait(), self.options.shutdown_grace_seconds + 30)

    async def _watch_memory(self) -> None:
        limit = self.options.worker_max_rss_mb << 20
        while True:
            await asyncio.sleep(_RSS_CHECK_SECONDS)
            for worker in list(self._workers.values()):
                rss = _rss_bytes(worker.process.pid)
                if worker.joined and not worker.retiring and rss > limit and worker.index not in self._replace_wanted:
                    log.warning("Worker %d (pid %d) uses %d MiB of resident memory, over --worker_max_rss_mb=%d",
                                worker.index, worker.process.pid, rss >> 20, self.options.worker_max_rss_mb)
                    self._want_replaced(worker.index, "memory")

    # -- metrics --------------------------------------------------------------------------
    def _own_families(self) -> list[Any]:
        from pyserving.workers.metrics import dump

        families = dump(self.registry)
        rss = [("pyserving_worker_resident_memory_bytes", {"worker": str(w.index)}, float(_rss_bytes(w.process.pid)))
               for w in sorted(self._workers.values(), key=lambda w: (w.index, w.key))]
        families.append(("pyserving_worker_resident_memory_bytes", "gauge",
                         "Resident memory of each worker process.", rss))
        families.append(("pyserving_workers", "gauge", "Worker processes by state (serving: loaded and counted).", [
            ("pyserving_workers", {"state": "live"}, float(len(self._workers))),
            ("pyserving_workers", {"state": "serving"}, float(self.control.cluster.joined())),
        ]))
        return families

    async def metrics_page(self) -> bytes:
        """The page every worker answers on the metrics path: summed over the workers."""
        from pyserving.monitoring.exporter import render
        from pyserving.workers.metrics import merge

        workers = [w for w in self._workers.values() if not w.retiring]
        answers = await asyncio.gather(*(w.channel.call("metrics", timeout=10) for w in workers),
                                       return_exceptions=True)
        dumps: dict[int, Any] = {}
        names: dict[str, str] = {}
        for worker, answer in zip(workers, answers):
            if isinstance(answer, BaseException):
                log.warning("Worker %d did not give its metrics: %s", worker.index, answer)
                continue
            families, exposition_names = answer
            dumps[worker.index] = families
            names.update(exposition_names)
        merged = merge(dumps, self._own_families(), self._retired)

        class _Merged:
            def collect(self) -> list[Any]:
                return merged

        return await asyncio.to_thread(render, _Merged(), names)

    # -- running ----------------------------------------------------------------------------
    def request_stop(self) -> None:
        if self._stop_requested is not None:
            self._stop_requested.set()

    async def run(self) -> int:
        """Start the workers, serve until `request_stop()`, drain them all; the exit status."""
        from pyserving.model_server import READY_MESSAGE, listening_summary, poll_config_file

        options = self.options
        self._stop_requested = asyncio.Event()
        self._fatal = asyncio.get_running_loop().create_future()
        self._replace_wake = asyncio.Event()
        # The workers share their ports on purpose (SO_REUSEPORT); a port another program
        # already holds must still be a start-up error, as it is for one process.
        from pyserving.api.rest.server import bind

        for port in {options.port, options.rest_api_port} - {0}:
            bind(port).close()
        await self.control.start(self.models)
        await self.control.poll_now()  # the first versions go out with the hello
        try:
            for index in range(self.count):
                await self._spawn(index, bind_when_ready=False, initial=True)
            threads = self.worker_options
            log.info("%s; %d worker processes (TensorFlow threads: %s)", listening_summary(
                options, bool(options.rest_api_port) and options.rest_api_port != options.port, self.metrics_path),
                self.count, "as configured" if _threads_configured(options) else
                f"{threads.tensorflow_intra_op_parallelism} intra-op, {threads.tensorflow_inter_op_parallelism} "
                "inter-op per worker")
            ready = asyncio.ensure_future(self.control.wait_initial_load())
            stop = asyncio.ensure_future(self._stop_requested.wait())
            first: set[asyncio.Future[Any]] = {ready, stop, self._fatal}
            await asyncio.wait(first, return_when=asyncio.FIRST_COMPLETED)
            if self._fatal.done():
                ready.cancel()
                raise StartupError(self._fatal.result())
            if ready.done():
                try:
                    ready.result()
                except ServingError as err:
                    raise StartupError(f"Failed to start server. Error: {err}") from None
                self._ready = True
                self.schedule_view()
                log.info("%s (%s); %d workers", READY_MESSAGE, ", ".join(sorted(self.control.models)), self.count)
                if options.model_config_file and options.model_config_file_poll_wait_seconds > 0:
                    self._spawn_task(poll_config_file(self.control, options.model_config_file,
                                                      options.model_config_file_poll_wait_seconds, self.config_text),
                                     "config-poll")
                self._spawn_task(self._replace_loop(), "replace")
                if options.worker_max_rss_mb > 0:
                    self._spawn_task(self._watch_memory(), "memory")
                await stop
            else:
                ready.cancel()
        finally:
            code = await self._shutdown()
        return code

    async def _shutdown(self) -> int:
        """SIGTERM to every worker (each drains as a single server does); wait for all."""
        assert self._stop_requested is not None
        self._stop_requested.set()
        await self.control.stop()
        self.push_view()
        workers = list(self._workers.values())
        for worker in workers:
            with contextlib.suppress(ProcessLookupError):
                worker.process.send_signal(signal.SIGTERM)
        log.info("Stopping %d worker(s): each drains its requests in flight", len(workers))
        waits = [asyncio.ensure_future(w.process.wait()) for w in workers]
        code = 0
        if waits:
            done, pending = await asyncio.wait(waits, timeout=self.options.shutdown_grace_seconds + 30)
            for worker, wait in zip(workers, waits):
                if wait in pending:
                    log.error("Worker %d (pid %d) did not stop; killing it", worker.index, worker.process.pid)
                    with contextlib.suppress(ProcessLookupError):
                        worker.process.kill()
                    await wait
                    code = 1
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for sock in self._rest_sockets.values():
            sock.close()
        log.info("Server stopped")
        return code
