"""Register a servicer on a `grpc.aio` server so that a request that does not parse answers
INVALID_ARGUMENT.

The generated `add_*Servicer_to_server` functions give grpc.aio the message class's
`FromString` as the deserializer; when it raises, grpc.aio answers UNKNOWN
`Unexpected <class 'google.protobuf.message.DecodeError'>: ...`, and logs it. Bytes that
are not the method's request message are the client's error, so `add_service` registers
the same methods with a deserializer that turns a `DecodeError` into a `MalformedRequest`
value and a behaviour that answers it with INVALID_ARGUMENT before the servicer runs.

Unary-request methods only (every service we register: PredictionService, ModelService,
ProfilerService, grpc.health.v1.Health). Methods the servicer implements synchronously keep
the plain deserializer (grpc.aio cannot await them through a wrapper).
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import DecodeError

__all__ = ["MalformedRequest", "add_service", "tolerant_deserializer"]


class MalformedRequest:
    """What the deserializer returns for bytes that do not parse; `message` says why."""

    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message


def tolerant_deserializer(request_class: Any) -> Callable[[bytes], Any]:
    """`request_class.FromString`, returning a `MalformedRequest` instead of raising."""
    name = request_class.DESCRIPTOR.full_name
    parse = request_class.FromString

    def deserialize(data: bytes) -> Any:
        try:
            return parse(data)
        except DecodeError as exc:
            return MalformedRequest(f"Failed to parse the request as {name}: {exc}")

    return deserialize


def _refusing_malformed(behavior: Callable[..., Any]) -> Callable[..., Any]:
    async def handle(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if type(request) is MalformedRequest:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)
        return await behavior(request, context)

    return handle


def _method_handler(servicer: Any, method: Any, guard: Any = None) -> grpc.RpcMethodHandler:
    if method.client_streaming:
        raise ValueError(f"{method.full_name}: client-streaming methods are not supported")
    request_class = message_factory.GetMessageClass(method.input_type)
    response_class = message_factory.GetMessageClass(method.output_type)
    behavior = getattr(servicer, method.name)
    deserializer = request_class.FromString
    if inspect.iscoroutinefunction(behavior):
        behavior, deserializer = _refusing_malformed(behavior), tolerant_deserializer(request_class)
    if guard is not None and not method.server_streaming:
        from pyserving.api.grpc._access import guarded

        behavior = guarded(behavior, guard, method.containing_service.full_name, method.name) or behavior
    make = grpc.unary_stream_rpc_method_handler if method.server_streaming else grpc.unary_unary_rpc_method_handler
    return make(behavior, request_deserializer=deserializer, response_serializer=response_class.SerializeToString)


def add_service(server: grpc.aio.Server, servicer: Any, service: ServiceDescriptor, guard: Any = None) -> None:
    """Register every method of `service` on `server`, served by `servicer`'s method of the
    same name, as the generated `add_*Servicer_to_server` does. With `guard` (an
    `auth.Guard`), each unary method checks credentials and scope first (`_access.py`)."""
    handlers = {method.name: _method_handler(servicer, method, guard) for method in service.methods}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, handlers),))
    server.add_registered_method_handlers(service.full_name, handlers)
