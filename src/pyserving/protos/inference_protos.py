"""The Open Inference Protocol's gRPC messages and service (`inference.GRPCInferenceService`,
KServe's `grpc_predict_v2.proto`), built at runtime in a private `DescriptorPool`, as
`config_protos` and `profiler_protos` build theirs.

Package `inference`, the service's six methods (ServerLive, ServerReady, ModelReady,
ServerMetadata, ModelMetadata, ModelInfer) and every message they use, with the spec's
message, field names, numbers and types (maps as map entries, `InferParameter`'s oneof), so
a client compiled from the spec's .proto (tritonclient, KServe's) talks to it unchanged.
Triton's further methods (repository, statistics, shared memory...) are not declared: a call
to one answers UNIMPLEMENTED.

The pool is private because clients ship the same full names in their own generated modules
(tritonclient's `grpc_service.proto`, KServe's `grpc_predict_v2.proto`), which a process may
import next to these.
"""

from __future__ import annotations

from typing import Any, Sequence

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import ServiceDescriptor

__all__ = [
    "INFERENCE_SERVICE",
    "ServerLiveRequest", "ServerLiveResponse", "ServerReadyRequest", "ServerReadyResponse",
    "ModelReadyRequest", "ModelReadyResponse", "ServerMetadataRequest", "ServerMetadataResponse",
    "ModelMetadataRequest", "ModelMetadataResponse", "ModelInferRequest", "ModelInferResponse",
    "InferParameter", "InferTensorContents",
]

_F = descriptor_pb2.FieldDescriptorProto
_POOL = descriptor_pool.DescriptorPool()
_PACKAGE = "inference"


def _field(name: str, number: int, ftype: int, type_name: str = "", repeated: bool = False,
           oneof: int | None = None) -> Any:
    label = _F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL
    field = _F(name=name, number=number, type=ftype, label=label, type_name=type_name or None,
               json_name=name.split("_")[0] + "".join(p.title() for p in name.split("_")[1:]))
    if oneof is not None:
        field.oneof_index = oneof
    return field


def _message(name: str, fields: list[Any], nested: Sequence[Any] = (), oneofs: tuple[str, ...] = ()) -> Any:
    message = descriptor_pb2.DescriptorProto(name=name, field=fields, nested_type=list(nested))
    for oneof in oneofs:
        message.oneof_decl.add(name=oneof)
    return message


def _map(owner: str, field_name: str, number: int, value_type: int, value_type_name: str = "") -> tuple[Any, Any]:
    """(field, entry message) for `map<string, V> field_name = number` declared in `owner`."""
    entry_name = "".join(p.title() for p in field_name.split("_")) + "Entry"
    entry = _message(entry_name, [_field("key", 1, _F.TYPE_STRING), _field("value", 2, value_type, value_type_name)])
    entry.options.map_entry = True
    return _field(field_name, number, _F.TYPE_MESSAGE, f".{_PACKAGE}.{owner}.{entry_name}", repeated=True), entry


_PARAMETER = f".{_PACKAGE}.InferParameter"
_CONTENTS = f".{_PACKAGE}.InferTensorContents"


def _parameters(owner: str, number: int) -> tuple[Any, Any]:
    return _map(owner, "parameters", number, _F.TYPE_MESSAGE, _PARAMETER)


def _tensor(owner: str, name: str, *, with_contents: bool = True) -> Any:
    """An input or output tensor message nested in `owner`."""
    full = f"{owner}.{name}"
    params, entry = _parameters(full, 4)
    fields = [_field("name", 1, _F.TYPE_STRING), _field("datatype", 2, _F.TYPE_STRING),
              _field("shape", 3, _F.TYPE_INT64, repeated=True), params]
    if with_contents:
        fields.append(_field("contents", 5, _F.TYPE_MESSAGE, _CONTENTS))
    return _message(name, fields, [entry])


