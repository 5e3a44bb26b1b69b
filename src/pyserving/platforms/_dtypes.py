"""TF ``DataType`` enum names <-> numpy dtypes, as every platform names them on the wire and
in messages (signatures, input checks, the classify and regress output checks). No
TensorFlow import: numpy and ml_dtypes only.

Contract: `numpy_dtype(name)` gives the numpy dtype of a tensor of TF dtype ``name``
(``object`` for ``DT_STRING``; ``ml_dtypes`` types for bfloat16 / float8 / int4; None where
numpy has no equivalent: quantized, resource, variant, invalid). `tf_dtype_name(np_dtype)`
is the reverse, for error messages ("DT_DOUBLE", or the numpy name when TF has none).
"""

from __future__ import annotations

import ml_dtypes
import numpy as np

__all__ = ["numpy_dtype", "tf_dtype_name", "accepts"]

_NUMPY_BY_TF: dict[str, np.dtype] = {
    "DT_FLOAT": np.dtype(np.float32),
    "DT_DOUBLE": np.dtype(np.float64),
    "DT_HALF": np.dtype(np.float16),
    "DT_BFLOAT16": np.dtype(ml_dtypes.bfloat16),
    "DT_INT8": np.dtype(np.int8),
    "DT_INT16": np.dtype(np.int16),
    "DT_INT32": np.dtype(np.int32),
    "DT_INT64": np.dtype(np.int64),
    "DT_UINT8": np.dtype(np.uint8),
    "DT_UINT16": np.dtype(np.uint16),
    "DT_UINT32": np.dtype(np.uint32),
    "DT_UINT64": np.dtype(np.uint64),
    "DT_BOOL": np.dtype(np.bool_),
    "DT_COMPLEX64": np.dtype(np.complex64),
    "DT_COMPLEX128": np.dtype(np.complex128),
    "DT_STRING": np.dtype(object),
    "DT_FLOAT8_E5M2": np.dtype(ml_dtypes.float8_e5m2),
    "DT_FLOAT8_E4M3FN": np.dtype(ml_dtypes.float8_e4m3fn),
    "DT_FLOAT8_E4M3FNUZ": np.dtype(ml_dtypes.float8_e4m3fnuz),
    "DT_FLOAT8_E4M3B11FNUZ": np.dtype(ml_dtypes.float8_e4m3b11fnuz),
    "DT_FLOAT8_E5M2FNUZ": np.dtype(ml_dtypes.float8_e5m2fnuz),
    "DT_INT4": np.dtype(ml_dtypes.int4),
    "DT_UINT4": np.dtype(ml_dtypes.uint4),
}

_TF_BY_NUMPY: dict[np.dtype, str] = {
    dt: name for name, dt in _NUMPY_BY_TF.items() if name != "DT_STRING"
}

# numpy kinds a DT_STRING feed accepts: object (bytes/str), fixed bytes, fixed unicode.
_STRING_KINDS = frozenset("OSU")


def numpy_dtype(tf_name: str) -> np.dtype | None:
    """The numpy dtype for TF dtype ``tf_name`` ("DT_FLOAT"), or None if numpy has none."""
    return _NUMPY_BY_TF.get(tf_name)


def tf_dtype_name(dtype: np.dtype) -> str:
    """The TF enum name of a numpy dtype, for messages (object/bytes/str -> DT_STRING)."""
    if dtype.kind in _STRING_KINDS:
        return "DT_STRING"
    return _TF_BY_NUMPY.get(dtype, f"numpy {dtype}")


def accepts(expected: np.dtype, got: np.dtype) -> bool:
    """Whether an array of dtype ``got`` may be fed where ``expected`` is declared."""
    if expected == got:
        return True
    return expected.kind == "O" and got.kind in _STRING_KINDS
