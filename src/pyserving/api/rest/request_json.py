"""Request JSON -> inputs: TF Serving's REST request bodies parsed, checked and converted
as `tensorflow_model_server` does, with its leniency and its error messages.

Pure functions, no I/O, no TensorFlow (tf.Example protos are written directly). The REST
front end calls them in this order::

    doc = parse_body(body)
    signature_name, fmt, payload = parse_predict(doc)
    # ... look the model and `signature_name` up ...
    inputs = predict_inputs(fmt, payload, signature)

    signature_name, examples = parse_examples(doc, "classify" | "regress")

The rules, where in TF Serving's source they come from, and the known differences:
docs/rest-json.md. Responses are written by `response_json`.
"""

from __future__ import annotations

import binascii
import json
import re
import sys
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Mapping, NamedTuple, Sequence

import numpy as np
import orjson

from pyserving.api.rest import _rapidjson
from pyserving.api.rest._example import serialize_example
from pyserving.api.rest._rapidjson import debug_string, is_double, json_type
from pyserving.api.rest._raw_array import Chunks, RawArray, gc_paused, try_parse
from pyserving.errors import Code, ServingError
from pyserving.platforms.base import DEFAULT_SIGNATURE, Signature, TensorSpec

__all__ = [
    "PredictRequest", "PredictPayload", "parse_body", "parse_predict", "predict_inputs",
    "parse_examples",
]

# The raw-array path (simdjson straight into numpy) costs ~15 us of set-up; the generic
# one (orjson, then numpy from the lists) costs per nested list. One 28x28x1 image (813
# lists): 28 us against 200 us; a flat row of 100 floats: 13 us against 8 us. Brackets are
# counted in the body's first KiB only (the whole 7.9 kB image took 4 us to count).
_RAW_MIN_BRACKETS = 32
_RAW_BRACKETS_IN = 1024
_RAW_MIN_BYTES = 256 * 1024
_GC_PAUSE_BYTES = 1 << 20

# TF dtype -> (JSON acceptance class, numpy dtype). Anything else is UNIMPLEMENTED.
_INPUT_DTYPES: dict[str, tuple[str, Any]] = {
    "DT_FLOAT": ("float", np.float32), "DT_DOUBLE": ("float", np.float64),
    "DT_INT32": ("int32", np.int32), "DT_INT16": ("int32", np.int16),
    "DT_INT8": ("int32", np.int8), "DT_UINT8": ("int32", np.uint8),
    "DT_INT64": ("int64", np.int64), "DT_UINT32": ("uint32", np.uint32),
    "DT_UINT64": ("uint64", np.uint64), "DT_BOOL": ("bool", np.bool_),
    "DT_STRING": ("string", object),
}
_INT_RANGES = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1),
               "uint32": (0, 2**32 - 1), "uint64": (0, 2**64 - 1)}


def _invalid(message: str) -> ServingError:
    return ServingError(Code.INVALID_ARGUMENT, message)


def _tf_type_name(dtype: str) -> str:
    """`DataTypeString`: DT_FLOAT -> float, DT_BFLOAT16 -> bfloat16, ..."""
    return dtype[3:].lower() if dtype.startswith("DT_") and dtype != "DT_INVALID" else "INVALID"


def _format_error(value: Any, *parts: str) -> ServingError:
    return _invalid("JSON Value: " + debug_string(value) + " " + "".join(parts))


# --------------------------------------------------------------------------- parsing


class _JsonDoc(dict):
    """A top-level JSON object; `maybe_bools` is False when the body has no `true`/`false`
    token at all, which lets numeric conversion trust numpy's dtype inference."""

    maybe_bools: bool = True


_JSON_DECODER = json.JSONDecoder()
# Tokens on which Python's json scanner and RapidJSON disagree: surrogate escapes, 3-digit
# exponents (overflow), 20+ digit runs (integers beyond 64 bits).
_RISKY = re.compile(rb"\\u[dD][89a-fA-F]|[eE]\+?[0-9]{3}|[0-9]{20}")
_SEARCH_SLICE_BYTES = 4 << 20
_LEADING_WS = re.compile(rb"[ \t\n\r]*")


