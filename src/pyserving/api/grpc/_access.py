"""Which scope each gRPC method needs, and the check that runs before the servicer.

`infer`: PredictionService's Predict, Classify, Regress, MultiInference and the Open
Inference Protocol's ModelInfer; `admin`: ModelService's HandleReloadConfigRequest and every
ProfilerService method; `read`: everything else but the open health checks
(`grpc.health.v1.Health`, which is not guarded at all, and the V2 ServerLive and
ServerReady). Credentials: `authorization: Bearer <token>` metadata, else a verified client
certificate's names (mutual TLS).
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

import grpc

from pyserving.api.grpc.status import to_grpc_status
from pyserving.auth import ADMIN, INFER, READ, Guard, bearer_token

__all__ = ["method_scope", "request_model_name", "guarded"]

_INFER = {"Predict", "Classify", "Regress", "MultiInference", "ModelInfer"}
_OPEN = {"ServerLive", "ServerReady"}  # the V2 protocol's health probes
# about the whole server, not one model: a credential limited to models may not use them
_SERVER_WIDE = {"HandleReloadConfigRequest", "ServerMetadata"}


def method_scope(service: str, method: str) -> str | None:
    if service == "tensorflow.ProfilerService" or method == "HandleReloadConfigRequest":
        return ADMIN
    if method in _OPEN:
        return None
    return INFER if method in _INFER else READ


def request_model_name(request: Any) -> str:
    """The model a request is about ("" when it names none)."""
    if hasattr(request, "model_spec"):
        return request.model_spec.name
    for field in ("model_name", "name"):  # the Open Inference Protocol's requests
        name = getattr(request, field, None)
        if isinstance(name, str):
            return name
    tasks = getattr(request, "tasks", None)
    return tasks[0].model_spec.name if tasks else ""


def _address(peer: str) -> str:
    """`ipv4:127.0.0.1:5123` -> `ipv4:127.0.0.1` (one client, whatever its source port)."""
    host, sep, port = peer.rpartition(":")
    return host if sep and port.isdigit() and host not in ("ipv4", "ipv6") else peer


def _certificate_names(context: grpc.aio.ServicerContext) -> list[str]:
    auth = context.auth_context()
    values = [*auth.get("x509_common_name", ()), *auth.get("x509_subject_alternative_name", ())]
    return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in values]


def guarded(behavior: Callable[..., Any], guard: Guard, service: str, method: str) -> Callable[..., Any] | None:
    """`behavior` behind the guard; None when the method is open (use `behavior` as is)."""
    scope = method_scope(service, method)
    if scope is None:
        return None
    server_wide = service == "tensorflow.ProfilerService" or method in _SERVER_WIDE
    what = f"/{service}/{method}"

    async def handle(request: Any, context: grpc.aio.ServicerContext) -> Any:
        bearer = None
        for key, value in context.invocation_metadata() or ():
            if key == "authorization":
                bearer = bearer_token(value if isinstance(value, str) else value.decode("latin-1"))
                break
        error = await guard.check(
            entrypoint="grpc", address=_address(context.peer() or "unknown"), bearer=bearer,
            peer_names=(lambda: _certificate_names(context)) if guard.wants_peer_names else None,
            scope=scope, model=None if server_wide else request_model_name(request), what=what)
        if error is not None:
            await context.abort(*to_grpc_status(error))
        result = behavior(request, context)
        return await result if inspect.isawaitable(result) else result

    return handle
