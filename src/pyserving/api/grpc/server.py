"""The gRPC front end: build, bind, start and stop the `grpc.aio` server.

Services: `tensorflow.serving.PredictionService`, `tensorflow.serving.ModelService`,
`inference.GRPCInferenceService` (the Open Inference Protocol, see `v2_servicer.py`; built in a
private descriptor pool, so reflection does not list it),
`tensorflow.ProfilerService` (TF's profiler in this process, writing only under
`--profiler_dir`, see `profiler.py`; on unless `--enable_profiler=false`), the standard `grpc.health.v1.Health` (always registered: it is
harmless; `""`, `ModelService`, `PredictionService` and their full names report NOT_SERVING
until `set_health(True)`: the `Server` drives it from readiness, so it says SERVING only
while every configured model has an AVAILABLE version and the server is not draining) and
server reflection listing them. Every unary service is registered by `_handlers.add_service`:
a request whose bytes do not parse answers INVALID_ARGUMENT.

Listeners, as TF Serving's `server.cc`: `0.0.0.0:<--port>` unless the port is 0, and
`unix:<--grpc_socket_path>` if set (a stale socket file left by a dead server is removed;
a live one, or a non-socket file, is a startup error). `--ssl_config_file` (text
`SSLConfig` with PEM contents) secures both with TLS, mutual TLS when `client_verify`; the
file is reread while serving and a new certificate serves new connections (`auth/tls.py`).
With `--auth_config_file`, every method but the health checks asks the guard first
(`_access.py`: scopes per method).

Channel arguments: max send/receive message size INT32_MAX (TF Serving's
`SetMaxMessageSize`), `grpc.so_reuseport=0` so that a port already in use is a clear
startup error instead of a silently shared port (1 for worker processes, which share it on
purpose; their supervisor checks the port is free first), a pending-call queue of 10,000 (soft) /
30,000 (hard) instead of core's 1,000 / 3,000 (beyond the soft limit core cancels
arriving calls at random: 2,000 concurrent calls from one client got ~5% CANCELLED),
then `--grpc_channel_arguments` (`k=v,k2=v2`; values that parse as int32 are ints, else
strings; they override ours).

`--grpc_max_threads`: TF Serving gives it to the C++ sync server's `ResourceQuota`
(threads polling for and running RPCs; excess RPCs queue). `grpc.aio` runs every RPC as a
coroutine on the event loop, so there is no RPC thread pool to size: the flag is accepted
and not applied. Model execution is bounded by the service's executor instead. (Mapping
it to `maximum_concurrent_rpcs` was rejected: that answers RESOURCE_EXHAUSTED where TF
Serving queues.)

Shutdown: the `Server` sets `should_exit` (like on `uvicorn.Server`); health turns
NOT_SERVING, new RPCs are refused and RPCs in flight get `--shutdown_grace_seconds`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import stat
from typing import Any, Callable

import grpc
from grpc_health.v1 import health, health_pb2
from grpc_reflection.v1alpha import reflection
from tensorflow_serving.apis import model_service_pb2, prediction_service_pb2

from pyserving.api.grpc._handlers import add_service
from pyserving.api.grpc.profiler import PROFILER_SERVICE, ProfilerServicer
from pyserving.api.grpc.servicers import ModelServicer, PredictionServicer
from pyserving.api.grpc.v2_servicer import InferenceServicer
from pyserving.errors import StartupError
from pyserving.options import ServerOptions
from pyserving.auth import Security, TlsFile
from pyserving.protos.inference_protos import INFERENCE_SERVICE
from pyserving.server.prediction_service import PredictionService

__all__ = ["GrpcFrontEnd", "parse_channel_arguments", "load_ssl_credentials", "HEALTH_SERVICE_NAMES"]

log = logging.getLogger("pyserving.grpc")

INT32_MAX = (1 << 31) - 1
_PREDICTION_SERVICE_DESCRIPTOR = prediction_service_pb2.DESCRIPTOR.services_by_name["PredictionService"]
_MODEL_SERVICE_DESCRIPTOR = model_service_pb2.DESCRIPTOR.services_by_name["ModelService"]
_HEALTH_SERVICE_DESCRIPTOR = health_pb2.DESCRIPTOR.services_by_name["Health"]
PREDICTION_SERVICE = _PREDICTION_SERVICE_DESCRIPTOR.full_name
MODEL_SERVICE = _MODEL_SERVICE_DESCRIPTOR.full_name
# TF Serving marks "ModelService" and "PredictionService"; clients also probe "" and full names.
HEALTH_SERVICE_NAMES = ("", "ModelService", "PredictionService", MODEL_SERVICE, PREDICTION_SERVICE)


def parse_channel_arguments(text: str) -> list[tuple[str, int | str]]:
    """`--grpc_channel_arguments`: `key=value` pairs separated by commas."""
    result: list[tuple[str, int | str]] = []
    for item in text.split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise StartupError(f"Invalid --grpc_channel_arguments entry {item!r}: expected key=value")
        key = key.strip()
        try:
            number = int(value)
        except ValueError:
            result.append((key, value))
            continue
        result.append((key, number) if -(1 << 31) <= number < (1 << 31) else (key, value))
    return result


def load_ssl_credentials(path: str) -> grpc.ServerCredentials:
    """Server credentials from a text-format `SSLConfig` (local or in a model store),
    reloaded before a handshake once the file has changed (`TlsFile.poll`); StartupError
    when unusable."""
    return TlsFile(path, "ssl_config_file").grpc_credentials()


def _prepare_socket_path(path: str) -> None:
    """Remove a stale socket file; refuse a live socket or a non-socket file."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise StartupError(f"Failed to start server. Error: --grpc_socket_path {path} exists and is not a socket")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(path)
        except (ConnectionRefusedError, FileNotFoundError):
            os.unlink(path)  # left behind by a server that is gone
            return
        except OSError:
            pass
    raise StartupError(f"Failed to start server. Error: --grpc_socket_path {path} is in use by another process")