def _only_whitespace(data: bytes) -> bool:
    step = _SEARCH_SLICE_BYTES  # in slices, for the loop's sake (see `_search_in_slices`)
    for start in range(0, len(data), step):
        end = min(len(data), start + step)
        if _LEADING_WS.match(data, start, end).end() != end:  # type: ignore[union-attr]
            return False
    return True


def parse_body(body: bytes | Chunks) -> Any:
    """Parse a request body with TF Serving's leniency and error messages. A big body may
    come as the `Chunks` it arrived in: joined only if the raw-array path declines it (then
    the generic path decides; the raw path is not tried twice)."""
    raw_tried = isinstance(body, Chunks)
    if raw_tried:
        doc = try_parse(body)
        if doc is not None:
            return _wrap(doc, b"")
        body = body[:]
    if not body:
        raise _invalid("JSON Parse error: The document is empty")
    body = body[:] if isinstance(body, Chunks) else bytes(body)
    if len(body) >= _RAW_MIN_BYTES and _only_whitespace(body.removeprefix(b"\xef\xbb\xbf")):
        # give up at once: no parser can make a request of it (a gzip bomb's favourite)
        raise _invalid(f"JSON Parse error: The document is empty. at offset: {len(body)}")
    if not raw_tried and (len(body) >= _RAW_MIN_BYTES
                          or body.count(b"[", 0, _RAW_BRACKETS_IN) >= _RAW_MIN_BRACKETS):
        doc = try_parse(body)
        if doc is not None:
            return _wrap(doc, body)
    pause = gc_paused() if len(body) >= _GC_PAUSE_BYTES else nullcontext()
    try:
        with pause:
            doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        doc = _parse_lenient(body)
    return _wrap(doc, body)


def _wrap(doc: Any, body: bytes) -> Any:
    if not isinstance(doc, dict):
        return doc
    out = _JsonDoc(doc)
    for v in doc.values():
        if isinstance(v, RawArray):  # it holds numbers only: look at the rest of the body
            body = v.surrounding()
            break
    out.maybe_bools = b"true" in body or b"false" in body
    return out


def _search_in_slices(pattern: re.Pattern[bytes], data: bytes, overlap: int = 32) -> bool:
    """`pattern.search(data)` a few MiB at a time: one search holds the GIL throughout, and
    the event loop needs it between slices (a match is at most `overlap` bytes long)."""
    step = _SEARCH_SLICE_BYTES
    for start in range(0, len(data), step):
        if pattern.search(data, max(0, start - overlap), start + step) is not None:
            return True
    return False


def _parse_lenient(body: bytes) -> Any:
    i = 0
    for bom in (0xEF, 0xBB, 0xBF):
        if i < len(body) and body[i] == bom:
            i += 1
    rest = body[i:]
    if not _search_in_slices(_RISKY, rest):
        text = rest.decode("utf-8", "surrogateescape")
        j = len(text) - len(text.lstrip(" \t\n\r"))
        try:
            with gc_paused() if len(body) >= _GC_PAUSE_BYTES else nullcontext():
                value, end = _JSON_DECODER.raw_decode(text, j)
            # A top-level number stops where RapidJSON would go on reading "1." / "1e".
            if not (type(value) in (int, float) and text[end:end + 1] in (".", "e", "E")):
                return value
        except (ValueError, RecursionError):
            pass
    try:
        return _rapidjson.parse(body)
    except _rapidjson.JsonParseError as err:
        raise _invalid(f"JSON Parse error: {err.reason} at offset: {err.offset}") from None


def _require_object(doc: Any) -> None:
    if not isinstance(doc, dict):
        raise _format_error(doc, "Is not object")


def _signature_name(doc: Mapping[str, Any]) -> str:
    if "signature_name" not in doc:
        return ""
    name = doc["signature_name"]
    if not isinstance(name, str):
        raise _format_error(doc, "not formatted correctly. 'signature_name' key must be a string value.")
    return name


@dataclass(frozen=True)
class PredictPayload:
    """What `predict_inputs` needs besides the signature."""

    value: Any                       # the `instances` / `inputs` JSON value
    requested_signature_name: str    # as sent ("" when absent)
    maybe_bools: bool = True
    error: ServingError | None = None  # request-shape error TF reports after the lookup


class PredictRequest(NamedTuple):
    signature_name: str
    format: str | None
    payload: PredictPayload


