"""TF's profiler service messages, which no pip package ships as a `_pb2` module, built at
runtime in a private `DescriptorPool` (as `config_protos` does for TF Serving's configs).

`tensorflow.ProfilerService` (tsl/profiler/protobuf/profiler_service.proto) with the
methods TF's own server answers: Profile, Terminate, Monitor. Only the fields pyserving
reads or writes are declared, with TF's names and numbers; a request's other fields are
kept as unknown fields and ignored. `ProfileOptions` is cut down the same way
(tsl/profiler/protobuf/profiler_options.proto).

`XSpaceLines` reads just enough of a serialized `tensorflow.profiler.XSpace` (planes ->
lines -> events) to tell whether a trace is empty: TF's own `XSpace` class refuses some
traces TF writes (non-UTF-8 bytes in string fields), so its strings are not parsed here.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import ServiceDescriptor

__all__ = [
    "ProfileRequest", "ProfileResponse", "TerminateRequest", "TerminateResponse", "MonitorRequest",
    "MonitorResponse", "XSpaceLines", "PROFILER_SERVICE",
]

_F = descriptor_pb2.FieldDescriptorProto
_POOL = descriptor_pool.DescriptorPool()


def _field(name: str, number: int, ftype: int, type_name: str = "", repeated: bool = False) -> Any:
    label = _F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL
    return _F(name=name, number=number, type=ftype, label=label, type_name=type_name or None)


def _file(name: str, package: str, messages: dict[str, list[Any]],
          services: dict[str, list[tuple[str, str, str]]] | None = None) -> None:
    fdp = descriptor_pb2.FileDescriptorProto(name=name, package=package, syntax="proto3")
    for message_name, fields in messages.items():
        fdp.message_type.add(name=message_name, field=fields)
    for service_name, methods in (services or {}).items():
        service = fdp.service.add(name=service_name)
        for method, request, response in methods:
            service.method.add(name=method, input_type=request, output_type=response)
    _POOL.AddSerializedFile(fdp.SerializeToString())


_file(
    "tensorflow/tsl/profiler/protobuf/profiler_service.proto",
    "tensorflow",
    {
        "ProfileOptions": [
            _field("version", 5, _F.TYPE_UINT32),
            _field("duration_ms", 9, _F.TYPE_UINT64),
        ],
        "ProfileRequest": [
            _field("duration_ms", 1, _F.TYPE_UINT64),
            _field("opts", 4, _F.TYPE_MESSAGE, ".tensorflow.ProfileOptions"),
            _field("repository_root", 5, _F.TYPE_STRING),
            _field("session_id", 6, _F.TYPE_STRING),
            _field("host_name", 7, _F.TYPE_STRING),
        ],
        "ProfileResponse": [_field("empty_trace", 7, _F.TYPE_BOOL)],
        "TerminateRequest": [_field("session_id", 1, _F.TYPE_STRING)],
        "TerminateResponse": [],
        "MonitorRequest": [_field("duration_ms", 1, _F.TYPE_UINT64)],
        "MonitorResponse": [_field("data", 1, _F.TYPE_STRING)],
    },
    {
        "ProfilerService": [
            ("Profile", ".tensorflow.ProfileRequest", ".tensorflow.ProfileResponse"),
            ("Terminate", ".tensorflow.TerminateRequest", ".tensorflow.TerminateResponse"),
            ("Monitor", ".tensorflow.MonitorRequest", ".tensorflow.MonitorResponse"),
        ]
    },
)

_file(
    "pyserving/xspace_lines.proto",
    "pyserving",
    {
        "XLineEvents": [_field("events", 4, _F.TYPE_BYTES, repeated=True)],
        "XPlaneLines": [_field("lines", 3, _F.TYPE_MESSAGE, ".pyserving.XLineEvents", repeated=True)],
        "XSpaceLines": [_field("planes", 1, _F.TYPE_MESSAGE, ".pyserving.XPlaneLines", repeated=True)],
    },
)


def _message_class(full_name: str) -> Any:
    return message_factory.GetMessageClass(_POOL.FindMessageTypeByName(full_name))


PROFILER_SERVICE: ServiceDescriptor = _POOL.FindServiceByName("tensorflow.ProfilerService")
ProfileRequest: Any = _message_class("tensorflow.ProfileRequest")
ProfileResponse: Any = _message_class("tensorflow.ProfileResponse")
TerminateRequest: Any = _message_class("tensorflow.TerminateRequest")
TerminateResponse: Any = _message_class("tensorflow.TerminateResponse")
MonitorRequest: Any = _message_class("tensorflow.MonitorRequest")
MonitorResponse: Any = _message_class("tensorflow.MonitorResponse")
XSpaceLines: Any = _message_class("pyserving.XSpaceLines")
