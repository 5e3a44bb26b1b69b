"""The Open Inference Protocol (KServe V2) for a TF Serving model, whatever the transport.

What REST (`api/rest/v2.py`) and gRPC (`api/grpc/v2_servicer.py`) share: the datatype table,
how a model's signature reads as V2 metadata, how one input tensor (datatype, shape, and
either typed values or raw bytes) becomes a numpy array, and how an output array becomes
raw bytes or JSON-ready values. Every check raises `ServingError(INVALID_ARGUMENT)` with a
message naming the tensor; nothing here knows about HTTP or protobuf.

Mapping (the spec's "Tensor Data Types" table and TF's dtypes): BOOL, UINT8..UINT64,
INT8..INT64, FP16 (DT_HALF), FP32, FP64, BF16 (DT_BFLOAT16, Triton's name) and BYTES
(DT_STRING). A model's V2 inputs and outputs are those of one signature (`serving_default`
unless the request's `signature_name` parameter names another). A dimension TF does not
know is -1; a tensor of unknown rank is shown as `[-1]` (V2 has no way to say "any rank";
the model's own checks still apply).

Raw bytes (the binary data extension, gRPC `raw_input_contents`): little-endian, row-major;
BOOL one byte per element; BYTES elements each a 4-byte little-endian length and the bytes.
A tensor is built from raw bytes only after their size has been checked against the shape
and datatype, as a view on the request's bytes (no copy); from typed values only after
their count matches the shape. A declared shape never drives an allocation by itself.
"""

from __future__ import annotations

import struct
import sys
from typing import Any, Iterable, Mapping, Sequence

import ml_dtypes
import numpy as np

from pyserving.errors import Code, ServingError
from pyserving.platforms.base import Signature, TensorSpec

__all__ = [
    "DATATYPES",
    "BINARY_EXTENSION",
    "datatype_of",
    "tensor_metadata",
    "parse_version",
    "check_request",
    "element_count",
    "from_raw",
    "from_values",
    "to_raw",
    "to_json_values",
    "raw_size_mismatch",
    "invalid",
]

assert sys.byteorder == "little", "raw tensor data is little-endian"

# What Triton calls the binary data extension in its server metadata.
BINARY_EXTENSION = "binary_tensor_data"

DATATYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "BYTES": np.dtype(object),
}
_BY_NUMPY: dict[np.dtype, str] = {dt: name for name, dt in DATATYPES.items() if name != "BYTES"}
_INTEGER_KINDS = frozenset("iu")
_LENGTH = struct.Struct("<I")
_INT64_MAX = (1 << 63) - 1
_MAX_RANK = 64  # numpy's


def invalid(message: str) -> ServingError:
    return ServingError(Code.INVALID_ARGUMENT, message)


def datatype_of(dtype: np.dtype | None, tf_name: str = "") -> str:
    """The V2 datatype of a numpy dtype (object, bytes and str: BYTES). A dtype V2 has no
    name for is shown by its TF name without the `DT_` prefix (e.g. COMPLEX64)."""
    if dtype is not None:
        if dtype.kind in "OSU":
            return "BYTES"
        name = _BY_NUMPY.get(dtype)
        if name is not None:
            return name
    if tf_name.startswith("DT_"):
        return tf_name[3:]
    return str(dtype).upper()


def _shape_of(spec: TensorSpec) -> list[int]:
    return [-1] if spec.shape is None else [int(d) for d in spec.shape]


def tensor_metadata(specs: Mapping[str, TensorSpec]) -> list[dict[str, Any]]:
    """`$metadata_tensor` objects for a signature's inputs or outputs, in signature order."""
    return [{"name": alias, "datatype": datatype_of(spec.np_dtype, spec.dtype), "shape": _shape_of(spec)}
            for alias, spec in specs.items()]


def parse_version(text: str) -> tuple[int | None, str | None]:
    """A V2 version string as (version, label): digits are a version number (int64), anything
    else a TF Serving version label, "" the server's choice (the latest)."""
    if not text:
        return None, None
    if text.isascii() and text.isdigit():
        significant = text.lstrip("0") or "0"
        if len(significant) > 19 or int(significant) > _INT64_MAX:
            raise invalid(f"Invalid model version {text!r}: larger than int64")
        return int(significant), None
    return None, text