def parse_predict(doc: Any) -> PredictRequest:
    _require_object(doc)
    requested = _signature_name(doc)
    maybe_bools = getattr(doc, "maybe_bools", True)
    error: ServingError | None = None
    fmt: str | None = None
    value: Any = None
    has_instances, has_inputs = "instances" in doc, "inputs" in doc
    if has_instances and has_inputs:
        error = _format_error(doc, "Not formatted correctly expecting only one of 'inputs' "
                                   "or 'instances' keys to exist ")
    elif has_instances:
        fmt, value = "row", doc["instances"]
        if not isinstance(value, (list, RawArray)):
            error = _format_error(doc, "Expecting 'instances' to be an list/array")
        elif len(value) == 0:
            error = _format_error(doc, "No values in 'instances' array")
    elif has_inputs:
        fmt, value = "columnar", doc["inputs"]
    else:
        error = _invalid("Missing 'inputs' or 'instances' key")
    payload = PredictPayload(value, requested, maybe_bools, error)
    return PredictRequest(requested or DEFAULT_SIGNATURE, fmt, payload)


# --------------------------------------------------------------------------- tensors


def predict_inputs(fmt: str | None, payload: Any, signature: Signature) -> dict[str, np.ndarray]:
    """The signature's inputs (alias -> array) from the request. `payload` is the
    `PredictPayload` from `parse_predict` (a bare JSON value is accepted too)."""
    if isinstance(payload, PredictPayload):
        value, requested, maybe_bools, error = (
            payload.value, payload.requested_signature_name, payload.maybe_bools, payload.error)
    else:
        value, requested, maybe_bools, error = payload, signature.name, True, None
    if not signature.inputs:
        raise _invalid(f"Failed to get input map for signature: {requested or 'DEFAULT'}")
    if error is not None:
        raise error
    if fmt == "row":
        if not isinstance(value, (list, RawArray)):
            raise _invalid("JSON Value: " + debug_string(value) + " Expecting 'instances' to be an list/array")
        if len(value) == 0:
            raise _invalid("No values in 'instances' array")
        return _row_inputs(value, signature.inputs, maybe_bools)
    if fmt == "columnar":
        return _columnar_inputs(value, signature.inputs, maybe_bools)
    raise _invalid("Invalid request format")


def _is_b64(v: Any) -> bool:
    return isinstance(v, dict) and len(v) == 1 and isinstance(v.get("b64"), str)


def _is_element_object(v: Any) -> bool:
    return isinstance(v, dict) and not _is_b64(v)


def _row_inputs(instances: Any, specs: Mapping[str, TensorSpec], maybe_bools: bool) -> dict[str, np.ndarray]:
    names = list(specs)
    first = None if isinstance(instances, RawArray) else instances[0]  # raw: numbers only
    if len(names) > 1 and not _is_element_object(first):
        # TF lets a first `{"b64": ...}` through here and then feeds one input only; the
        # request can only fail later, so it fails here with the plain-list message.
        raise _invalid("instances is a plain list, but expecting list of objects as multiple "
                       "input tensors required as per tensorinfo_map")
    try:
        if _is_element_object(first):
            keys = set(names)
            if all(_is_element_object(e) and e.keys() == keys for e in instances):
                return {name: _convert(spec, [e[name] for e in instances], maybe_bools)
                        for name, spec in specs.items()}
        else:
            name = names[0]
            return {name: _convert(specs[name], instances, maybe_bools)}
    except ServingError:
        pass
    # Something is wrong: replay TF's element-by-element order for its first error.
    return _rows_exact(instances, specs)


