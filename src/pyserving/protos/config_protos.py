"""TF Serving config messages that tensorflow-serving-api does not ship, built at runtime.

`tensorflow_serving/config/ssl_config.proto`, `config/monitoring_config.proto` and
`servables/tensorflow/session_bundle_config.proto` (for `BatchingParameters`) have no
generated `_pb2` module in the pip package. Instead of vendoring .proto files, this module
describes the messages with `descriptor_pb2.FileDescriptorProto` (same file names, package,
message names, field names, numbers and types as TF Serving's protos) and builds classes
with `message_factory`, so `text_format.Parse` accepts exactly the files TF Serving does.

They live in a private `DescriptorPool` (which also holds `google/protobuf/wrappers.proto`)
so that a real generated module imported later can never clash with them.

Only the messages the server reads are defined: `SSLConfig`, `MonitoringConfig`,
`PrometheusConfig` and `BatchingParameters`.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format, wrappers_pb2

__all__ = [
    "SSLConfig",
    "MonitoringConfig",
    "PrometheusConfig",
    "BatchingParameters",
    "parse_text",
    "POOL",
]

_F = descriptor_pb2.FieldDescriptorProto

POOL = descriptor_pool.DescriptorPool()
POOL.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)


def _field(name: str, number: int, ftype: int, type_name: str = "", repeated: bool = False) -> Any:
    field = _F(
        name=name,
        number=number,
        type=ftype,
        label=_F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL,
        json_name=name.split("_")[0] + "".join(p.title() for p in name.split("_")[1:]),
    )
    if type_name:
        field.type_name = type_name
    return field


def _file(name: str, messages: dict[str, list[Any]], deps: tuple[str, ...] = ()) -> None:
    fdp = descriptor_pb2.FileDescriptorProto(
        name=name, package="tensorflow.serving", syntax="proto3", dependency=list(deps)
    )
    for message_name, fields in messages.items():
        fdp.message_type.add(name=message_name, field=fields)
    POOL.AddSerializedFile(fdp.SerializeToString())


_INT64 = ".google.protobuf.Int64Value"
_STRING = ".google.protobuf.StringValue"
_BOOL = ".google.protobuf.BoolValue"

# tensorflow_serving/config/ssl_config.proto
_file(
    "tensorflow_serving/config/ssl_config.proto",
    {
        "SSLConfig": [
            _field("server_key", 1, _F.TYPE_STRING),
            _field("server_cert", 2, _F.TYPE_STRING),
            _field("custom_ca", 3, _F.TYPE_STRING),
            _field("client_verify", 4, _F.TYPE_BOOL),
        ]
    },
)

# tensorflow_serving/config/monitoring_config.proto
_file(
    "tensorflow_serving/config/monitoring_config.proto",
    {
        "PrometheusConfig": [
            _field("enable", 1, _F.TYPE_BOOL),
            _field("path", 2, _F.TYPE_STRING),
        ],
        "MonitoringConfig": [
            _field("prometheus_config", 1, _F.TYPE_MESSAGE, ".tensorflow.serving.PrometheusConfig"),
        ],
    },
)

# tensorflow_serving/servables/tensorflow/session_bundle_config.proto (BatchingParameters
# only; the file's other messages are not read by pyserving).
_file(
    "tensorflow_serving/servables/tensorflow/session_bundle_config.proto",
    {
        "BatchingParameters": [
            _field("max_batch_size", 1, _F.TYPE_MESSAGE, _INT64),
            _field("batch_timeout_micros", 2, _F.TYPE_MESSAGE, _INT64),
            _field("max_enqueued_batches", 3, _F.TYPE_MESSAGE, _INT64),
            _field("num_batch_threads", 4, _F.TYPE_MESSAGE, _INT64),
            _field("thread_pool_name", 5, _F.TYPE_MESSAGE, _STRING),
            _field("allowed_batch_sizes", 6, _F.TYPE_INT64, repeated=True),
            _field("pad_variable_length_inputs", 7, _F.TYPE_BOOL),
            _field("enable_large_batch_splitting", 8, _F.TYPE_MESSAGE, _BOOL),
            _field("max_execution_batch_size", 9, _F.TYPE_MESSAGE, _INT64),
        ]
    },
    deps=("google/protobuf/wrappers.proto",),
)


def _message_class(full_name: str) -> Any:
    return message_factory.GetMessageClass(POOL.FindMessageTypeByName(full_name))


SSLConfig: Any = _message_class("tensorflow.serving.SSLConfig")
PrometheusConfig: Any = _message_class("tensorflow.serving.PrometheusConfig")
MonitoringConfig: Any = _message_class("tensorflow.serving.MonitoringConfig")
BatchingParameters: Any = _message_class("tensorflow.serving.BatchingParameters")


def parse_text(message_class: Any, text: str) -> Any:
    """Parse a text-format message; raises `text_format.ParseError` on bad input."""
    message = message_class()
    text_format.Parse(text, message)
    return message