def _build() -> None:
    fdp = descriptor_pb2.FileDescriptorProto(name="pyserving/open_inference_grpc.proto", package=_PACKAGE,
                                             syntax="proto3")
    add = fdp.message_type.append
    add(_message("ServerLiveRequest", []))
    add(_message("ServerLiveResponse", [_field("live", 1, _F.TYPE_BOOL)]))
    add(_message("ServerReadyRequest", []))
    add(_message("ServerReadyResponse", [_field("ready", 1, _F.TYPE_BOOL)]))
    add(_message("ModelReadyRequest", [_field("name", 1, _F.TYPE_STRING), _field("version", 2, _F.TYPE_STRING)]))
    add(_message("ModelReadyResponse", [_field("ready", 1, _F.TYPE_BOOL)]))
    add(_message("ServerMetadataRequest", []))
    add(_message("ServerMetadataResponse", [
        _field("name", 1, _F.TYPE_STRING), _field("version", 2, _F.TYPE_STRING),
        _field("extensions", 3, _F.TYPE_STRING, repeated=True)]))
    add(_message("ModelMetadataRequest", [_field("name", 1, _F.TYPE_STRING), _field("version", 2, _F.TYPE_STRING)]))
    tensor_metadata = _message("TensorMetadata", [
        _field("name", 1, _F.TYPE_STRING), _field("datatype", 2, _F.TYPE_STRING),
        _field("shape", 3, _F.TYPE_INT64, repeated=True)])
    properties, properties_entry = _map("ModelMetadataResponse", "properties", 6, _F.TYPE_STRING)
    metadata_tensor = f".{_PACKAGE}.ModelMetadataResponse.TensorMetadata"
    add(_message("ModelMetadataResponse", [
        _field("name", 1, _F.TYPE_STRING), _field("versions", 2, _F.TYPE_STRING, repeated=True),
        _field("platform", 3, _F.TYPE_STRING),
        _field("inputs", 4, _F.TYPE_MESSAGE, metadata_tensor, repeated=True),
        _field("outputs", 5, _F.TYPE_MESSAGE, metadata_tensor, repeated=True),
        properties], [tensor_metadata, properties_entry]))

    request_params, request_params_entry = _parameters("ModelInferRequest", 4)
    requested_output = "InferRequestedOutputTensor"
    output_params, output_params_entry = _parameters(f"ModelInferRequest.{requested_output}", 2)
    add(_message("ModelInferRequest", [
        _field("model_name", 1, _F.TYPE_STRING), _field("model_version", 2, _F.TYPE_STRING),
        _field("id", 3, _F.TYPE_STRING), request_params,
        _field("inputs", 5, _F.TYPE_MESSAGE, f".{_PACKAGE}.ModelInferRequest.InferInputTensor", repeated=True),
        _field("outputs", 6, _F.TYPE_MESSAGE, f".{_PACKAGE}.ModelInferRequest.{requested_output}", repeated=True),
        _field("raw_input_contents", 7, _F.TYPE_BYTES, repeated=True)], [
        _tensor("ModelInferRequest", "InferInputTensor"),
        _message(requested_output, [_field("name", 1, _F.TYPE_STRING), output_params], [output_params_entry]),
        request_params_entry]))
    response_params, response_params_entry = _parameters("ModelInferResponse", 4)
    add(_message("ModelInferResponse", [
        _field("model_name", 1, _F.TYPE_STRING), _field("model_version", 2, _F.TYPE_STRING),
        _field("id", 3, _F.TYPE_STRING), response_params,
        _field("outputs", 5, _F.TYPE_MESSAGE, f".{_PACKAGE}.ModelInferResponse.InferOutputTensor", repeated=True),
        _field("raw_output_contents", 6, _F.TYPE_BYTES, repeated=True)], [
        _tensor("ModelInferResponse", "InferOutputTensor"), response_params_entry]))
    add(_message("InferParameter", [
        _field("bool_param", 1, _F.TYPE_BOOL, oneof=0), _field("int64_param", 2, _F.TYPE_INT64, oneof=0),
        _field("string_param", 3, _F.TYPE_STRING, oneof=0), _field("double_param", 4, _F.TYPE_DOUBLE, oneof=0),
        _field("uint64_param", 5, _F.TYPE_UINT64, oneof=0)], oneofs=("parameter_choice",)))
    add(_message("InferTensorContents", [
        _field("bool_contents", 1, _F.TYPE_BOOL, repeated=True),
        _field("int_contents", 2, _F.TYPE_INT32, repeated=True),
        _field("int64_contents", 3, _F.TYPE_INT64, repeated=True),
        _field("uint_contents", 4, _F.TYPE_UINT32, repeated=True),
        _field("uint64_contents", 5, _F.TYPE_UINT64, repeated=True),
        _field("fp32_contents", 6, _F.TYPE_FLOAT, repeated=True),
        _field("fp64_contents", 7, _F.TYPE_DOUBLE, repeated=True),
        _field("bytes_contents", 8, _F.TYPE_BYTES, repeated=True)]))
    service = fdp.service.add(name="GRPCInferenceService")
    for method in ("ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata", "ModelInfer"):
        service.method.add(name=method, input_type=f".{_PACKAGE}.{method}Request",
                           output_type=f".{_PACKAGE}.{method}Response")
    _POOL.AddSerializedFile(fdp.SerializeToString())


_build()


def _message_class(name: str) -> Any:
    return message_factory.GetMessageClass(_POOL.FindMessageTypeByName(f"{_PACKAGE}.{name}"))


INFERENCE_SERVICE: ServiceDescriptor = _POOL.FindServiceByName(f"{_PACKAGE}.GRPCInferenceService")
ServerLiveRequest: Any = _message_class("ServerLiveRequest")
ServerLiveResponse: Any = _message_class("ServerLiveResponse")
ServerReadyRequest: Any = _message_class("ServerReadyRequest")
ServerReadyResponse: Any = _message_class("ServerReadyResponse")
ModelReadyRequest: Any = _message_class("ModelReadyRequest")
ModelReadyResponse: Any = _message_class("ModelReadyResponse")
ServerMetadataRequest: Any = _message_class("ServerMetadataRequest")
ServerMetadataResponse: Any = _message_class("ServerMetadataResponse")
ModelMetadataRequest: Any = _message_class("ModelMetadataRequest")
ModelMetadataResponse: Any = _message_class("ModelMetadataResponse")
ModelInferRequest: Any = _message_class("ModelInferRequest")
ModelInferResponse: Any = _message_class("ModelInferResponse")
InferParameter: Any = _message_class("InferParameter")
InferTensorContents: Any = _message_class("InferTensorContents")