def _rows_exact(instances: Any, specs: Mapping[str, TensorSpec]) -> dict[str, np.ndarray]:
    if isinstance(instances, RawArray):
        instances = instances.materialize()
    names = sorted(specs)  # std::set order
    first_name = next(iter(specs))
    objects = _is_element_object(instances[0])
    sizes: dict[str, int] = {}
    shapes: dict[str, list[int]] = {}
    flats: dict[str, list[Any]] = {}

    def add(item: Any, name: str) -> None:
        spec = specs.get(name)
        if spec is None:
            raise _invalid(f"JSON object: does not have named input: {name}")
        shape, flat = _fill_exact(item, spec.dtype)
        if name not in sizes:
            sizes[name], shapes[name], flats[name] = len(flat), shape, []
        elif sizes[name] != len(flat):
            raise _invalid(f"Expecting tensor size: {sizes[name]} but got: {len(flat)}")
        elif shapes[name] != shape:
            raise _invalid(f"Expecting shape {_shape_str(shapes[name])} but got: {_shape_str(shape)}")
        flats[name].extend(flat)

    for i, elem in enumerate(instances):
        if objects:
            if not _is_element_object(elem):
                raise _invalid(f"Expecting object but got list at item {i} of input list")
            for name, item in elem.items():
                try:
                    add(item, name)
                except ServingError as err:
                    raise _invalid(f"Failed to process element: {i} key: {name} of 'instances' list. "
                                   f"Error: {err.code.name}: {err.message}") from None
            if set(elem) != set(names):
                raise _invalid(f"Failed to process element: {i} of 'instances' list. JSON object: "
                               f"{debug_string(elem)} keys must be equal to: {','.join(names)}")
        else:
            if _is_element_object(elem):
                raise _invalid(f"Expecting value/list but got object at item {i} of input list")
            try:
                add(elem, first_name)
            except ServingError as err:
                raise _invalid(f"Failed to process element: {i} of 'instances' list. "
                               f"Error: {err.code.name}: {err.message}") from None
    n = len(instances)
    return {name: _build(flats[name], [n, *shapes[name]], specs[name]) for name in flats}


def _shape_str(shape: Sequence[int]) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


def _columnar_inputs(value: Any, specs: Mapping[str, TensorSpec], maybe_bools: bool) -> dict[str, np.ndarray]:
    if not isinstance(value, dict) or _is_b64(value):
        if len(specs) > 1:
            raise _invalid("inputs is a plain value/list, but expecting an object as multiple input "
                           "tensors required as per tensorinfo_map")
        name, spec = next(iter(specs.items()))
        return {name: _convert(spec, value, maybe_bools)}
    out = {}
    for name, spec in specs.items():
        if name not in value:
            raise _invalid(f"Missing named input: {name} in 'inputs' object.")
        out[name] = _convert(spec, value[name], maybe_bools)
    return out


def _target_dtype(spec: TensorSpec) -> Any:
    info = _INPUT_DTYPES.get(spec.dtype)
    if spec.np_dtype is not None and spec.dtype != "DT_STRING":
        return spec.np_dtype
    return info[1] if info else object


def _convert(spec: TensorSpec, value: Any, maybe_bools: bool) -> np.ndarray:
    """One tensor from its JSON value; the errors are TF's for a whole tensor."""
    info = _INPUT_DTYPES.get(spec.dtype)
    kind = info[0] if info else None
    numbers_only = isinstance(value, RawArray)
    if numbers_only:
        if kind == "float":  # as `_checked` casts it, without a float64 copy of a big array
            return value.as_float(_target_dtype(spec))
        if kind not in (None, "string", "bool"):
            arr = _checked(value.flat.reshape(value.shape), kind, _target_dtype(spec))
            if arr is not None:
                return arr
        value = value.materialize()
    # numpy reads a list holding one string as a string array: every element as wide as the
    # longest string (one 10,000-character string among 100,000 numbers: 4 GB); such a value
    # is never a numeric tensor, and the element-wise path below says why.
    if kind not in (None, "string") and (numbers_only or not _holds_text(value)):
        try:
            a = np.asarray(value)
        except (ValueError, TypeError, OverflowError, RecursionError, MemoryError):
            a = None
        if a is not None:
            arr = _checked(a, kind, _target_dtype(spec))
            if arr is not None and not (maybe_bools and a.dtype.kind != "b" and _contains_bool(value, a.shape)):
                return arr
    shape, flat = _fill_exact(value, spec.dtype)
    return _build(flat, shape, spec)


def _holds_text(value: Any) -> bool:
    """Whether a JSON value holds a string or an object anywhere (its JSON has a quote),
    found at orjson's speed rather than by walking it."""
    if not isinstance(value, list):
        return isinstance(value, (str, dict))
    try:
        return b'"' in orjson.dumps(value)
    except (TypeError, orjson.JSONEncodeError):  # e.g. an integer orjson cannot write
        return True


