"""TF Serving's messages and methods, built in a private descriptor pool.

`descriptors.binpb` holds TF Serving's API .proto files and TensorFlow's ones they import
(scripts/gen-descriptors makes it from tensorflow-serving-api). They are added to a
`DescriptorPool` of our own, never to protobuf's default pool: `import tensorflow`
registers `tensorflow/core/framework/tensor.proto` and the rest there, and a second
registration of the same file would break whichever import came second. With a private
pool the client and TensorFlow live in one process in either import order, and messages
still interoperate through their bytes (`SerializeToString` / `FromString`).

gRPC methods are called by path with these classes' (de)serializers, so no generated
`*_pb2_grpc` module is needed either.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_POOL = descriptor_pool.DescriptorPool()
for _file in descriptor_pb2.FileDescriptorSet.FromString(
    resources.files(__package__).joinpath("descriptors.binpb").read_bytes()
).file:
    _POOL.Add(_file)


def message_class(full_name: str) -> Any:
    return message_factory.GetMessageClass(_POOL.FindMessageTypeByName(full_name))


def enum_values(full_name: str) -> dict[str, int]:
    return {v.name: v.number for v in _POOL.FindEnumTypeByName(full_name).values}


_TF = "tensorflow."
_TFS = "tensorflow.serving."

TensorProto = message_class(_TF + "TensorProto")
TensorShapeProto = message_class(_TF + "TensorShapeProto")
Example = message_class(_TF + "Example")
Feature = message_class(_TF + "Feature")
DATA_TYPES = enum_values(_TF + "DataType")

PredictRequest = message_class(_TFS + "PredictRequest")
PredictResponse = message_class(_TFS + "PredictResponse")
ClassificationRequest = message_class(_TFS + "ClassificationRequest")
ClassificationResponse = message_class(_TFS + "ClassificationResponse")
RegressionRequest = message_class(_TFS + "RegressionRequest")
RegressionResponse = message_class(_TFS + "RegressionResponse")
GetModelMetadataRequest = message_class(_TFS + "GetModelMetadataRequest")
GetModelMetadataResponse = message_class(_TFS + "GetModelMetadataResponse")
SignatureDefMap = message_class(_TFS + "SignatureDefMap")
GetModelStatusRequest = message_class(_TFS + "GetModelStatusRequest")
GetModelStatusResponse = message_class(_TFS + "GetModelStatusResponse")
ReloadConfigRequest = message_class(_TFS + "ReloadConfigRequest")
ReloadConfigResponse = message_class(_TFS + "ReloadConfigResponse")
ModelServerConfig = message_class(_TFS + "ModelServerConfig")
MODEL_VERSION_STATES = {v: k for k, v in enum_values(_TFS + "ModelVersionStatus.State").items()}

_PREDICTION = "/tensorflow.serving.PredictionService/"
_MODEL = "/tensorflow.serving.ModelService/"

# method name -> (path, response class)
METHODS: dict[str, tuple[str, Any]] = {
    "predict": (_PREDICTION + "Predict", PredictResponse),
    "classify": (_PREDICTION + "Classify", ClassificationResponse),
    "regress": (_PREDICTION + "Regress", RegressionResponse),
    "metadata": (_PREDICTION + "GetModelMetadata", GetModelMetadataResponse),
    "status": (_MODEL + "GetModelStatus", GetModelStatusResponse),
    "reload_config": (_MODEL + "HandleReloadConfigRequest", ReloadConfigResponse),
}
