"""numpy <-> TF Serving's REST JSON.

Requests use the columnar format (`"inputs"`): it carries any shape, a scalar as a bare
value and inputs of different batch sizes, which the row format (`"instances"`) cannot.
Strings go as `{"b64": ...}` when they are bytes (binary-safe) and as JSON strings when they
are `str`. JSON has no half, bfloat16 or complex numbers: TF Serving answers those with
UNIMPLEMENTED, so the client sends half and bfloat16 as numbers and lets the server decide,
and refuses complex numbers itself.

Answers are typed by the signature (`TensorInfo`): numbers become arrays of the output's
dtype, strings `bytes` (from `{"b64": ...}` or UTF-8), and an empty list takes the rank
the signature gives it.
"""

from __future__ import annotations

import base64
import json
from typing import Any, Mapping

import numpy as np

from ._types import TensorInfo
from .errors import InvalidArgumentError

__all__ = ["dumps", "loads", "encode_tensor", "decode_tensor", "encode_feature"]


def dumps(body: Any) -> bytes:
    # NaN and Infinity as TF Serving reads and writes them (bare tokens)
    return json.dumps(body, allow_nan=True, separators=(",", ":")).encode()


def loads(data: bytes) -> Any:
    return json.loads(data)


def _string(value: Any) -> Any:
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray, memoryview, np.bytes_)):
        return {"b64": base64.b64encode(bytes(value)).decode("ascii")}
    raise InvalidArgumentError(f"a string tensor holds bytes or str, not {type(value).__name__}")


def encode_tensor(array: np.ndarray) -> Any:
    kind = array.dtype.kind
    if kind in "OSU":
        if array.ndim == 0:
            return _string(array.item())
        return np.frompyfunc(_string, 1, 1)(array).tolist()
    if kind == "c":
        raise InvalidArgumentError("complex tensors cannot be sent as JSON; use gRPC")
    if kind in "biuf" and array.dtype.itemsize > 0 and array.dtype.type.__module__ == "numpy":
        return array.tolist()
    return array.astype(np.float32).tolist()  # half and bfloat16: numbers, for the server to judge


def _bytes(value: Any) -> bytes:
    if isinstance(value, dict) and "b64" in value:
        return base64.b64decode(value["b64"])
    if isinstance(value, str):
        return value.encode()
    raise ValueError(f"expected a string, got {type(value).__name__}")


def _empty_shape(info: TensorInfo | None, got: tuple[int, ...]) -> tuple[int, ...]:
    if info is None or info.shape is None or len(info.shape) <= len(got):
        return got
    return tuple(0 if d is None else d for d in info.shape)


def decode_tensor(value: Any, info: TensorInfo | None) -> np.ndarray:
    dtype = info.dtype if info is not None else None
    if dtype is not None and dtype.kind == "O":
        holder = np.array(value, dtype=object)
        if holder.ndim == 0:
            out = np.empty((), dtype=object)
            out[()] = _bytes(value)
            return out
        return np.frompyfunc(_bytes, 1, 1)(holder).astype(object)
    array = np.asarray(value, dtype=dtype) if dtype is not None else np.asarray(value)
    if array.size == 0:
        array = array.reshape(_empty_shape(info, array.shape))
    return array


def encode_feature(value: Any) -> Any:
    """A tf.train.Feature's value for the classify/regress `examples` JSON."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return [encode_feature(v) for v in value]
    if isinstance(value, (bytes, bytearray, str, np.bytes_)):
        return _string(value)
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        return value.item()
    return value


def decode_outputs(body: Mapping[str, Any], outputs: Mapping[str, TensorInfo | None]) -> dict[str, np.ndarray]:
    """`{"outputs": ...}` of a columnar predict: a bare value for one output, else a map."""
    value = body["outputs"]
    if isinstance(value, dict) and not (len(value) == 1 and "b64" in value and len(outputs) == 1):
        return {name: decode_tensor(v, outputs.get(name)) for name, v in value.items()}
    if len(outputs) != 1:
        raise ValueError("the server answered one unnamed output for a signature with several")
    (name, info), = outputs.items()
    return {name: decode_tensor(value, info)}
