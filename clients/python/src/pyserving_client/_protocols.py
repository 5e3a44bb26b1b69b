"""What each call sends and how its answer is read, for gRPC and REST, without any I/O.

Every operation is a generator: it yields the `Call`s it needs (a metadata lookup first,
when the signature is not known yet) and receives each answer, or the `ServingError` it
raised, thrown back into it. `Client` and `AsyncClient` drive the same generators, one
with blocking transports and one with asyncio ones, so each operation is written once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generator, Mapping, Sequence
from urllib.parse import quote

import numpy as np
from google.protobuf import json_format, text_format

from . import _json, _protos, _tensor, _types
from ._types import ModelMetadata, SignatureInfo
from .errors import InvalidArgumentError, NotFoundError, PermissionDeniedError, UnimplementedError, error_for

DEFAULT_SIGNATURE = "serving_default"


@dataclass(frozen=True)
class Call:
    """One request. gRPC: `method` names an entry of `_protos.METHODS`, `request` is the
    message. REST: `method` is the HTTP verb, `path` is appended to the base URL and
    `request` is the JSON body (None for GET)."""

    method: str
    request: Any
    idempotent: bool = True
    path: str = ""


@dataclass(frozen=True)
class Spec:
    model: str
    version: int | None = None
    label: str | None = None
    signature: str | None = None

    def __post_init__(self) -> None:
        if self.version is not None and self.label is not None:
            raise ValueError("give a version or a label, not both")


Operation = Generator[Call, Any, Any]
Inputs = Any  # one array-like, or a mapping of input name -> array-like
Example = Mapping[str, Any]


# --------------------------------------------------------------------------- inputs

def _tf_default(value: Any) -> np.ndarray:
    """Python values as tf.make_tensor_proto types them: floats as float32, ints as
    int32 when they fit."""
    array = np.asarray(value)
    if array.dtype == np.float64:
        return array.astype(np.float32)
    if array.dtype == np.int64 and array.size and np.array_equal(array.astype(np.int32), array):
        return array.astype(np.int32)
    return array


def _convert(value: Any, dtype: np.dtype | None) -> np.ndarray:
    if isinstance(value, np.ndarray):
        if dtype is not None and value.dtype != dtype and dtype.kind != "O" and np.can_cast(value.dtype, dtype, "same_kind"):
            return value.astype(dtype)
        return value
    if dtype is None:
        return _tf_default(value)
    if dtype.kind == "O":
        return np.asarray(value, dtype=object)
    return np.asarray(value, dtype=dtype)


def name_inputs(inputs: Inputs, signature: SignatureInfo | None) -> dict[str, np.ndarray]:
    """Inputs by name, each converted to its signature's dtype when that keeps its kind
    (float64 -> float32, int64 -> int32; lists and scalars always)."""
    if isinstance(inputs, Mapping):
        infos = signature.inputs if signature is not None else {}
        return {name: _convert(v, infos[name].dtype if name in infos else None) for name, v in inputs.items()}
    if signature is None:
        raise InvalidArgumentError("name the inputs ({'name': array}): the signature is not known")
    if len(signature.inputs) != 1:
        raise InvalidArgumentError(f"signature {signature.name!r} has inputs {sorted(signature.inputs)}: "
                                   f"name them ({{'name': array}})")
    (name, info), = signature.inputs.items()
    return {name: _convert(inputs, info.dtype)}


def _feature(example: Any, name: str, value: Any) -> None:
    array = np.asarray(value)
    flat = array.reshape(-1)
    feature = example.features.feature[name]
    if array.dtype.kind in "OSU":
        feature.bytes_list.value.extend([v.encode() if isinstance(v, str) else bytes(v) for v in flat.tolist()])
    elif array.dtype.kind == "f":
        feature.float_list.value.extend(flat.tolist())
    elif array.dtype.kind in "iub":
        feature.int64_list.value.extend(flat.astype(np.int64).tolist())
    else:
        raise InvalidArgumentError(f"feature {name!r}: no tf.train.Feature for {array.dtype}")


def _example(features: Example) -> Any:
    example = _protos.Example()
    for name, value in features.items():
        _feature(example, name, value)
    return example


def _fill_input(input_proto: Any, examples: Sequence[Example], context: Example | None) -> None:
    if context is None:
        input_proto.example_list.examples.extend([_example(e) for e in examples])
    else:
        target = input_proto.example_list_with_context
        target.context.CopyFrom(_example(context))
        target.examples.extend([_example(e) for e in examples])


# --------------------------------------------------------------------------- gRPC

class GrpcProtocol:
    def _spec(self, proto: Any, spec: Spec, with_signature: bool = True) -> None:
        proto.name = spec.model
        if spec.version is not None:
            proto.version.value = spec.version
        if spec.label is not None:
            proto.version_label = spec.label
        if with_signature and spec.signature:
            proto.signature_name = spec.signature

    def metadata(self, spec: Spec) -> Operation:
        request = _protos.GetModelMetadataRequest()
        self._spec(request.model_spec, spec, False)
        request.metadata_field.append("signature_def")
        return _types.metadata_from_proto((yield Call("metadata", request)))

    def status(self, spec: Spec) -> Operation:
        request = _protos.GetModelStatusRequest()
        self._spec(request.model_spec, spec, False)
        return _types.status_from_proto((yield Call("status", request)))

    def predict(self, spec: Spec, inputs: Mapping[str, np.ndarray], signature: SignatureInfo | None,
                output_filter: Sequence[str] | None) -> Operation:
        request = _protos.PredictRequest()
        self._spec(request.model_spec, spec)
        for name, array in inputs.items():
            _tensor.to_tensor_proto(array, request.inputs[name])
        if output_filter:
            request.output_filter.extend(output_filter)
        reply = yield Call("predict", request)
        return {name: _tensor.to_ndarray(tensor) for name, tensor in reply.outputs.items()}

    def classify(self, spec: Spec, examples: Sequence[Example], context: Example | None) -> Operation:
        request = _protos.ClassificationRequest()
        self._spec(request.model_spec, spec)
        _fill_input(request.input, examples, context)
        reply = yield Call("classify", request)
        return [[(c.label, c.score) for c in cls.classes] for cls in reply.result.classifications]

    def regress(self, spec: Spec, examples: Sequence[Example], context: Example | None) -> Operation:
        request = _protos.RegressionRequest()
        self._spec(request.model_spec, spec)
        _fill_input(request.input, examples, context)
        reply = yield Call("regress", request)
        return np.array([r.value for r in reply.result.regressions], dtype=np.float32)

    def reload_config(self, config: Any) -> Operation:
        request = _protos.ReloadConfigRequest()
        if isinstance(config, (str, bytes)):
            text_format.Parse(config, request.config, descriptor_pool=_protos._POOL)
        elif isinstance(config, Mapping):
            json_format.ParseDict(config, request.config)
        else:
            request.config.ParseFromString(config.SerializeToString())
        reply = yield Call("reload_config", request, idempotent=False)
        if reply.status.error_code:
            raise error_for(reply.status.error_code, reply.status.error_message)
        return None


# --------------------------------------------------------------------------- REST

class RestProtocol:
    def _path(self, spec: Spec) -> str:
        path = "/v1/models/" + quote(spec.model, safe="")
        if spec.version is not None:
            path += f"/versions/{int(spec.version)}"
        elif spec.label is not None:
            path += "/labels/" + quote(spec.label, safe="")
        return path

    def _body(self, spec: Spec, body: dict[str, Any]) -> dict[str, Any]:
        if spec.signature:
            body["signature_name"] = spec.signature
        return body

    def metadata(self, spec: Spec) -> Operation:
        return _types.metadata_from_json((yield Call("GET", None, path=self._path(spec) + "/metadata")))

    def status(self, spec: Spec) -> Operation:
        return _types.status_from_json((yield Call("GET", None, path=self._path(spec))))

    def predict(self, spec: Spec, inputs: Mapping[str, np.ndarray], signature: SignatureInfo | None,
                output_filter: Sequence[str] | None) -> Operation:
        encoded = {name: _json.encode_tensor(a) for name, a in inputs.items()}
        reply = yield Call("POST", self._body(spec, {"inputs": encoded}), path=self._path(spec) + ":predict")
        outputs = _json.decode_outputs(reply, signature.outputs if signature is not None else {"outputs": None})
        if output_filter:  # TF Serving's REST API has no output filter: applied here
            outputs = {name: outputs[name] for name in output_filter if name in outputs}
        return outputs

    def _examples(self, spec: Spec, examples: Sequence[Example], context: Example | None) -> dict[str, Any]:
        body: dict[str, Any] = {"examples": [{k: _json.encode_feature(v) for k, v in e.items()} for e in examples]}
        if context is not None:
            body["context"] = {k: _json.encode_feature(v) for k, v in context.items()}
        return self._body(spec, body)

    def classify(self, spec: Spec, examples: Sequence[Example], context: Example | None) -> Operation:
        reply = yield Call("POST", self._examples(spec, examples, context), path=self._path(spec) + ":classify")
        return [[(str(label), float(score)) for label, score in row] for row in reply["results"]]

    def regress(self, spec: Spec, examples: Sequence[Example], context: Example | None) -> Operation:
        reply = yield Call("POST", self._examples(spec, examples, context), path=self._path(spec) + ":regress")
        return np.array(reply["results"], dtype=np.float32).reshape(-1)

    def reload_config(self, config: Any) -> Operation:
        raise UnimplementedError("reload_config needs the gRPC port: TF Serving's REST API has no config reload")
        yield  # a generator like the others


# --------------------------------------------------------------------------- operations

class Session:
    """The operations of one client: a protocol plus the signatures learned so far."""

    def __init__(self, protocol: GrpcProtocol | RestProtocol) -> None:
        self.protocol = protocol
        self.rest = isinstance(protocol, RestProtocol)
        self._metadata: dict[tuple[str, int | None, str | None], ModelMetadata | None] = {}

    def _signature(self, spec: Spec) -> Generator[Call, Any, SignatureInfo | None]:
        key = (spec.model, spec.version, spec.label)
        if key not in self._metadata:
            try:
                self._metadata[key] = yield from self.protocol.metadata(Spec(spec.model, spec.version, spec.label))
            except PermissionDeniedError:
                self._metadata[key] = None  # allowed to infer, not to read: go on without types
        metadata = self._metadata[key]
        if metadata is None:
            return None
        return metadata.signatures.get(spec.signature or DEFAULT_SIGNATURE)

    def forget(self, spec: Spec) -> None:
        self._metadata.pop((spec.model, spec.version, spec.label), None)

    def metadata(self, spec: Spec) -> Operation:
        metadata = yield from self.protocol.metadata(spec)
        self._metadata[(spec.model, spec.version, spec.label)] = metadata
        return metadata

    def status(self, spec: Spec) -> Operation:
        return (yield from self.protocol.status(spec))

    def predict(self, spec: Spec, inputs: Inputs, output_filter: Sequence[str] | None) -> Operation:
        # gRPC carries dtypes and names both ways: the signature is needed only to name a
        # single unnamed input or to type lists. REST needs it to type the answer.
        needs_signature = self.rest or not isinstance(inputs, Mapping) or not all(
            isinstance(v, np.ndarray) for v in inputs.values())
        signature = (yield from self._signature(spec)) if needs_signature else None
        named = name_inputs(inputs, signature)
        try:
            return (yield from self.protocol.predict(spec, named, signature, output_filter))
        except (InvalidArgumentError, NotFoundError):
            self.forget(spec)  # the model may have changed under the cached signature
            raise

    def classify(self, spec: Spec, examples: Sequence[Example], context: Example | None) -> Operation:
        return (yield from self.protocol.classify(spec, examples, context))

    def regress(self, spec: Spec, examples: Sequence[Example], context: Example | None) -> Operation:
        return (yield from self.protocol.regress(spec, examples, context))

    def reload_config(self, config: Any) -> Operation:
        result = yield from self.protocol.reload_config(config)
        self._metadata.clear()
        return result