def _checked(a: np.ndarray, kind: str, target: Any) -> np.ndarray | None:
    """`a` (numpy's own reading of the JSON value) as `target`, if every element is a
    JSON value TF accepts for that dtype; None means "look closer"."""
    k = a.dtype.kind
    if kind == "float":
        if k == "f":
            return a.astype(target)
        if k in "iu":
            return a.astype(np.float64).astype(target)
        return None
    if kind == "bool":
        return a.astype(np.bool_) if k == "b" else None
    if k not in "iu":
        return None
    if a.size:
        lo, hi = _INT_RANGES[kind]
        if int(a.min()) < lo or int(a.max()) > hi:
            return None
    if kind == "int32":  # DT_INT8/16/UINT8 go through int_val: C cast, no range check
        return a.astype(np.int64).astype(target)
    return a.astype(target)


def _contains_bool(value: Any, shape: tuple[int, ...]) -> bool:
    if not isinstance(value, list):
        return type(value) is bool
    try:
        obj = np.asarray(value, dtype=object)
    except (ValueError, TypeError):
        return True
    if obj.shape != shape:
        return True
    return bool in set(map(type, obj.reshape(-1).tolist()))


def _build(flat: list[Any], shape: Sequence[int], spec: TensorSpec) -> np.ndarray:
    info = _INPUT_DTYPES.get(spec.dtype)
    target = _target_dtype(spec)
    if info is None:  # no element to convert: an empty tensor of an unsupported type
        return np.zeros(shape, dtype=spec.np_dtype if spec.np_dtype is not None else np.float32)
    kind = info[0]
    try:
        if kind == "string":
            arr = np.empty(len(flat), dtype=object)
            arr[:] = flat
            return arr.reshape(shape)
        if kind == "float":
            return np.array(flat, dtype=np.float64).astype(target).reshape(shape)
        if kind == "int32":
            return np.array(flat, dtype=np.int64).astype(target).reshape(shape)
        return np.array(flat, dtype=target).reshape(shape)
    except ValueError as err:  # e.g. more than 64 dimensions
        raise _invalid(f"Cannot make a tensor of shape {_shape_str(shape)}: {err}") from None


def _fill_exact(value: Any, dtype: str) -> tuple[list[int], list[Any]]:
    """GetDenseTensorShape + FillTensorProto: shape from the first element at each level,
    then a depth-first walk checking structure and converting leaves, TF's first error."""
    shape: list[int] = []
    v = value
    while isinstance(v, list):
        shape.append(len(v))
        if not v:
            break
        v = v[0]
    rank = len(shape)
    leaf = _leaf_converter(dtype)
    out: list[Any] = []

    def walk(v: Any, level: int) -> None:
        if not isinstance(v, list):
            if level != rank:
                raise _invalid(f"JSON Value: {debug_string(v)} found at incorrect level: {level + 1} "
                               f"in the JSON DOM. Expected at level: {rank}")
            out.append(leaf(v))
            return
        if level >= rank:
            raise _invalid(f"Encountered list at unexpected level: {level} expected < {rank}")
        if len(v) != shape[level]:
            raise _invalid(f"Encountered list at unexpected size: {len(v)} at level: {level} "
                           f"expected size: {shape[level]}")
        for c in v:
            walk(c, level + 1)

    try:
        walk(value, 0)
    except RecursionError:
        raise _invalid("JSON value is nested too deeply") from None
    return shape, out


def _type_error(v: Any, dtype: str) -> ServingError:
    return _invalid(f"JSON Value: {debug_string(v)} Type: {json_type(v)} is not of expected type: "
                    f"{_tf_type_name(dtype)}")


def _leaf_converter(dtype: str) -> Any:
    info = _INPUT_DTYPES.get(dtype)
    kind = info[0] if info else None

    def convert(v: Any) -> Any:
        if isinstance(v, dict):
            if kind == "string":
                return _decode_b64_object(v)
            raise _type_error(v, dtype)
        if kind is None:
            raise ServingError(Code.UNIMPLEMENTED, f"Conversion of JSON Value: {debug_string(v)} "
                                                   f"to type: {_tf_type_name(dtype)}")
        t = type(v)
        if kind == "float":
            if t is float or t is int:
                return v
        elif kind == "string":
            if t is str:
                return _str_bytes(v)
        elif kind == "bool":
            if t is bool:
                return v
        elif t is int:
            lo, hi = _INT_RANGES[kind]
            if lo <= v <= hi:
                return v
        raise _type_error(v, dtype)

    return convert


