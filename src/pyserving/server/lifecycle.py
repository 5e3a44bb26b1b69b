"""Process lifecycle: bind the ports, load the models, serve, drain on SIGTERM/SIGINT.

Ports open at once (before models load): a request for a model that is still loading
waits for it within its deadline. The initial load failing prints
`Failed to start server` and ends the process with a non-zero status. The first
SIGTERM/SIGINT stops accepting, lets requests in flight finish (at most
`--shutdown_grace_seconds`), unloads every model and exits 0; a second one exits at once.

Drain in detail: at the first signal readiness turns false (`/readyz` 503, gRPC
health NOT_SERVING) and every new request is refused by the `RequestGate`: REST answers
503 `{"error": ...}`, gRPC UNAVAILABLE. The REST listener stays open meanwhile, so a new
connection gets that clean 503 rather than a reset, and every REST response sent during
the drain carries `Connection: close`, so a keep-alive client is told not to reuse its
connection; an idle keep-alive connection that sends a request during the drain gets the
503 (with `Connection: close`) too. Once nothing is in flight (or the grace has passed),
the listeners close (later connects are refused), idle connections are closed, the models
are unloaded and the process exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
import sys
import time
from typing import Any

import uvicorn

from pyserving.core.servable_state import ManagerState, ServableState
from pyserving.errors import Code, ServingError, StartupError
from pyserving.monitoring.exporter import MonitoringConfigError, PrometheusExporter, read_monitoring_config
from pyserving.monitoring.health import Health
from pyserving.monitoring.metrics import ServingMetrics
from pyserving.monitoring.watchdog import LoopWatchdog
from pyserving.server.model_config import (
    ConfigParseError,
    ModelConfig,
    read_config_file,
    single_model_config,
    to_model_configs,
)
from pyserving.server.admission import RequestGate
from pyserving.server.budget import MemoryBudget
from pyserving.server.prediction_service import PredictionService
from pyserving.server.server_core import CoreOptions, ServerCore

__all__ = ["serve", "READY_MESSAGE"]

log = logging.getLogger("pyserving")

READY_MESSAGE = "Server ready: every model of the initial configuration is AVAILABLE"

# Set when the server stopped with a load or unload still running (stuck on I/O, say):
# the process must then exit without joining those threads.
_threads_left_behind = False


def threads_left_behind() -> bool:
    return _threads_left_behind


# Uvicorn stops reading a request body every 64 KiB until the app has taken it
# (flow control, with no setting for the limit): a 79 MB body took ~310 pause/resume round
# trips, 0.20 s here; with 1 MiB, 0.12 s. The buffer per connection stays bounded.
_BODY_READ_BUFFER = 1 << 20
try:
    from uvicorn.protocols.http import httptools_impl as _httptools_impl

    _httptools_impl.HIGH_WATER_LIMIT = max(_httptools_impl.HIGH_WATER_LIMIT, _BODY_READ_BUFFER)
except (ImportError, AttributeError):  # pragma: no cover - another uvicorn layout
    pass


def _freeze_after_load(event: ServableState) -> None:
    """A version loaded while serving (new version, reload, new model) is kept out
    of the cyclic GC like the initial ones (see the `gc.freeze()` once ready)."""
    if event.state == ManagerState.AVAILABLE:
        gc.freeze()


class _Uvicorn(uvicorn.Server):
    def capture_signals(self):  # type: ignore[override]
        return contextlib.nullcontext()  # our lifecycle owns the signals


def _bind(port: int) -> socket.socket:
    """Listen on all interfaces, IPv6 dual-stack first like TF Serving, else IPv4."""
    errors = []
    for family, host in ((socket.AF_INET6, "::"), (socket.AF_INET, "0.0.0.0")):
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
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


def build_model_configs(options: Any) -> list[ModelConfig]:
    if options.model_config_file:
        try:
            config = read_config_file(options.model_config_file)
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
        return to_model_configs(config)
    except ServingError as err:
        raise StartupError(f"Failed to start server. Error: {err}") from None


def _session_config(options: Any) -> Any:
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
            with open(options.tensorflow_session_config_file, encoding="utf-8") as f:
                text_format.Parse(f.read(), config)
        except (OSError, text_format.ParseError) as exc:
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


async def _poll_config_file(core: ServerCore, path: str, every: float, last_text: str | None) -> None:
    while True:
        await asyncio.sleep(every)
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except OSError as exc:
            log.error("Cannot read model config file %s: %s; keeping the current config", path, exc)
            continue
        if text == last_text:
            continue
        last_text = text
        try:
            from pyserving.server.model_config import parse_config_text

            config = parse_config_text(text)
            if config.WhichOneof("config") is None:  # an emptied file, a half-written ConfigMap
                raise ServingError(Code.FAILED_PRECONDITION, "Cannot transition to requested config. It is only "
                                   "legal to transition from one ModelConfigList to another.")
            models = to_model_configs(config)
            # Not waiting for the new models to load: a model that never becomes available
            # (a `specific` version not on disk yet) must not stop later edits from applying.
            await core.reload_config(models, wait=False)
        except (ConfigParseError, ServingError) as exc:
            log.error("Model config file %s not applied: %s", path, exc)
        except Exception:
            log.exception("Model config file %s not applied", path)


# Log level, monitoring config, drain
def _prometheus_exporter(options: Any, metrics: ServingMetrics) -> tuple[str, PrometheusExporter] | None:
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


def listening_summary(options: Any, rest: bool, metrics_path: str | None) -> str:
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


async def _drain(gate: RequestGate, health: Health, servers: list[tuple[str, Any, Any]], grace: float) -> None:
    """Refuse new requests, wait (at most `grace` s) for those in flight, then close the front
    ends with what is left of the grace."""
    started = time.monotonic()
    gate.start_drain()
    health.refresh()
    for name, server, _ in servers:
        if name == "grpc":
            await server.set_health(False)
    in_flight = sum(gate.in_flight().values())
    log.info("Draining: new requests are refused; waiting for %d request(s) in flight (at most %g s)",
             in_flight, grace)
    if await gate.wait_idle(grace):
        log.info("Drained: no request in flight")
    else:
        log.warning("Shutdown grace of %g s expired with %d request(s) still in flight", grace,
                    sum(gate.in_flight().values()))
    remaining = max(0.5, grace - (time.monotonic() - started))
    for name, server, _ in servers:
        if name == "rest":
            server.config.timeout_graceful_shutdown = remaining
            server.should_exit = True
        elif name == "grpc":
            await server.stop(remaining)


async def serve(options: Any) -> int:
    """Run the server until a signal; returns the process exit code."""
    if options.port == 0 and not options.grpc_socket_path and not options.rest_api_port:
        raise StartupError(
            "At least one of server_options.grpc_port or server_options.grpc_socket_path must be set."
        )
    # Batching flags + TF_ENABLE_BATCHING / TF_BATCH_TIMEOUT_MICROS
    from pyserving.batching import BatchingConfigError, batching_config_from_server_options, start_batching

    try:
        batching_config = batching_config_from_server_options(options)
    except BatchingConfigError as exc:
        raise StartupError(str(exc)) from None
    models = build_model_configs(options)
    loader_options: dict[str, Any] = {"tags": tuple(t.strip() for t in options.saved_model_tags.split(",") if t.strip())}
    session_config = _session_config(options)
    if session_config is not None:
        loader_options["session_config"] = session_config
    # Warmup and TFLite flags (each loader takes the ones it names)
    loader_options.update(
        enable_model_warmup=options.enable_model_warmup,
        num_request_iterations_for_warmup=options.num_request_iterations_for_warmup,
        prefer_tflite_model=options.prefer_tflite_model,
        num_tflite_pools=options.num_tflite_pools,
        num_tflite_interpreters_per_pool=options.num_tflite_interpreters_per_pool,
    )
    # Warmup metrics hook: loader_options["on_warmup"] = callback(model_path, status,
    # latency_us, records) (see platforms/tensorflow/warmup.py).

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals_seen = 0
    stopping_since: float | None = None

    def on_signal(signum: int) -> None:
        nonlocal signals_seen, stopping_since
        signals_seen += 1
        stopping_since = stopping_since or time.monotonic()
        if signals_seen > 1:
            log.warning("Second %s: exiting now", signal.Signals(signum).name)
            os._exit(1)
        log.info("Received %s: draining requests in flight, then exiting", signal.Signals(signum).name)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)

    batching = start_batching(batching_config) if batching_config is not None else None
    core = ServerCore(
        CoreOptions(
            file_system_poll_wait_seconds=options.file_system_poll_wait_seconds,
            max_num_load_retries=options.max_num_load_retries,
            load_retry_interval_seconds=max(0, options.load_retry_interval_micros) / 1e6,
            num_load_threads=options.num_load_threads,
            num_unload_threads=options.num_unload_threads,
            unload_drain_seconds=options.unload_drain_seconds,
            load_timeout_seconds=options.load_timeout_seconds,
            allow_version_labels_for_unavailable_models=options.allow_version_labels_for_unavailable_models,
            loader_options=loader_options,
            loader_wrapper=batching.wrap_loader if batching is not None else None,
        )
    )
    # Metrics, admission (drain, backpressure), health
    from prometheus_client import CollectorRegistry

    metrics = ServingMetrics(CollectorRegistry(auto_describe=False))
    core.bus.subscribe(metrics.on_servable_state)
    metrics.bind_configured(core.is_configured)
    core.bus.subscribe(_freeze_after_load)
    gate = RequestGate(options.max_in_flight_requests_per_model)
    health = Health(core, gate)
    metrics.bind_in_flight(lambda: {**dict.fromkeys(core.models, 0), **gate.in_flight()})
    metrics.bind_handles(core.manager.handles_in_use)
    watchdog = LoopWatchdog(metrics.event_loop_lag.observe)
    watchdog.start()
    prometheus = _prometheus_exporter(options, metrics)
    budget = MemoryBudget(options.max_request_tensor_bytes, options.max_in_flight_tensor_bytes)
    service = PredictionService(core, metrics=metrics, gate=gate, budget=budget)
    # warmup metrics (TF Serving's model_warmup_latency / _records_read); read at each load
    loader_options["on_warmup"] = lambda path, status, latency_us, records: metrics.record_warmup(
        path, status, latency_us / 1e6, records)
    if batching is not None:  # batching metrics (TF's batching_session/* and ours)
        from pyserving.batching import MetricsObserver

        pool = batching.scheduler.thread_pool_name
        batching.scheduler.add_observer(MetricsObserver(lambda model: metrics.batching(model, pool)))
    servers: list[tuple[str, Any, asyncio.Task[Any]]] = []
    try:
        if options.rest_api_port:
            if options.rest_api_port == options.port:
                log.error("--rest_api_port cannot be the same as --port; REST is not started")
            else:
                from pyserving.api.rest._http import HttpLimits, HttpProtocol
                from pyserving.api.rest.app import RestApp, RestOptions

                sock = _bind(options.rest_api_port)
                app = RestApp(
                    service,
                    RestOptions(
                        timeout_in_ms=options.rest_api_timeout_in_ms,
                        max_body_bytes=options.rest_api_max_body_bytes,
                        enable_cors=options.rest_api_enable_cors_support,
                        access_log=options.access_log,
                    ),
                )
                app.extra_routes.update(health.routes())  # /healthz, /readyz
                if prometheus is not None:
                    app.extra_routes[prometheus[0]] = prometheus[1]
                config = uvicorn.Config(
                    app, lifespan="off", access_log=False, log_config=None,
                    http=HttpProtocol.with_limits(HttpLimits(
                        max_head_bytes=options.rest_api_max_header_bytes,
                        max_headers=options.rest_api_max_headers,
                        read_timeout_seconds=options.rest_api_read_timeout_seconds,
                    )),
                    proxy_headers=False,  # nothing reads the client address: no rewriting layer
                    server_header=False,  # TF Serving's libevent answers without a Server header
                    timeout_graceful_shutdown=options.shutdown_grace_seconds, timeout_keep_alive=75,
                )
                server = _Uvicorn(config)
                task = asyncio.create_task(server.serve(sockets=[sock]), name="rest")
                servers.append(("rest", server, task))
                log.info("Exporting HTTP/REST API at:localhost:%d ...", options.rest_api_port)

        # gRPC front end (api/grpc): bound now, drained via should_exit like REST.
        from pyserving.api.grpc.server import GrpcFrontEnd

        grpc_front = await GrpcFrontEnd.start(options, service, metric_value=metrics.value)
        if grpc_front is not None:
            servers.append(("grpc", grpc_front, asyncio.create_task(grpc_front.serve(), name="grpc")))
        rest_started = any(name == "rest" for name, _, _ in servers)
        log.info("%s", listening_summary(options, rest_started, prometheus[0] if prometheus else None))

        async def report_health(ready: bool) -> None:  # gRPC health follows readiness
            if grpc_front is not None:
                await grpc_front.set_health(ready)

        servers.append(("health", None, asyncio.create_task(health.watch(report_health), name="health")))

        await core.start(models)
        load = asyncio.create_task(core.wait_initial_load())
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait({load, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if load.done():
            try:
                load.result()
            except ServingError as err:
                raise StartupError(f"Failed to start server. Error: {err}") from None
            health.mark_started()  # ready (and gRPC SERVING) before the ready line
            await report_health(health.readiness()[0])
            log.info("%s (%s)", READY_MESSAGE, ", ".join(sorted(core.models)))
            # Keep the loaded models' objects out of the cyclic GC; a full collection
            # with TF loaded costs ~170 ms and was the p99 of every request (bench/RESULTS.md).
            gc.freeze()
            if options.model_config_file and options.model_config_file_poll_wait_seconds > 0:
                with open(options.model_config_file, encoding="utf-8") as f:
                    first_text = f.read()
                servers.append(("config-poll", None, asyncio.create_task(
                    _poll_config_file(core, options.model_config_file,
                                      options.model_config_file_poll_wait_seconds, first_text))))
            await stopper
        else:
            load.cancel()
        await _drain(gate, health, servers, options.shutdown_grace_seconds)
        return 0
    finally:
        for name, server, task in servers:
            if server is not None:
                server.should_exit = True
        for name, server, task in servers:
            if server is None:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        # Shutdown stays within the grace whatever a load or a request is doing.
        grace = options.shutdown_grace_seconds
        left = grace if stopping_since is None else grace - (time.monotonic() - stopping_since)
        settled = await core.stop(timeout=max(1.0, left))
        if batching is not None:  # queues are closed by the unloads; end the threads
            await asyncio.to_thread(batching.stop, None if settled else 1.0)
        if not settled:
            global _threads_left_behind
            _threads_left_behind = True
        watchdog.stop()
        log.info("Server stopped")
