"""Responses as TF Serving's REST API writes them, byte for byte: predict outputs,
classify / regress results, model status and metadata, error bodies.

Pure functions, no I/O, no TensorFlow::

    body = encode_predict(outputs, fmt, signature)   # fmt from request_json.parse_predict
    encode_classify(results) / encode_regress(values)
    encode_status(versions) / encode_metadata(name, version, signature_def_map_dict)
    encode_error(message)

The layout and number rules, where in TF Serving's source they come from, and the known
differences: docs/rest-json.md. Requests are parsed by `request_json`.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from pyserving.api.rest import _protojson, _writer
from pyserving.api.rest._rapidjson import quote
from pyserving.api.rest.request_json import _invalid, _tf_type_name  # one definition for both directions
from pyserving.platforms.base import Signature, TensorSpec

__all__ = [
    "encode_predict", "encode_error", "encode_classify", "encode_regress", "encode_status",
    "encode_metadata",
]

_FLOAT_OUTPUT_NAMES = {"bfloat16", "float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz",
                       "float8_e5m2fnuz", "float8_e4m3b11fnuz", "float8_e3m4", "float8_e4m3",
                       "float8_e8m0fnu", "float6_e2m3fn", "float6_e3m2fn", "float4_e2m1fn"}


def _tokens(name: str, arr: np.ndarray, spec: TensorSpec | None, depth: int) -> list[str]:
    dt = arr.dtype
    k = dt.kind
    if k == "f" or dt.name in _FLOAT_OUTPUT_NAMES:
        return _writer.float_tokens(arr.astype(np.float64) if dt == np.float64 else arr.astype(np.float32),
                                    dt == np.float64)
    if k in "iu":
        return _writer.int_tokens(arr)
    if k == "b":
        return _writer.bool_tokens(arr)
    if k in "OSU":
        return _writer.string_tokens(arr, name.endswith("_bytes"), depth)
    if k == "V" and dt.name in ("int4", "uint4", "int2", "uint2"):
        return _writer.int_tokens(arr.astype(np.int64))
    type_name = _tf_type_name(spec.dtype) if spec is not None else dt.name
    if k == "c":
        type_name = dt.name
    raise _invalid(f"Failed to write JSON value for tensor type: {type_name}")


def encode_predict(outputs: Mapping[str, np.ndarray], fmt: str | None, signature: Signature | None = None) -> bytes:
    """`{"predictions": ...}` (row) or `{"outputs": ...}` (columnar), TF Serving's text."""
    if not outputs:
        raise _invalid("Cannot convert empty tensor map to JSON")
    specs: Mapping[str, TensorSpec] = signature.outputs if signature is not None else {}
    items = [(name, np.asarray(arr)) for name, arr in outputs.items()]
    if fmt == "row":
        text = _row_json(items, specs)
    elif fmt == "columnar":
        text = _columnar_json(items, specs)
    else:
        raise _invalid("Invalid request format")
    return text.encode("utf-8", "surrogatepass")


def _row_json(items: list[tuple[str, np.ndarray]], specs: Mapping[str, TensorSpec]) -> str:
    batch = -1
    for name, arr in items:
        if arr.ndim == 0:
            raise _invalid(f"Tensor name: {name} has no shape information ")
        if batch >= 0 and arr.shape[0] != batch:
            raise _invalid(f"Tensor name: {name} has inconsistent batch size: {arr.shape[0]} expecting: {batch}")
        batch = arr.shape[0]
    if batch == 0:
        return '{\n    "predictions": []\n}'
    if len(items) == 1:
        name, arr = items[0]
        tokens = _tokens(name, arr, specs.get(name), arr.ndim + 1)
        text = _writer.layout(tokens, arr.shape, True, 0)
        return '{\n    "predictions": ' + text[:-1] + "\n    ]\n}"
    stride = 2 * len(items) + 2
    pieces: list[str | None] = [None] * (batch * stride)
    pieces[0::stride] = ["\n        {"] + [",\n        {"] * (batch - 1)
    for j, (name, arr) in enumerate(items):
        tokens = _tokens(name, arr, specs.get(name), arr.ndim + 2)
        key = ("\n" if j == 0 else ",\n") + " " * 12 + quote(name) + ": "
        pieces[1 + 2 * j::stride] = [key] * batch
        pieces[2 + 2 * j::stride] = _writer.layout_rows(tokens, arr.shape)
    pieces[stride - 1::stride] = ["\n        }"] * batch
    return '{\n    "predictions": [' + "".join(pieces) + "\n    ]\n}"  # type: ignore[arg-type]


