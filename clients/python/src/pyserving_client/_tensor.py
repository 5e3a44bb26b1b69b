"""numpy <-> `tensorflow.TensorProto`, with the rules of `tf.make_tensor_proto` and
`tf.make_ndarray`, so a request is the same bytes TensorFlow's helpers would have made.

Encoding: arrays of more than one element whose dtype has a fixed binary layout (but
uint16, which TensorFlow never packs) go as `tensor_content` (packed little-endian bytes); a scalar, a single element, or an empty
array, and every bool, complex, string and 4-bit tensor, go in the dtype's typed field.
float16 and bfloat16 travel as their uint16 bit patterns in `half_val`, float8 as one
byte each in `float8_val`, complex numbers as (real, imaginary) pairs.

Decoding reads `tensor_content` or the typed field, whichever the server wrote (TF Serving
writes typed fields unless `--enable_serialization_as_tensor_content`). Like TensorFlow, a
typed field shorter than the shape repeats its last value and an empty one gives zeros;
unlike it, a shape larger than `MAX_TENSOR_BYTES` is refused instead of allocated.
Strings decode to an object array of `bytes`.
"""

from __future__ import annotations

import math
import sys
from typing import Any

import numpy as np

from . import _protos

__all__ = ["to_tensor_proto", "to_ndarray", "dtype_of", "datatype_of", "MAX_TENSOR_BYTES"]

assert sys.byteorder == "little", "the tensor codec assumes a little-endian host"

MAX_TENSOR_BYTES = (1 << 31) - 1

_DT = _protos.DATA_TYPES

# DataType -> (numpy dtype, typed field, tensor_content allowed)
_KINDS: dict[int, tuple[np.dtype, str, bool]] = {
    _DT["DT_FLOAT"]: (np.dtype(np.float32), "float_val", True),
    _DT["DT_DOUBLE"]: (np.dtype(np.float64), "double_val", True),
    _DT["DT_HALF"]: (np.dtype(np.float16), "half_val", True),
    _DT["DT_INT8"]: (np.dtype(np.int8), "int_val", True),
    _DT["DT_INT16"]: (np.dtype(np.int16), "int_val", True),
    _DT["DT_INT32"]: (np.dtype(np.int32), "int_val", True),
    _DT["DT_INT64"]: (np.dtype(np.int64), "int64_val", True),
    _DT["DT_UINT8"]: (np.dtype(np.uint8), "int_val", True),
    _DT["DT_UINT16"]: (np.dtype(np.uint16), "int_val", False),  # as TensorFlow: never packed
    _DT["DT_UINT32"]: (np.dtype(np.uint32), "uint32_val", True),
    _DT["DT_UINT64"]: (np.dtype(np.uint64), "uint64_val", True),
    _DT["DT_BOOL"]: (np.dtype(np.bool_), "bool_val", False),
    _DT["DT_COMPLEX64"]: (np.dtype(np.complex64), "scomplex_val", False),
    _DT["DT_COMPLEX128"]: (np.dtype(np.complex128), "dcomplex_val", False),
    _DT["DT_STRING"]: (np.dtype(object), "string_val", False),
}
_BY_DTYPE: dict[np.dtype, int] = {dtype: enum for enum, (dtype, _, _) in _KINDS.items()}
_STRING = _DT["DT_STRING"]
_COMPLEX_PART = {np.dtype(np.complex64): np.float32, np.dtype(np.complex128): np.float64}
_INT4: tuple[np.dtype, ...] = ()  # numpy scalars protobuf cannot take: sent as int32
_ML_DTYPES_LOADED = False


def _load_ml_dtypes() -> None:
    """Add bfloat16, float8 and int4 (ml_dtypes' types), on first use: importing ml_dtypes
    costs more than the rest of the client together."""
    global _ML_DTYPES_LOADED, _INT4
    if _ML_DTYPES_LOADED:
        return
    import ml_dtypes

    extra: dict[str, tuple[Any, str, bool]] = {
        "DT_BFLOAT16": (ml_dtypes.bfloat16, "half_val", True),
        "DT_INT4": (ml_dtypes.int4, "int_val", False),
        "DT_UINT4": (ml_dtypes.uint4, "int_val", False),
        "DT_FLOAT8_E5M2": (ml_dtypes.float8_e5m2, "float8_val", True),
        "DT_FLOAT8_E4M3FN": (ml_dtypes.float8_e4m3fn, "float8_val", True),
        "DT_FLOAT8_E4M3FNUZ": (ml_dtypes.float8_e4m3fnuz, "float8_val", True),
        "DT_FLOAT8_E4M3B11FNUZ": (ml_dtypes.float8_e4m3b11fnuz, "float8_val", True),
        "DT_FLOAT8_E5M2FNUZ": (ml_dtypes.float8_e5m2fnuz, "float8_val", True),
    }
    for name, (dtype, field, packed) in extra.items():
        if name in _DT:
            _KINDS[_DT[name]] = (np.dtype(dtype), field, packed)
            _BY_DTYPE[np.dtype(dtype)] = _DT[name]
    _INT4 = (np.dtype(ml_dtypes.int4), np.dtype(ml_dtypes.uint4))
    _ML_DTYPES_LOADED = True