def check_request(model: str, signature: Signature, inputs: Iterable[tuple[str, str]],
                  outputs: Sequence[str]) -> None:
    """Input names and datatypes (name, datatype) and requested outputs against the
    signature, before any tensor is built. Missing inputs are the model's to report (a
    SignatureDef may give them defaults)."""
    seen: set[str] = set()
    for name, datatype in inputs:
        if name in seen:
            raise invalid(f"Input '{name}' is given more than once")
        seen.add(name)
        spec = signature.inputs.get(name)
        if spec is None:
            raise invalid(f"Unexpected inference input '{name}' for model '{model}'; its inputs are "
                          + ", ".join(f"'{n}'" for n in signature.inputs)
                          + f" (signature '{signature.name}')")
        expected = datatype_of(spec.np_dtype, spec.dtype)
        if datatype != expected:
            raise invalid(f"Input '{name}' has datatype {datatype}, but model '{model}' expects {expected}")
    wanted: set[str] = set()
    for name in outputs:
        if name in wanted:
            raise invalid(f"Output '{name}' is requested more than once")
        wanted.add(name)
        if name not in signature.outputs:
            raise invalid(f"Unexpected inference output '{name}' for model '{model}'; its outputs are "
                          + ", ".join(f"'{n}'" for n in signature.outputs)
                          + f" (signature '{signature.name}')")


def _dtype(name: str, datatype: Any) -> np.dtype:
    dtype = DATATYPES.get(datatype) if isinstance(datatype, str) else None
    if dtype is None:
        raise invalid(f"Input '{name}' has an invalid datatype {datatype!r}; one of "
                      + ", ".join(DATATYPES) + " is expected")
    return dtype


def element_count(name: str, shape: Sequence[Any]) -> int:
    """The number of elements `shape` declares (each dimension an integer >= 0)."""
    if len(shape) > _MAX_RANK:
        raise invalid(f"Input '{name}' has {len(shape)} dimensions; at most {_MAX_RANK} are supported")
    n = nonzero = 1
    for d in shape:
        if type(d) is not int or d < 0 or d > _INT64_MAX:
            raise invalid(f"Input '{name}' has an invalid shape {list(shape)!r}: dimensions are integers "
                          "from 0 to 2^63-1")
        n *= d
        nonzero *= max(d, 1)
    if n == 0 and nonzero > _INT64_MAX // 16:  # numpy refuses such a shape though it holds nothing;
        # with elements, the data (never enough for it) is refused first
        raise invalid(f"Input '{name}' has a shape {list(shape)!r} too large for any tensor")
    return n


def _shape_text(shape: Sequence[int]) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


def raw_size_mismatch(name: str, datatype: str, shape: Sequence[int], got: int) -> ServingError:
    itemsize = DATATYPES[datatype].itemsize
    return invalid(f"Input '{name}' has {got} bytes of data, but shape {_shape_text(shape)} of {datatype} "
                   f"needs {element_count(name, shape) * itemsize}")


def from_raw(name: str, datatype: str, shape: Sequence[Any], raw: bytes | memoryview) -> np.ndarray:
    """An input tensor from its raw little-endian bytes: a view on `raw` (copied only when
    the bytes are not aligned for the datatype)."""
    dtype = _dtype(name, datatype)
    n = element_count(name, shape)
    dims = tuple(shape)
    if datatype == "BYTES":
        return _bytes_elements(name, raw, n).reshape(dims)
    if len(raw) != n * dtype.itemsize:
        raise raw_size_mismatch(name, datatype, dims, len(raw))
    array = np.frombuffer(raw, dtype=dtype)
    if not array.flags.aligned:
        array = array.copy()
    return array.reshape(dims)


def _bytes_elements(name: str, raw: bytes | memoryview, n: int) -> np.ndarray:
    """BYTES raw data: `n` elements, each a 4-byte length and its bytes, exactly filling `raw`."""
    view = memoryview(raw)
    size = len(view)
    items: list[bytes] = []
    pos = 0
    while pos < size:
        if len(items) == n:
            raise invalid(f"Input '{name}' has more BYTES elements than its shape's {n}")
        if pos + 4 > size:
            raise invalid(f"Input '{name}' has a truncated BYTES element length at byte {pos}")
        (length,) = _LENGTH.unpack_from(view, pos)
        pos += 4
        if pos + length > size:
            raise invalid(f"Input '{name}' has a BYTES element of {length} bytes at byte {pos - 4}, "
                          f"past the end of its {size} bytes of data")
        items.append(bytes(view[pos:pos + length]))
        pos += length
    if len(items) != n:
        raise invalid(f"Input '{name}' has {len(items)} BYTES elements, but its shape needs {n}")
    out = np.empty(n, dtype=object)
    out[:] = items
    return out


