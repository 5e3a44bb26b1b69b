"""What `metadata()` and `status()` return: plain frozen records with numpy dtypes, the
same whether the answer came over gRPC (protos) or REST (their JSON mapping)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
from google.protobuf import json_format

from . import _protos, _tensor
from .errors import Code

__all__ = ["TensorInfo", "SignatureInfo", "ModelMetadata", "ModelVersionStatus"]


@dataclass(frozen=True)
class TensorInfo:
    """One input or output of a signature.

    `dtype` is numpy's (object for strings, ml_dtypes' bfloat16 for DT_BFLOAT16), None for
    a dtype numpy has no name for; `shape` uses None for an unknown dimension and is
    None as a whole when even the rank is unknown."""

    name: str            # the graph tensor behind it, e.g. "x:0"
    dtype: np.dtype | None
    datatype: str        # TensorFlow's name, e.g. "DT_FLOAT"
    shape: tuple[int | None, ...] | None


@dataclass(frozen=True)
class SignatureInfo:
    name: str
    method_name: str
    inputs: Mapping[str, TensorInfo]
    outputs: Mapping[str, TensorInfo]


@dataclass(frozen=True)
class ModelMetadata:
    name: str
    version: int
    signatures: Mapping[str, SignatureInfo] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelVersionStatus:
    version: int
    state: str            # START, LOADING, AVAILABLE, UNLOADING or END
    error_code: str       # "OK" or a canonical code name
    error_message: str


_DATATYPE_NAMES = {v: k for k, v in _protos.DATA_TYPES.items()}


def _tensor_info(proto: Any) -> TensorInfo:
    shape = proto.tensor_shape
    dims = None if shape.unknown_rank else tuple(d.size if d.size >= 0 else None for d in shape.dim)
    return TensorInfo(proto.name, _tensor.dtype_of(proto.dtype), _DATATYPE_NAMES.get(proto.dtype, str(proto.dtype)), dims)


def _signatures(signature_map: Any) -> dict[str, SignatureInfo]:
    return {
        name: SignatureInfo(
            name, sig.method_name,
            {alias: _tensor_info(t) for alias, t in sorted(sig.inputs.items())},
            {alias: _tensor_info(t) for alias, t in sorted(sig.outputs.items())},
        )
        for name, sig in sorted(signature_map.signature_def.items())
    }


def metadata_from_proto(reply: Any) -> ModelMetadata:
    signature_map = _protos.SignatureDefMap()
    if "signature_def" in reply.metadata:
        reply.metadata["signature_def"].Unpack(signature_map)
    return ModelMetadata(reply.model_spec.name, reply.model_spec.version.value, _signatures(signature_map))


def metadata_from_json(body: Mapping[str, Any]) -> ModelMetadata:
    spec = body.get("model_spec", {})
    signature_map = _protos.SignatureDefMap()
    json_format.ParseDict(body.get("metadata", {}).get("signature_def", {}), signature_map,
                          ignore_unknown_fields=True)
    return ModelMetadata(spec.get("name", ""), int(spec.get("version") or 0), _signatures(signature_map))


def status_from_proto(reply: Any) -> list[ModelVersionStatus]:
    return [
        ModelVersionStatus(s.version, _protos.MODEL_VERSION_STATES.get(s.state, str(s.state)),
                           _error_code_name(s.status.error_code), s.status.error_message)
        for s in reply.model_version_status
    ]


def status_from_json(body: Mapping[str, Any]) -> list[ModelVersionStatus]:
    out = []
    for s in body.get("model_version_status", []):
        status = s.get("status", {})
        out.append(ModelVersionStatus(int(s.get("version", 0)), s.get("state", "UNKNOWN"),
                                      str(status.get("error_code", "OK")), status.get("error_message", "")))
    return out


def _error_code_name(code: int) -> str:
    try:
        return Code(code).name
    except ValueError:
        return str(code)