def _kind(datatype: int) -> tuple[np.dtype, str, bool] | None:
    if datatype not in _KINDS:
        _load_ml_dtypes()
    return _KINDS.get(datatype)


def datatype_of(array: np.ndarray) -> int:
    """The TensorFlow `DataType` of an array (bytes, str and object arrays are DT_STRING)."""
    if array.dtype.kind in "OSU":
        return _STRING
    if array.dtype not in _BY_DTYPE:
        _load_ml_dtypes()
    try:
        return _BY_DTYPE[array.dtype]
    except KeyError:
        raise TypeError(f"no TensorFlow dtype for numpy {array.dtype}") from None


def dtype_of(datatype: int) -> np.dtype | None:
    """The numpy dtype of a TensorFlow `DataType` (object for DT_STRING; None if unknown)."""
    kind = _kind(datatype)
    return kind[0] if kind else None


def _as_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, (bytearray, memoryview, np.bytes_)):
        return bytes(value)
    raise TypeError(f"a string tensor holds bytes or str, not {type(value).__name__}")


def to_tensor_proto(array: np.ndarray, proto: Any = None) -> Any:
    """Fill `proto` (a new TensorProto if None) from `array`, as tf.make_tensor_proto would."""
    if proto is None:
        proto = _protos.TensorProto()
    datatype = datatype_of(array)
    proto.dtype = datatype
    proto.tensor_shape.SetInParent()  # present even for a scalar, as TensorFlow writes it
    dims = proto.tensor_shape.dim
    for size in array.shape:
        dims.add(size=size)
    dtype, field, packed = _KINDS[datatype]
    if packed and array.size > 1:
        proto.tensor_content = np.ascontiguousarray(array).tobytes()
        return proto
    flat = array.ravel()
    if datatype == _STRING:
        proto.string_val.extend([_as_bytes(v) for v in flat.tolist()])
    elif field == "half_val":
        proto.half_val.extend(flat.view(np.uint16).tolist())
    elif field == "float8_val":
        proto.float8_val = flat.view(np.uint8).tobytes()
    elif dtype in _COMPLEX_PART:
        getattr(proto, field).extend(flat.view(_COMPLEX_PART[dtype]).tolist())
    elif dtype in _INT4:
        proto.int_val.extend(flat.astype(np.int32).tolist())
    else:
        getattr(proto, field).extend(flat.tolist())
    return proto


def _shape(proto: Any) -> tuple[int, ...]:
    return tuple(d.size for d in proto.tensor_shape.dim)


def to_ndarray(proto: Any) -> np.ndarray:
    """The array a TensorProto holds (its own copy, writable)."""
    kind = _kind(proto.dtype)
    if kind is None:
        raise TypeError(f"unsupported tensor dtype {proto.dtype}")
    dtype, field, _ = kind
    shape = _shape(proto)
    if shape and min(shape) < 0:
        raise ValueError(f"tensor shape {list(shape)} has a negative dimension")
    count = math.prod(shape)  # Python ints: no overflow, and faster than numpy for a few dims
    if count * max(dtype.itemsize, 1) > MAX_TENSOR_BYTES:
        raise ValueError(f"tensor shape {list(shape)} is larger than {MAX_TENSOR_BYTES} bytes")
    if proto.tensor_content:
        if proto.dtype == _STRING:
            raise ValueError("string tensors in tensor_content are not supported")
        content = proto.tensor_content
        if len(content) != count * dtype.itemsize:
            raise ValueError(f"tensor_content holds {len(content)} bytes, shape {list(shape)} needs "
                             f"{count * dtype.itemsize}")
        return np.frombuffer(content, dtype=dtype).reshape(shape).copy()
    if proto.dtype == _STRING:
        values = np.empty(len(proto.string_val), dtype=object)
        values[:] = list(proto.string_val)
    elif field == "half_val":
        values = np.array(proto.half_val, dtype=np.uint16).view(dtype)
    elif field == "float8_val":
        values = np.frombuffer(proto.float8_val, dtype=np.uint8).view(dtype)
    elif dtype in _COMPLEX_PART:
        values = np.array(getattr(proto, field), dtype=_COMPLEX_PART[dtype])
        values = values[: values.size // 2 * 2].view(dtype)
    elif dtype in _INT4:
        values = np.array(proto.int_val, dtype=np.int32).astype(dtype)
    else:
        values = np.array(getattr(proto, field), dtype=dtype)
    if values.size == 0:
        return np.zeros(shape, dtype) if proto.dtype != _STRING else np.full(shape, b"", dtype=object)
    if values.size < count:
        values = np.concatenate([values, np.repeat(values[-1:], count - values.size)])
    return values[:count].reshape(shape)