def _str_bytes(s: str) -> bytes:
    """A JSON string's bytes. Non-UTF-8 bytes of the body come back as the surrogates
    `surrogateescape` made of them (both lenient parsers decode that way)."""
    try:
        return s.encode("utf-8")
    except UnicodeEncodeError:
        try:
            return s.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            return s.encode("utf-8", "surrogatepass")


_B64_WS = re.compile(r"[ \t\n\r\f\v]")
_B64_BODY = re.compile(r"[A-Za-z0-9+/]*={0,2}")


if sys.version_info >= (3, 11):
    def _a2b_base64(text: str) -> bytes:
        return binascii.a2b_base64(text, strict_mode=True)
else:  # no strict_mode before 3.11; the callers' pattern check admits only the alphabet
    def _a2b_base64(text: str) -> bytes:
        return binascii.a2b_base64(text)


def _b64decode(text: str) -> bytes | None:
    """absl::Base64Unescape: standard alphabet, padding optional, whitespace skipped."""
    s = _B64_WS.sub("", text)
    if not _B64_BODY.fullmatch(s):
        return None
    data = s.rstrip("=")
    pad = len(s) - len(data)
    if len(data) % 4 == 1 or (pad and (len(data) + pad) % 4):
        return None
    try:
        return _a2b_base64(data + "=" * (-len(data) % 4))
    except (binascii.Error, ValueError):
        return None


def _decode_b64_object(v: Any) -> bytes:
    if not _is_b64(v):
        raise _invalid(f"JSON Value: {debug_string(v)} not formatted correctly for base64 data")
    data = _b64decode(v["b64"])
    if data is None:
        raise _invalid("Unable to base64 decode")
    return data


# --------------------------------------------------------------------------- classify / regress


def parse_examples(doc: Any, method: str) -> tuple[str, list[bytes]]:
    """(signature name, one serialized tf.train.Example per example) for :classify /
    :regress. With `context`, each is context bytes + example bytes, as TF feeds an
    ExampleListWithContext. The missing-`examples` message names classify for both
    methods, as TF Serving's does."""
    if method not in ("classify", "regress"):
        raise _invalid(f"Unknown method: {method}")
    _require_object(doc)
    requested = _signature_name(doc)
    context = b""
    if "context" in doc:
        context = _make_example(doc["context"])
    if "examples" not in doc:
        raise _format_error(doc, "When method is classify, key 'examples' is expected and was not found")
    examples = doc["examples"]
    if isinstance(examples, RawArray):
        examples = examples.materialize()
    if not isinstance(examples, list):
        raise _format_error(doc, "Expecting 'examples' value to be an list/array")
    if not examples:
        raise _format_error(doc, "'examples' value is an empty array")
    return requested or DEFAULT_SIGNATURE, [context + _make_example(e) for e in examples]


def _make_example(value: Any) -> bytes:
    """MakeExampleFromJsonObject, serialized."""
    if isinstance(value, RawArray):
        value = value.materialize()
    if not isinstance(value, dict):
        raise _invalid(f"Example must be JSON object but got JSON {json_type(value)}")
    return serialize_example((name, *_feature_values(name, content)) for name, content in value.items())


def _feature_values(name: str, content: Any) -> tuple[str | None, list[Any]]:
    items = content if isinstance(content, list) else [content]
    kind: str | None = None
    out: list[Any] = []

    def want(k: str) -> None:
        nonlocal kind
        if kind is not None and kind != k:
            raise _invalid(f"Unexpected element type in feature: {name} expecting type: {kind}")
        kind = k

    for v in items:
        if v is None or isinstance(v, list) or (isinstance(v, dict) and not _is_b64(v)):
            raise _invalid(f"Feature: {name} has element with unexpected JSON type: {json_type(v)}")
        if v is True or v is False:
            want("int64")
            out.append(1 if v else 0)
        elif isinstance(v, dict):
            want("bytes")
            out.append(_decode_b64_object(v))
        elif isinstance(v, str):
            want("bytes")
            out.append(_str_bytes(v))
        elif is_double(v):
            want("float")
            out.append(float(np.float32(v)))
        else:
            want("int64")
            if v > 2**63 - 1:
                raise _invalid(f"Feature: {name} has uint64_t element. Only int64_t is supported.")
            out.append(v)
    return kind, out