def _bind(server: grpc.aio.Server, address: str, credentials: grpc.ServerCredentials | None) -> None:
    try:
        if credentials is None:
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, credentials)
    except RuntimeError as exc:
        raise StartupError(f"Failed to start server. Error: cannot listen for gRPC on {address}: {exc}") from None
    if port == 0 and not address.startswith("unix:"):
        raise StartupError(f"Failed to start server. Error: cannot listen for gRPC on {address}")


class GrpcFrontEnd:
    """A started gRPC server; `should_exit = True` (or `await stop()`) drains it."""

    def __init__(
        self,
        server: grpc.aio.Server,
        health_servicer: Any,
        profiler: ProfilerServicer | None,
        grace_seconds: float,
        socket_path: str,
    ) -> None:
        self._server = server
        self._health = health_servicer
        self._profiler = profiler
        self._grace_seconds = grace_seconds
        self._socket_path = socket_path
        self._stop_task: asyncio.Future[None] | None = None

    @classmethod
    async def start(
        cls,
        options: ServerOptions,
        service: PredictionService,
        *,
        metric_value: Callable[[str], int] | None = None,
        reuse_port: bool = False,
        readiness: Callable[[], tuple[bool, str]] | None = None,
        security: Security | None = None,
    ) -> GrpcFrontEnd | None:
        """Bind and start; None when neither `--port` nor `--grpc_socket_path` is set.
        `reuse_port`: worker processes share the port (SO_REUSEPORT). `readiness()`: the
        server's (ready, reason), which the Open Inference Protocol's ServerReady answers
        (default: always ready). `security`: TLS material (`--ssl_config_file`, reloadable)
        and the guard every service but health answers behind."""
        socket_path = options.grpc_socket_path
        if not options.port and not socket_path:
            return None
        credentials = None
        guard = security.guard if security is not None else None
        if security is not None and security.grpc_tls is not None:
            credentials = security.grpc_tls.grpc_credentials()
        elif options.ssl_config_file:  # off the loop: the file may be in a model store
            credentials = await asyncio.to_thread(load_ssl_credentials, options.ssl_config_file)
        args: dict[str, int | str] = {
            "grpc.max_send_message_length": INT32_MAX,
            "grpc.max_receive_message_length": INT32_MAX,
            "grpc.so_reuseport": int(reuse_port),
            # RPCs that arrive faster than the loop accepts them wait in gRPC core's
            # pending queue; past its soft limit (default 1000) core randomly answers
            # CANCELLED. A burst of 2000 concurrent calls hit that; queue them instead.
            "grpc.server.max_pending_requests": 10000,
            "grpc.server.max_pending_requests_hard_limit": 30000,
        }
        args.update(parse_channel_arguments(options.grpc_channel_arguments))
        server = grpc.aio.server(options=list(args.items()))

        # add_service, not the generated add_*_to_server: bytes that do not parse answer
        # INVALID_ARGUMENT (see _handlers.py).
        add_service(server, PredictionServicer(service, tensor_content=options.enable_serialization_as_tensor_content),
                    _PREDICTION_SERVICE_DESCRIPTOR, guard)
        add_service(server, ModelServicer(service, metric_value=metric_value), _MODEL_SERVICE_DESCRIPTOR, guard)
        add_service(server, InferenceServicer(service, readiness or (lambda: (True, ""))), INFERENCE_SERVICE, guard)
        health_servicer = health.aio.HealthServicer()
        add_service(server, health_servicer, _HEALTH_SERVICE_DESCRIPTOR)
        profiler = None
        if options.enable_profiler:
            profiler = ProfilerServicer(options.profiler_dir, options.profiler_max_duration_seconds)
            add_service(server, profiler, PROFILER_SERVICE, guard)
        reflection.enable_server_reflection(
            (PREDICTION_SERVICE, MODEL_SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )

        if options.port:
            _bind(server, f"0.0.0.0:{options.port}", credentials)
        if socket_path:
            _prepare_socket_path(socket_path)
            _bind(server, f"unix:{socket_path}", credentials)
        await server.start()
        front = cls(server, health_servicer, profiler, options.shutdown_grace_seconds, socket_path)
        await front.set_health(False)  # the Server reports readiness
        if credentials is not None:
            log.info("Using SSL credentials")
        if profiler is not None:
            log.info("Profiler service is enabled")
        if options.port:
            log.info("Running gRPC ModelServer at 0.0.0.0:%d ...", options.port)
        if socket_path:
            log.info("Running gRPC ModelServer at UNIX socket %s ...", socket_path)
        return front

    async def set_health(self, serving: bool) -> None:
        """Report every health service name SERVING or NOT_SERVING (a readiness hook)."""
        status = (
            health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in HEALTH_SERVICE_NAMES:
            await self._health.set(name, status)

    async def serve(self) -> None:
        """Until the server has stopped (and `stop` has finished its cleanup)."""
        await self._server.wait_for_termination()
        if self._stop_task is not None:
            await self._stop_task

    @property
    def should_exit(self) -> bool:
        return self._stop_task is not None

    @should_exit.setter
    def should_exit(self, value: bool) -> None:
        if value and self._stop_task is None:
            self._stop_task = asyncio.ensure_future(self._stop(self._grace_seconds))

    async def stop(self, grace_seconds: float | None = None) -> None:
        if self._stop_task is None:
            self._stop_task = asyncio.ensure_future(
                self._stop(self._grace_seconds if grace_seconds is None else grace_seconds)
            )
        await self._stop_task

    async def _stop(self, grace_seconds: float) -> None:
        with contextlib.suppress(Exception):
            await self._health.enter_graceful_shutdown()
        if self._profiler is not None:
            self._profiler.close()  # a running profile ends now, not at the end of the grace
        await self._server.stop(grace_seconds)
        if self._socket_path:
            with contextlib.suppress(OSError):
                if stat.S_ISSOCK(os.lstat(self._socket_path).st_mode):
                    os.unlink(self._socket_path)
        log.info("gRPC server stopped")