def _to_bytes(name: str, value: Any) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    raise invalid(f"Input '{name}' of datatype BYTES holds a {type(value).__name__}, not a string")


def from_values(name: str, datatype: str, shape: Sequence[Any], values: Any) -> np.ndarray:
    """An input tensor from typed values: a JSON array (flat or nested) or a protobuf
    repeated field. Their count must be the shape's; numbers must fit the datatype (an
    integer datatype takes integers only, BOOL booleans only, floats any number)."""
    dtype = _dtype(name, datatype)
    n = element_count(name, shape)
    dims = tuple(shape)
    if datatype == "BYTES":
        flat = _flatten(name, values)
        if len(flat) != n:
            raise _count_mismatch(name, len(flat), dims, n)
        out = np.empty(n, dtype=object)
        out[:] = [_to_bytes(name, v) for v in flat]
        return out.reshape(dims)
    try:
        parsed = np.asarray(values)
    except (ValueError, TypeError, OverflowError):
        raise invalid(f"Input '{name}' has data that is not a regular array of {datatype} values") from None
    if parsed.size != n:
        raise _count_mismatch(name, parsed.size, dims, n)
    kind = parsed.dtype.kind
    if n == 0:
        return np.zeros(dims, dtype=dtype)
    if datatype == "BOOL":
        if kind != "b":
            raise _type_mismatch(name, datatype, parsed)
        return parsed.reshape(dims)
    if dtype.kind in _INTEGER_KINDS:
        if kind not in _INTEGER_KINDS:
            raise _type_mismatch(name, datatype, parsed)
        info = np.iinfo(dtype)
        if parsed.min() < info.min or parsed.max() > info.max:
            raise invalid(f"Input '{name}' has a value out of the range of {datatype}")
        return parsed.astype(dtype).reshape(dims)
    if kind not in "iuf":  # floats take any JSON number
        raise _type_mismatch(name, datatype, parsed)
    return parsed.astype(dtype).reshape(dims)


def _flatten(name: str, values: Any) -> list[Any]:
    if not isinstance(values, (list, tuple)):
        values = list(values)  # a protobuf repeated field
    if all(not isinstance(v, list) for v in values):
        return list(values)
    flat: list[Any] = []
    stack = [iter(values)]
    while stack:
        for v in stack[-1]:
            if isinstance(v, list):
                stack.append(iter(v))
                break
            flat.append(v)
        else:
            stack.pop()
    return flat


def _count_mismatch(name: str, got: int, shape: Sequence[int], n: int) -> ServingError:
    return invalid(f"Input '{name}' has {got} elements of data, but shape {_shape_text(shape)} needs {n}")


def _type_mismatch(name: str, datatype: str, parsed: np.ndarray) -> ServingError:
    what = {"b": "booleans", "i": "integers", "u": "integers", "f": "numbers with a fraction",
            "U": "strings"}.get(parsed.dtype.kind, "values of mixed or other types")
    return invalid(f"Input '{name}' of datatype {datatype} holds {what}")


def to_raw(array: np.ndarray) -> bytes:
    """An output's raw bytes (BYTES elements length-prefixed)."""
    if array.dtype.kind in "OSU":
        parts: list[bytes] = []
        for v in array.reshape(-1).tolist():
            b = v.encode("utf-8") if isinstance(v, str) else bytes(v)
            parts.append(_LENGTH.pack(len(b)))
            parts.append(b)
        return b"".join(parts)
    return np.ascontiguousarray(array).tobytes()


def to_json_values(array: np.ndarray) -> Any:
    """An output's flat data for JSON: a numpy array orjson writes natively, or a list of
    strings for BYTES; None when a BYTES element is not UTF-8 (send it as binary data)."""
    flat = array.reshape(-1)
    kind = flat.dtype.kind
    if kind in "OSU":
        try:
            return [v if isinstance(v, str) else bytes(v).decode("utf-8") for v in flat.tolist()]
        except UnicodeDecodeError:
            return None
    if flat.dtype == DATATYPES["BF16"] or flat.dtype == DATATYPES["FP16"]:
        return flat.astype(np.float32)  # exact; JSON has no half floats
    if kind == "c":
        raise invalid(f"An output of dtype {flat.dtype} cannot be sent as V2 JSON; request binary data")
    return np.ascontiguousarray(flat)
