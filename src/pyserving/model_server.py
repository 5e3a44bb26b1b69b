"""The model server: one `Server` built from `ServerOptions` holds every part and runs them.

    server = Server(options)       # builds the parts; reads config files; no port, no thread
    await server.start()           # ports open (REST, gRPC), models start loading
    await server.wait_ready()      # every model of the initial configuration is AVAILABLE
    ...                            # serve; `server.request_stop()` (a signal) ends `run()`
    await server.stop()            # drain, close the front ends, unload, end the threads

`run()` does all of it until `request_stop()`; the command line installs SIGTERM/SIGINT to
call it. Ports open at once (before models load): a request for a model that is still
loading waits for it within its deadline. The initial load failing raises `StartupError`
(`Failed to start server ...`).

Parts, each usable alone: `core` (ServerCore: sources, the aspired-versions manager),
`service` (PredictionService: the one data plane every front end calls), `gate`
(admission: drain and per-model bounds), `metrics`, `health`, `budget`, `batching`,
`rest_app` (the ASGI app, None without REST) and the started `front_ends`.

Drain in detail: at the stop request readiness turns false (`/readyz` 503, gRPC health
NOT_SERVING) and every new request is refused by the gate: REST answers 503
`{"error": ...}`, gRPC UNAVAILABLE. The REST listener stays open meanwhile, so a new
connection gets that clean 503 rather than a reset, and every REST response sent during
the drain carries `Connection: close`, so a keep-alive client is told not to reuse its
connection. Once nothing is in flight (or `--shutdown_grace_seconds` has passed), the
listeners close, idle connections are closed, the models are unloaded. The whole stop stays
within the grace whatever a load or a request is doing; threads that could not finish (a
load stuck on I/O) are reported by `threads_left_behind`.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import time
from typing import Any, Awaitable, Callable, Protocol

from pyserving.core.servable_id import ServableId
from pyserving.core.servable_state import ManagerState, ServableState
from pyserving.errors import Code, ServingError, StartupError
from pyserving.monitoring.exporter import MonitoringConfigError, PrometheusExporter, read_monitoring_config
from pyserving.monitoring.health import Health
from pyserving.monitoring.metrics import ServingMetrics
from pyserving.monitoring.watchdog import LoopWatchdog
from pyserving.options import ServerOptions
from pyserving.server.admission import RequestGate
from pyserving.server.budget import MemoryBudget
from pyserving.server.model_config import (
    ConfigParseError,
    ModelConfig,
    parse_config_text,
    read_config_file_text,
    single_model_config,
    to_model_configs,
)
from pyserving.server.prediction_service import PredictionService
from pyserving.server.server_core import CoreOptions, ServerCore
from pyserving.sources import stores

__all__ = ["Server", "Supervision", "READY_MESSAGE", "listening_summary", "build_model_configs",
           "initial_model_configs", "poll_config_file"]

log = logging.getLogger("pyserving")

READY_MESSAGE = "Server ready: every model of the initial configuration is AVAILABLE"

# (loader, ServableId, export_dir) -> loader, applied to every new version's loader.
LoaderWrapper = Callable[[Any, ServableId, str], Any]


class Supervision(Protocol):
    """What a worker process's `Server` takes from its supervisor (`workers/worker.py`):
    the models and versions (the worker's core has no source of its own), status and
    readiness as the supervisor merges them over every worker, config reloads (applied to
    every worker), the metrics page (summed over every worker)."""

    bus: Any  # published on whenever status or readiness may have changed

    @property
    def index(self) -> int: ...

    @property
    def bind_when_ready(self) -> bool: ...  # a replacement worker opens its ports once it has loaded

    @property
    def initial_models(self) -> list[ModelConfig]: ...

    @property
    def initial_names(self) -> set[str]: ...  # the models the worker waits for before it is ready

    @property
    def models(self) -> dict[str, ModelConfig]: ...

    def model_status(self, name: str, version: int | None = None) -> list[Any]: ...

    def is_ready(self) -> tuple[bool, str]: ...

    async def reload_config(self, models: list[ModelConfig], *, wait_timeout: float | None = None,
                            wait: bool = True) -> None: ...

    async def metrics_page(self) -> tuple[int, list[tuple[bytes, bytes]], bytes]: ...

    def attach(self, server: Server) -> None: ...

    def rest_socket(self) -> Any: ...  # this worker's REST listener, made and kept by the supervisor


class FrontEnd(Protocol):
    """What the server needs of a started front end (REST, gRPC, ...)."""

    should_exit: bool

    async def set_health(self, serving: bool) -> None: ...

    async def serve(self) -> None: ...

    async def stop(self, grace_seconds: float | None = None) -> None: ...


def _freeze_after_load(event: ServableState) -> None:
    """A version loaded while serving (new version, reload, new model) is kept out
    of the cyclic GC like the initial ones (see the `gc.freeze()` once ready)."""
    if event.state == ManagerState.AVAILABLE:
        gc.freeze()


def build_model_configs(options: ServerOptions) -> list[ModelConfig]:
    return initial_model_configs(options)[0]


def initial_model_configs(options: ServerOptions) -> tuple[list[ModelConfig], str | None]:
    """The models to serve first, and the text of --model_config_file they come from (None
    without one): the config file poll applies what differs from that text, so an edit made
    while the first models load is not missed."""
    text = None
    if options.model_config_file:
        try:
            text = read_config_file_text(options.model_config_file)
            config = parse_config_text(text)
        except ConfigParseError as exc:
            raise StartupError(str(exc)) from None
    else:
        if not options.model_base_path:
            raise StartupError(
                "Both server_options.model_base_path and server_options.model_config_file are empty!"
            )
        base_path = options.model_base_path
        if "://" not in base_path and not os.path.isabs(base_path):
            base_path = os.path.abspath(base_path)
            log.warning("--model_base_path is relative; serving %s", base_path)
        config = single_model_config(options.model_name, base_path)
    try:
        return to_model_configs(config), text
    except ServingError as err:
        raise StartupError(f"Failed to start server. Error: {err}") from None


def _session_config(options: ServerOptions) -> Any:
    parallel = (options.tensorflow_session_parallelism, options.tensorflow_intra_op_parallelism,
                options.tensorflow_inter_op_parallelism)
    if all(p > 0 for p in parallel):
        raise StartupError(
            "Failed to start server. Error: Either configure server_options.tensorflow_session_parallelism "
            "or (server_options.tensorflow_intra_op_parallelism, server_options.tensorflow_inter_op_parallelism). "
            "Both cannot be set."
        )
    if not (options.tensorflow_session_config_file or any(p > 0 for p in parallel)
            or options.per_process_gpu_memory_fraction):
        return None
    from google.protobuf import text_format
    from tensorflow.core.protobuf import config_pb2

    config = config_pb2.ConfigProto()
    if options.tensorflow_session_config_file:
        try:
            text_format.Parse(stores.read_text(options.tensorflow_session_config_file), config)
        except (OSError, UnicodeDecodeError, text_format.ParseError) as exc:
            raise StartupError(f"Error parsing text-format tensorflow.ConfigProto: {exc}") from None
    if options.tensorflow_session_parallelism > 0:
        config.intra_op_parallelism_threads = options.tensorflow_session_parallelism
        config.inter_op_parallelism_threads = options.tensorflow_session_parallelism
    if options.tensorflow_intra_op_parallelism > 0:
        config.intra_op_parallelism_threads = options.tensorflow_intra_op_parallelism
    if options.tensorflow_inter_op_parallelism > 0:
        config.inter_op_parallelism_threads = options.tensorflow_inter_op_parallelism
    if options.per_process_gpu_memory_fraction:
        config.gpu_options.per_process_gpu_memory_fraction = options.per_process_gpu_memory_fraction
    return config


async def _read_config_text(path: str) -> str | None:
    """The model config file's text, read off the loop (it may be in a model store); None,
    logged, when it cannot be read."""
    try:
        return await asyncio.to_thread(stores.read_text, path)
    except (OSError, UnicodeDecodeError) as exc:
        log.error("Cannot read model config file %s: %s; keeping the current config", path, exc)
        return None


async def poll_config_file(control: Any, path: str, every: float, last_text: str | None) -> None:
    """Apply `path` (local or in a model store) to `control` (a `ModelControl`) whenever its
    text changes. `last_text`: the text in force, None if unknown (the next read applies)."""
    while True:
        await asyncio.sleep(every)
        text = await _read_config_text(path)
        if text is None or text == last_text:
            continue
        last_text = text
        try:
            config = parse_config_text(text)
            if config.WhichOneof("config") is None:  # an emptied file, a half-written ConfigMap
                raise ServingError(Code.FAILED_PRECONDITION, "Cannot transition to requested config. It is only "
                                   "legal to transition from one ModelConfigList to another.")
            models = to_model_configs(config)
            # Not waiting for the new models to load: a model that never becomes available
            # (a `specific` version not on disk yet) must not stop later edits from applying.
            await control.reload_config(models, wait=False)
        except (ConfigParseError, ServingError) as exc:
            log.error("Model config file %s not applied: %s", path, exc)
        except Exception:
            log.exception("Model config file %s not applied", path)


def _prometheus_exporter(options: ServerOptions, metrics: ServingMetrics) -> tuple[str, PrometheusExporter] | None:
    """(path, handler) from --monitoring_config_file, None when off; StartupError if unreadable."""
    if not options.monitoring_config_file:
        return None
    try:
        settings = read_monitoring_config(options.monitoring_config_file)
    except MonitoringConfigError as exc:
        raise StartupError(f"Failed to start server. Error: {exc}") from None
    if not options.rest_api_port:
        log.warning("--monitoring_config_file needs --rest_api_port: Prometheus metrics are not exported")
        return None
    if not settings.enable:
        return None
    log.info("Exporting Prometheus metrics at %s on the REST port", settings.path)
    return settings.path, PrometheusExporter(metrics.registry, metrics.exposition_names)


def listening_summary(options: ServerOptions, rest: bool, metrics_path: str | None) -> str:
    """The one start-up line that says what is served where and what is off, so that a
    front end left off by a flag is visible in the log."""
    on: list[str] = []
    off: list[str] = []
    tls = " with TLS" if options.ssl_config_file else ""
    if options.port:
        on.append(f"gRPC on 0.0.0.0:{options.port}{tls}")
    if options.grpc_socket_path:
        on.append(f"gRPC on unix:{options.grpc_socket_path}{tls}")
    if not options.port and not options.grpc_socket_path:
        off.append("gRPC (--port=0)")
    if rest:
        on.append(f"REST on 0.0.0.0:{options.rest_api_port}")
        if metrics_path:
            on.append(f"Prometheus metrics at {metrics_path} on the REST port")
        else:
            off.append("Prometheus metrics (see --monitoring_config_file)")
    elif not options.rest_api_port:
        off.append("REST and Prometheus metrics (--rest_api_port=0)")
    else:
        off.append("REST (--rest_api_port is the gRPC --port)")
    return "Serving " + ", ".join(on) + ("; off: " + ", ".join(off) if off else "")


def _loader_options(options: ServerOptions) -> dict[str, Any]:
    loader_options: dict[str, Any] = {
        "tags": tuple(t.strip() for t in options.saved_model_tags.split(",") if t.strip()),
        # warmup and TFLite flags: each loader takes the ones it names
        "enable_model_warmup": options.enable_model_warmup,
        "num_request_iterations_for_warmup": options.num_request_iterations_for_warmup,
        "enable_signature_method_name_check": options.enable_signature_method_name_check,
        "prefer_tflite_model": options.prefer_tflite_model,
        "num_tflite_pools": options.num_tflite_pools,
        "num_tflite_interpreters_per_pool": options.num_tflite_interpreters_per_pool,
    }
    session_config = _session_config(options)
    if session_config is not None:
        loader_options["session_config"] = session_config
    return loader_options


class Server:
    def __init__(self, options: ServerOptions, *, loader_wrapper: LoaderWrapper | None = None,
                 supervisor: Supervision | None = None) -> None:
        """Build every part from `options` (StartupError when they are wrong). `loader_wrapper`
        wraps each version's platform loader, inside batching (a benchmark stands a model in
        with it). With `supervisor`, the server is one worker process of several."""
        if options.port == 0 and not options.grpc_socket_path and not options.rest_api_port:
            raise StartupError(
                "At least one of server_options.grpc_port or server_options.grpc_socket_path must be set."
            )
        from pyserving.batching import BatchingConfigError, batching_config_from_server_options, start_batching
        from prometheus_client import CollectorRegistry

        self.options = options
        self.supervisor = supervisor
        try:
            batching_config = batching_config_from_server_options(options)
        except BatchingConfigError as exc:
            raise StartupError(str(exc)) from None
        self.models: list[ModelConfig]
        if supervisor is None:
            self.models, self._config_text = initial_model_configs(options)
        else:  # the supervisor polls the config file
            self.models, self._config_text = supervisor.initial_models, None
        loader_options = _loader_options(options)
        self.metrics = ServingMetrics(CollectorRegistry(auto_describe=False))
        # warmup metrics (TF Serving's model_warmup_latency / _records_read); read at each load
        loader_options["on_warmup"] = lambda path, status, latency_us, records: self.metrics.record_warmup(
            path, status, latency_us / 1e6, records)
        self.prometheus = _prometheus_exporter(options, self.metrics)
        # Threads start last: everything above may still refuse the options.
        self.batching = start_batching(batching_config) if batching_config is not None else None
        self.core = ServerCore(CoreOptions(
            file_system_poll_wait_seconds=options.file_system_poll_wait_seconds,
            max_num_load_retries=options.max_num_load_retries,
            load_retry_interval_seconds=max(0, options.load_retry_interval_micros) / 1e6,
            num_load_threads=options.num_load_threads,
            num_unload_threads=options.num_unload_threads,
            unload_drain_seconds=options.unload_drain_seconds,
            load_timeout_seconds=options.load_timeout_seconds,
            allow_version_labels_for_unavailable_models=options.allow_version_labels_for_unavailable_models,
            loader_options=loader_options,
            loader_wrapper=_compose(loader_wrapper,
                                    self.batching.wrap_loader if self.batching is not None else None),
            model_cache_dir=options.model_cache_dir,
            store_observer=self.metrics.store,
        ), own_source=supervisor is None)
        # What status, readiness and reloads answer from: this core, or the supervisor's
        # view of every worker.
        self.control: Any = supervisor if supervisor is not None else self.core
        core, metrics = self.core, self.metrics
        core.bus.subscribe(metrics.on_servable_state)
        metrics.bind_configured(core.is_configured)
        core.bus.subscribe(_freeze_after_load)
        self.gate = RequestGate(options.max_in_flight_requests_per_model)
        self.health = Health(self.control, self.gate)
        metrics.bind_in_flight(lambda: {**dict.fromkeys(core.models, 0), **self.gate.in_flight()})
        metrics.bind_handles(core.manager.handles_in_use)
        self.watchdog = LoopWatchdog(metrics.event_loop_lag.observe)
        self.budget = MemoryBudget(options.max_request_tensor_bytes, options.max_in_flight_tensor_bytes)
        self.service = PredictionService(core, metrics=metrics, gate=self.gate, budget=self.budget,
                                         control=self.control,
                                         method_name_check=options.enable_signature_method_name_check)
        if self.batching is not None:  # batching metrics (TF's batching_session/* and ours)
            from pyserving.batching import MetricsObserver

            pool = self.batching.scheduler.thread_pool_name
            self.batching.scheduler.add_observer(MetricsObserver(lambda model: metrics.batching(model, pool)))
        self.rest_app = None
        if options.rest_api_port and options.rest_api_port != options.port:
            from pyserving.api.rest.server import build_rest_app

            self.rest_app = build_rest_app(options, self.service)
            self.rest_app.extra_routes.update(self.health.routes())  # /healthz, /readyz
            from pyserving.api.rest.v2 import OpenInferenceRest

            # The Open Inference Protocol (KServe V2) beside TF Serving's API
            self.rest_app.mount("/v2", OpenInferenceRest(self.service, self.rest_app.options, self.health.readiness,
                                                         self.rest_app.cors_headers))
            if self.prometheus is not None:
                page = self.prometheus[1] if supervisor is None else supervisor.metrics_page
                self.rest_app.extra_routes[self.prometheus[0]] = page
        self.front_ends: dict[str, FrontEnd] = {}
        self.threads_left_behind = False  # a load or unload still running after stop()
        self._tasks: list[asyncio.Task[Any]] = []
        self._stop_requested = asyncio.Event()
        self._drain_on_stop = True
        self._stopping_since: float | None = None
        self._stopped: asyncio.Future[None] | None = None
        if supervisor is not None:
            supervisor.attach(self)

    async def start(self) -> None:
        """Open the ports and start loading the models; returns at once."""
        options = self.options
        self.watchdog.start()
        if options.rest_api_port and options.rest_api_port == options.port:
            log.error("--rest_api_port cannot be the same as --port; REST is not started")
        supervisor = self.supervisor
        if supervisor is None or not supervisor.bind_when_ready:
            await self._open_front_ends()
        await self.core.start(self.models, None if supervisor is None else supervisor.initial_names)

    async def _open_front_ends(self) -> None:
        options = self.options
        worker = self.supervisor is not None
        if self.rest_app is not None:
            from pyserving.api.rest.server import RestFrontEnd

            sock = self.supervisor.rest_socket() if self.supervisor is not None else None
            self.front_ends["rest"] = await RestFrontEnd.start(options, self.rest_app, sock=sock)
        from pyserving.api.grpc.server import GrpcFrontEnd

        grpc_front = await GrpcFrontEnd.start(options, self.service, metric_value=self.metrics.value,
                                              reuse_port=worker, readiness=self.health.readiness)
        if grpc_front is not None:
            self.front_ends["grpc"] = grpc_front
        for name, front in self.front_ends.items():
            self._tasks.append(asyncio.create_task(front.serve(), name=name))
        if not worker:  # the supervisor says it once for all its workers
            log.info("%s", listening_summary(options, "rest" in self.front_ends,
                                             self.prometheus[0] if self.prometheus else None))
        self._tasks.append(asyncio.create_task(self.health.watch(self._report_health), name="health"))

    async def _report_health(self, ready: bool) -> None:  # pushed health (gRPC) follows readiness
        for front in self.front_ends.values():
            await front.set_health(ready)

    async def wait_ready(self) -> None:
        """Until every model of the initial configuration is AVAILABLE; StartupError if one
        cannot be. Then ready: /readyz 200, gRPC health SERVING, the config file polled."""
        try:
            await self.core.wait_initial_load()
        except ServingError as err:
            raise StartupError(f"Failed to start server. Error: {err}") from None
        if not self.front_ends and self.supervisor is not None and self.supervisor.bind_when_ready:
            await self._open_front_ends()
        self.health.mark_started()  # ready (and gRPC SERVING) before the ready line
        await self._report_health(self.health.readiness()[0])
        if self.supervisor is not None:  # the supervisor says READY_MESSAGE once all workers are
            log.info("Loaded its models (%s)", ", ".join(sorted(self.core.models)))
        else:
            log.info("%s (%s)", READY_MESSAGE, ", ".join(sorted(self.core.models)))
        # Keep the loaded models' objects out of the cyclic GC; a full collection
        # with TF loaded costs ~170 ms and was the p99 of every request (bench/RESULTS.md).
        gc.freeze()
        options = self.options
        if options.model_config_file and options.model_config_file_poll_wait_seconds > 0 and self.supervisor is None:
            self._tasks.append(asyncio.create_task(poll_config_file(
                self.core, options.model_config_file, options.model_config_file_poll_wait_seconds, self._config_text),
                name="config-poll"))

    def request_stop(self, *, drain: bool = True) -> None:
        """Ask `run()` to drain and stop (what SIGTERM does); callable from the loop only.
        Without `drain` (a worker replaced while the others serve) new requests are not
        refused: the listeners close and what is in flight finishes."""
        self._stopping_since = self._stopping_since or time.monotonic()
        self._drain_on_stop = self._drain_on_stop and drain
        self._stop_requested.set()

    async def run(self, on_ready: Callable[[], None] | None = None,
                  on_started: Callable[[], Awaitable[None]] | None = None) -> None:
        """Start, serve until `request_stop()`, then drain and stop; `await on_started()`
        once started, `on_ready()` once every initial model is AVAILABLE. StartupError if it
        cannot start (after stopping what had started)."""
        try:
            await self.start()
            if on_started is not None:
                await on_started()
            ready = asyncio.create_task(self.wait_ready())
            stop = asyncio.create_task(self._stop_requested.wait())
            await asyncio.wait({ready, stop}, return_when=asyncio.FIRST_COMPLETED)
            if ready.done():
                ready.result()  # StartupError
                if on_ready is not None:
                    on_ready()
                await stop
            else:
                ready.cancel()
        except BaseException:
            await self.stop(drain=False)
            raise
        await self.stop(drain=self._drain_on_stop)

    async def stop(self, *, drain: bool = True) -> None:
        """Drain (at most `--shutdown_grace_seconds`, counted from the stop request), close
        the front ends, unload every model, end the threads. Idempotent."""
        if self._stopped is None:
            self._stopping_since = self._stopping_since or time.monotonic()
            self._stopped = asyncio.ensure_future(self._stop(drain))
        await asyncio.shield(self._stopped)

    def _left(self) -> float:
        spent = time.monotonic() - (self._stopping_since or time.monotonic())
        return self.options.shutdown_grace_seconds - spent

    async def _stop(self, drain: bool) -> None:
        try:
            if drain and self.front_ends:
                await self.drain()
        finally:
            for front in self.front_ends.values():
                front.should_exit = True
            self.health.stop()
            for task in self._tasks:
                if task.get_name() in ("health", "config-poll"):
                    task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            settled = await self.core.stop(timeout=max(1.0, self._left()))
            if self.batching is not None:  # queues are closed by the unloads; end the threads
                await asyncio.to_thread(self.batching.stop, None if settled else 1.0)
            self.threads_left_behind = not settled
            self.watchdog.stop()
            log.info("Server stopped")

    async def drain(self) -> None:
        """Refuse new requests, wait for those in flight (within the grace), then close the
        front ends with what is left of it."""
        grace = max(0.0, self._left())
        self.gate.start_drain()
        self.health.refresh()
        await self._report_health(False)
        in_flight = sum(self.gate.in_flight().values())
        log.info("Draining: new requests are refused; waiting for %d request(s) in flight (at most %g s)",
                 in_flight, grace)
        if await self.gate.wait_idle(grace):
            log.info("Drained: no request in flight")
        else:
            log.warning("Shutdown grace of %g s expired with %d request(s) still in flight", grace,
                        sum(self.gate.in_flight().values()))
        remaining = max(0.5, self._left())
        await asyncio.gather(*(front.stop(remaining) for front in self.front_ends.values()))


def _compose(first: LoaderWrapper | None, then: LoaderWrapper | None) -> LoaderWrapper | None:
    if first is None or then is None:
        return first or then
    return lambda loader, sid, path: then(first(loader, sid, path), sid, path)