def _columnar_json(items: list[tuple[str, np.ndarray]], specs: Mapping[str, TensorSpec]) -> str:
    if len(items) == 1:
        name, arr = items[0]
        tokens = _tokens(name, arr, specs.get(name), 1 + arr.ndim)
        return '{\n    "outputs": ' + _writer.layout(tokens, arr.shape, False, 1) + "\n}"
    parts = []
    for j, (name, arr) in enumerate(items):
        tokens = _tokens(name, arr, specs.get(name), 2 + arr.ndim)
        parts.append(("\n" if j == 0 else ",\n") + " " * 8 + quote(name) + ": "
                     + _writer.layout(tokens, arr.shape, False, 2))
    return '{\n    "outputs": {' + "".join(parts) + "\n    }\n}"


def encode_error(message: str) -> bytes:
    text = message.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return ('{\n    "error": ' + quote(text) + "\n}").encode("utf-8")


def _label_text(label: str | bytes) -> str:
    if isinstance(label, (bytes, bytearray, np.bytes_)):
        return bytes(label).decode("utf-8", "replace")
    return str(label)


def encode_classify(results: Sequence[Sequence[tuple[str | bytes, float]]]) -> bytes:
    """`{"results": [[["label", score], ...], ...]}` (MakeJsonFromClassificationResult)."""
    if not results:
        raise _invalid("Cannot convert empty ClassificationResults to JSON")
    scores = np.array([s for classes in results for _, s in classes], dtype=np.float32)
    tokens = iter(_writer.float_tokens(scores, False))
    rows = []
    for classes in results:
        rows.append("[" + ", ".join("[" + quote(_label_text(label)) + ", " + next(tokens) + "]"
                                    for label, _ in classes) + "]")
    return ('{\n    "results": [' + ", ".join(rows) + "\n    ]\n}").encode("utf-8")


def encode_regress(values: Iterable[float]) -> bytes:
    """`{"results": [v1, v2, ...]}` (MakeJsonFromRegressionResult), values as float32."""
    arr = np.asarray(list(values), dtype=np.float32)
    if arr.size == 0:
        raise _invalid("Cannot convert empty RegressionResults to JSON")
    return ('{\n    "results": [' + ", ".join(_writer.float_tokens(arr, False)) + "]\n}").encode("utf-8")


# --------------------------------------------------------------------------- status / metadata


def encode_status(versions: Iterable[tuple[int, str, str, str]]) -> bytes:
    """GetModelStatusResponse as TF Serving's REST API prints it, versions in the order
    given: (version, state name, error_code name, error_message)."""
    doc = {"model_version_status": [
        {"version": str(int(v)), "state": state,
         "status": {"error_code": code, "error_message": message}}
        for v, state, code, message in versions]}
    return (_protojson.dumps(doc) + "\n").encode("utf-8")


def encode_metadata(name: str, version: int, signature_def_map: Mapping[str, Any]) -> bytes:
    """GetModelMetadataResponse as TF Serving hand-assembles it. `signature_def_map` is
    `MessageToDict(SignatureDefMap, preserving_proto_field_name=True,
    always_print_fields_with_no_presence=True)`."""
    spec = _protojson.dumps({"name": name, "signature_name": "", "version": str(int(version))}) + "\n"
    sigs = _protojson.dumps(_protojson.order_signature_def_map(signature_def_map)) + "\n"
    text = "{\n" + '"model_spec":' + spec + ",\n" + '"metadata": {' + '"signature_def": ' + sigs + "}\n" + "}\n"
    return text.encode("utf-8")
