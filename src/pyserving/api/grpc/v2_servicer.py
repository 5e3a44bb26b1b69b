"""`inference.GRPCInferenceService` (the Open Inference Protocol, KServe V2) over grpc.aio,
on the same port as TF Serving's services.

Thin like `servicers.py`, and wrapped by the same `rpc` (admission, metrics, error mapping):
ModelInfer decodes the request's tensors (`raw_input_contents`, or each input's typed
`contents`) against the signature on the service's worker thread, runs the V1 predict call,
and answers every output in `raw_output_contents` (as Triton does; the spec allows either,
and raw bytes cost no per-element work). Version strings are digits or a TF Serving version
label; `parameters["signature_name"]` picks a signature other than `serving_default`.

Health: ServerLive is true while the process answers (a drain included), ServerReady follows
the server's readiness (`/readyz`), ModelReady is true when the version would be served now;
an unknown model is not ready (Triton's answer) rather than an error.
"""

from __future__ import annotations

from typing import Any, Callable

import grpc
import numpy as np

from pyserving import __version__
from pyserving.api import open_inference as oip
from pyserving.api.grpc.servicers import deadline_of, rpc
from pyserving.errors import Code, ServingError
from pyserving.platforms.base import Signature
from pyserving.protos import inference_protos as pb
from pyserving.server.prediction_service import SMALL_REQUEST_BYTES, ModelSpec, PredictionService, PredictResult

__all__ = ["InferenceServicer", "SERVER_NAME"]

SERVER_NAME = "pyserving"

# datatype -> (InferTensorContents field, the numpy dtype its values arrive as)
_CONTENTS: dict[str, tuple[str, Any]] = {
    "BOOL": ("bool_contents", np.bool_),
    "INT8": ("int_contents", np.int32),
    "INT16": ("int_contents", np.int32),
    "INT32": ("int_contents", np.int32),
    "INT64": ("int64_contents", np.int64),
    "UINT8": ("uint_contents", np.uint32),
    "UINT16": ("uint_contents", np.uint32),
    "UINT32": ("uint_contents", np.uint32),
    "UINT64": ("uint64_contents", np.uint64),
    "FP32": ("fp32_contents", np.float32),
    "FP64": ("fp64_contents", np.float64),
    "BYTES": ("bytes_contents", None),
}


class InferenceServicer:
    """`readiness()` is the server's (ready, reason), as `/readyz` reports it."""

    def __init__(self, service: PredictionService, readiness: Callable[[], tuple[bool, str]]) -> None:
        self._service = service
        self._readiness = readiness

    async def ServerLive(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return pb.ServerReadyResponse(ready=self._readiness()[0])

    async def ServerMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return pb.ServerMetadataResponse(name=SERVER_NAME, version=__version__, extensions=[oip.BINARY_EXTENSION])

    @rpc
    async def ModelReady(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        version, label = oip.parse_version(request.version)
        try:
            ready = self._service.is_available(request.name, version, label)
        except ServingError as err:
            if err.code != Code.NOT_FOUND:
                raise
            ready = False
        return pb.ModelReadyResponse(ready=ready)

    @rpc
    async def ModelMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        version, label = oip.parse_version(request.version)
        described = await self._service.describe(ModelSpec(request.name, version, label),
                                                 deadline=deadline_of(context))
        response = pb.ModelMetadataResponse(
            name=request.name,
            versions=[str(v) for v in self._service.available_versions(request.name)],
            platform=described.platform,
        )
        sig = described.signature
        for target, specs in ((response.inputs, sig.inputs), (response.outputs, sig.outputs)):
            for tensor in oip.tensor_metadata(specs):
                target.add(**tensor)
        response.properties["signature_name"] = sig.name
        response.properties["signatures"] = ",".join(described.signature_names)
        return response

    @rpc
    async def ModelInfer(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        name = request.model_name
        version, label = oip.parse_version(request.model_version)
        signature_name = _string_parameter(request.parameters, "signature_name")
        outputs = [o.name for o in request.outputs]
        raw = request.raw_input_contents
        if raw and len(raw) != len(request.inputs):
            raise oip.invalid(f"The request has {len(raw)} raw_input_contents for {len(request.inputs)} inputs; "
                              "with raw contents every input has one, in input order")
        claim = self._service.budget.claim()

        def decode(signature: Signature) -> dict[str, Any]:
            inputs = request.inputs
            oip.check_request(name, signature, ((i.name, i.datatype) for i in inputs), outputs)
            decoded: dict[str, Any] = {}
            if raw:
                claim.add(sum(len(r) for r in raw), "The request's input tensors")
                for tensor, data in zip(inputs, raw):
                    if tensor.HasField("contents"):
                        raise oip.invalid(f"Input '{tensor.name}' has contents, but the request has "
                                          "raw_input_contents")
                    decoded[tensor.name] = oip.from_raw(tensor.name, tensor.datatype, list(tensor.shape), data)
                return decoded
            for tensor in inputs:
                array = _from_contents(tensor)
                claim.add(array.nbytes, "The request's input tensors")
                decoded[tensor.name] = array
            return decoded

        request_id = request.id

        def encode(result: PredictResult) -> Any:
            response = pb.ModelInferResponse(model_name=result.name, model_version=str(result.version),
                                             id=request_id)
            names = outputs or [n for n in result.signature.outputs if n in result.outputs]
            for output in names:
                array = result.outputs[output]
                response.outputs.add(name=output, datatype=oip.datatype_of(array.dtype), shape=array.shape)
                response.raw_output_contents.append(oip.to_raw(array))
            return response

        return await self._service.predict(
            ModelSpec(name, version, label, signature_name),
            decode,
            output_filter=outputs,
            deadline=deadline_of(context),
            api="grpc",
            encode=encode,
            small=request.ByteSize() <= SMALL_REQUEST_BYTES,  # batched fast path
            claim=claim,
        )


def _string_parameter(parameters: Any, key: str) -> str:
    if key not in parameters:
        return ""
    value = parameters[key]
    if value.WhichOneof("parameter_choice") != "string_param":
        raise oip.invalid(f"The request parameter '{key}' must be a string_param")
    return str(value.string_param)


def _from_contents(tensor: Any) -> np.ndarray:
    """An input from its typed `contents` (FP16 and BF16 have none: raw only)."""
    shape = list(tensor.shape)
    if tensor.datatype not in oip.DATATYPES:
        oip.element_count(tensor.name, shape)  # the shape's error first, as from_raw gives it
        raise oip.invalid(f"Input '{tensor.name}' has an invalid datatype {tensor.datatype!r}; one of "
                          + ", ".join(oip.DATATYPES) + " is expected")
    kind = _CONTENTS.get(tensor.datatype)
    if kind is None:
        raise oip.invalid(f"Input '{tensor.name}' of datatype {tensor.datatype} must be sent in raw_input_contents")
    field, dtype = kind
    values = getattr(tensor.contents, field)
    if dtype is None:
        return oip.from_values(tensor.name, tensor.datatype, shape, list(values))
    return oip.from_values(tensor.name, tensor.datatype, shape, np.array(values, dtype=dtype))
