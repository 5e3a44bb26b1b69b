"""REST JSON (`request_json`, `response_json`): TF Serving's parsing leniency and messages,
row/columnar tensors and their errors, dtype rules, response text byte for byte,
classify/regress, status and metadata. Expected texts were checked against RapidJSON 1.1.0
(what TF Serving links) and printf/strtof (what WriteDecimal does)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

from pyserving.api.rest import _protojson, _raw_array, _writer, request_json, response_json
from pyserving.api.rest._rapidjson import debug_string
from pyserving.errors import Code, ServingError
from pyserving.platforms.base import Signature, TensorSpec

_NP = {"DT_FLOAT": np.float32, "DT_DOUBLE": np.float64, "DT_INT32": np.int32, "DT_INT16": np.int16,
       "DT_INT8": np.int8, "DT_UINT8": np.uint8, "DT_INT64": np.int64, "DT_UINT32": np.uint32,
       "DT_UINT64": np.uint64, "DT_BOOL": np.bool_, "DT_STRING": object, "DT_HALF": np.float16,
       "DT_BFLOAT16": ml_dtypes.bfloat16, "DT_COMPLEX64": np.complex64}


def spec(alias: str, dtype: str = "DT_FLOAT", shape=None) -> TensorSpec:
    np_dtype = _NP.get(dtype)
    return TensorSpec(alias, alias + ":0", dtype, None if np_dtype is None else np.dtype(np_dtype), shape)


def sig(inputs: dict[str, str] | None = None, outputs: dict[str, str] | None = None, name="serving_default"):
    inputs = {"x": "DT_FLOAT"} if inputs is None else inputs
    outputs = outputs or {"y": "DT_FLOAT"}
    return Signature(name, "tensorflow/serving/predict",
                     {k: spec(k, v) for k, v in inputs.items()}, {k: spec(k, v) for k, v in outputs.items()})


def predict(body: bytes | str | _raw_array.Chunks, signature: Signature | None = None) -> dict[str, np.ndarray]:
    if isinstance(body, str):
        body = body.encode()
    name, fmt, payload = request_json.parse_predict(request_json.parse_body(body))
    return request_json.predict_inputs(fmt, payload, signature or sig())


def error(fn, *args) -> ServingError:
    with pytest.raises(ServingError) as info:
        fn(*args)
    return info.value


# --------------------------------------------------------------------------- parse_body


def test_empty_body_is_the_document_is_empty():
    err = error(request_json.parse_body, b"")
    assert (err.code, err.message) == (Code.INVALID_ARGUMENT, "JSON Parse error: The document is empty")


@pytest.mark.parametrize("body, reason", [
    (b" \n ", "The document is empty. at offset: 3"),
    (b"}", "The document is empty. at offset: 0"),
    (b"instances = [1, 2]", "Invalid value. at offset: 0"),
    (b'{"a":1', "Missing a comma or '}' after an object member. at offset: 6"),
    (b'{"a":1,}', "Missing a name for object member. at offset: 7"),
    (b"{1:2}", "Missing a name for object member. at offset: 1"),
    (b'{"a" 1}', "Missing a colon after a name of object member. at offset: 5"),
    (b"[1,]", "Invalid value. at offset: 3"),
    (b"[1 2]", "Missing a comma or ']' after an array element. at offset: 3"),
    (b'{"a": [1, 2}', "Missing a comma or ']' after an array element. at offset: 11"),
    (b"[01]", "Missing a comma or ']' after an array element. at offset: 2"),
    (b"nul", "Invalid value. at offset: 3"),
    (b'"abc', "Missing a closing quotation mark in string. at offset: 4"),
    (b'"\\x"', "Invalid escape character in string. at offset: 1"),
    (b'"a\x01b"', "Invalid escape character in string. at offset: 2"),
    (b'"\\u12"', "Incorrect hex digit after \\u escape in string. at offset: 1"),
    (b'"\\ud800\\u0041"', "The surrogate pair in string is invalid. at offset: 1"),
    (b"[1.]", "Miss fraction part in number. at offset: 3"),
    (b"[1e+]", "Miss exponent in number. at offset: 4"),
    (b"0.", "Miss fraction part in number. at offset: 2"),
    (b"[-]", "Invalid value. at offset: 2"),
    (b"[1e400]", "Number too big to be stored in double. at offset: 1"),
    (b"[Infinit]", "Invalid value. at offset: 8"),
    (b"[Nan]", "Invalid value. at offset: 3"),
    (b"[1,\x002]", "Invalid value. at offset: 3"),
])
def test_parse_errors_match_rapidjson(body, reason):
    err = error(request_json.parse_body, body)
    assert (err.code, err.message) == (Code.INVALID_ARGUMENT, "JSON Parse error: " + reason)


def test_nan_infinity_and_trailing_garbage_are_accepted():
    doc = request_json.parse_body(b'{"instances": [NaN, Infinity, -Infinity, Inf, -Inf, -NaN]} trailing garbage')
    v = doc["instances"]
    assert np.isnan(v[0]) and v[1] == np.inf and v[2] == -np.inf and v[3] == np.inf and v[4] == -np.inf
    assert np.isnan(v[5])
    assert request_json.parse_body(b"\xef\xbb\xbf[1]\x00[") == [1]  # BOM skipped, stops at the value
    assert request_json.parse_body(b'"\\ud83d\\ude00"') == "\U0001F600"


def test_deeply_nested_documents_parse_without_recursion():
    body = b'{"instances": [1], "nested": ' + b"[" * 50000 + b"]" * 50000 + b"}"
    assert predict(body, sig({"x": "DT_INT32"}))["x"].tolist() == [1]
    body = b'{"signature_name": ' + b"[" * 50000 + b"]" * 50000 + b"}"
    err = error(request_json.parse_predict, request_json.parse_body(body))
    assert err.message.endswith("not formatted correctly. 'signature_name' key must be a string value.")


# --------------------------------------------------------------------------- parse_predict


def test_parse_predict_resolves_the_signature_name():
    assert request_json.parse_predict({"instances": [1]})[:2] == ("serving_default", "row")
    assert request_json.parse_predict({"instances": [1], "signature_name": ""})[0] == "serving_default"
    assert request_json.parse_predict({"inputs": [1], "signature_name": "foo"})[:2] == ("foo", "columnar")


@pytest.mark.parametrize("body, message", [
    (b"[1, 2]", "JSON Value: [1, 2] Is not object"),
    (b'"x"', 'JSON Value: "x" Is not object'),
    (b'{"signature_name": 100}',
     'JSON Value: {\n    "signature_name": 100\n} not formatted correctly. '
     "'signature_name' key must be a string value."),
])
def test_parse_predict_errors(body, message):
    err = error(request_json.parse_predict, request_json.parse_body(body))
    assert (err.code, err.message) == (Code.INVALID_ARGUMENT, message)


@pytest.mark.parametrize("body, message", [
    (b'{"foo": 1}', "Missing 'inputs' or 'instances' key"),
    (b'{"instances": [1], "inputs": [1]}',
     'JSON Value: {\n    "instances": [1],\n    "inputs": [1]\n} Not formatted correctly expecting only '
     "one of 'inputs' or 'instances' keys to exist "),
    (b'{"instances": 5}', "JSON Value: {\n    \"instances\": 5\n} Expecting 'instances' to be an list/array"),
    (b'{"instances": []}', "JSON Value: {\n    \"instances\": []\n} No values in 'instances' array"),
])
def test_request_shape_errors_come_after_the_signature_lookup(body, message):
    name, fmt, payload = request_json.parse_predict(request_json.parse_body(body))  # does not raise
    err = error(request_json.predict_inputs, fmt, payload, sig())
    assert (err.code, err.message) == (Code.INVALID_ARGUMENT, message)


def test_signature_without_inputs():
    empty = Signature("foo", "m", {}, {"y": spec("y")})
    for body, expected in ((b'{"instances": [1]}', "DEFAULT"), (b'{"instances": [1], "signature_name": "foo"}', "foo")):
        name, fmt, payload = request_json.parse_predict(request_json.parse_body(body))
        err = error(request_json.predict_inputs, fmt, payload, empty)
        assert err.message == f"Failed to get input map for signature: {expected}"


def test_quoted_json_is_cut_after_256_bytes():
    body = b'{"instances": [' + b",".join(str(i).encode() for i in range(100)) + b'], "inputs": 1}'
    name, fmt, payload = request_json.parse_predict(request_json.parse_body(body))
    message = error(request_json.predict_inputs, fmt, payload, sig()).message
    assert message == ("JSON Value: {\n    \"instances\": [" + ", ".join(str(i) for i in range(62))
                       + " Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist ")


def test_debug_string_stops_at_nan():
    assert debug_string([1.5, float("nan"), 2]) == "[1.5, "
    assert debug_string({"a": [1e21, 1e-7, 0.1, -0.0, 2**64 - 1, 2**64]}) == (
        '{\n    "a": [1e21, 1e-7, 0.1, -0.0, 18446744073709551615, 18446744073709552000.0]\n}')


# --------------------------------------------------------------------------- row format


@pytest.mark.parametrize("body, inputs, expected", [
    ('{"instances": [1.0, 2.0, 5.0]}', {"x": "DT_FLOAT"}, {"x": np.array([1, 2, 5], np.float32)}),
    ('{"instances": [[1,2],[3,4],[5,6]]}', {"x": "DT_INT32"}, {"x": np.array([[1, 2], [3, 4], [5, 6]], np.int32)}),
    ('{"instances": [[[1,2],[3,4]]]}', {"x": "DT_INT64"}, {"x": np.array([[[1, 2], [3, 4]]], np.int64)}),
    ('{"instances": [{"x": 1}, {"x": 2}]}', {"x": "DT_DOUBLE"}, {"x": np.array([1, 2], np.float64)}),
    ('{"instances": [{"a": [1, 2], "b": "s"}, {"b": "t", "a": [3, 4]}]}', {"a": "DT_INT32", "b": "DT_STRING"},
     {"a": np.array([[1, 2], [3, 4]], np.int32), "b": np.array([b"s", b"t"], object)}),
    ('{"instances": [{"b64": "aGVsbG8="}, "w\\u00f6rld"]}', {"x": "DT_STRING"},
     {"x": np.array([b"hello", "w\u00f6rld".encode()], object)}),
    ('{"instances": [[], []]}', {"x": "DT_FLOAT"}, {"x": np.zeros((2, 0), np.float32)}),
    ('{"instances": [true, false]}', {"x": "DT_BOOL"}, {"x": np.array([True, False])}),
])
def test_row_format(body, inputs, expected):
    got = predict(body, sig(inputs))
    assert got.keys() == expected.keys()
    for name, want in expected.items():
        assert got[name].dtype == want.dtype and got[name].shape == want.shape
        assert got[name].tolist() == want.tolist()


E0 = "Failed to process element: 0 of 'instances' list. Error: "
E1 = "Failed to process element: 1 of 'instances' list. Error: "
E2 = "Failed to process element: 2 of 'instances' list. Error: "


@pytest.mark.parametrize("body, inputs, message", [
    ('{"instances": [1, 2]}', {"a": "DT_INT32", "b": "DT_INT32"},
     "instances is a plain list, but expecting list of objects as multiple input tensors required as per "
     "tensorinfo_map"),
    ('{"instances": [{"a": 1, "b": 2}, {"a": 1}]}', {"a": "DT_INT32", "b": "DT_INT32"},
     "Failed to process element: 1 of 'instances' list. JSON object: {\n    \"a\": 1\n} keys must be equal to: a,b"),
    ('{"instances": [{"a": 1, "c": 2}]}', {"a": "DT_INT32", "b": "DT_INT32"},
     "Failed to process element: 0 key: c of 'instances' list. Error: INVALID_ARGUMENT: "
     "JSON object: does not have named input: c"),
    ('{"instances": [{"x": 1}, [1]]}', {"x": "DT_INT32"}, "Expecting object but got list at item 1 of input list"),
    ('{"instances": [[1], {"x": [1]}]}', {"x": "DT_INT32"},
     "Expecting value/list but got object at item 1 of input list"),
    ('{"instances": [[1,2],[3,4],[5,6,7]]}', {"x": "DT_INT32"},
     E2 + "INVALID_ARGUMENT: Expecting tensor size: 2 but got: 3"),
    ('{"instances": [[1,2],[3,4],[[5,6]]]}', {"x": "DT_INT32"},
     E2 + "INVALID_ARGUMENT: Expecting shape [2] but got: [1,2]"),
    ('{"instances": [1, [1]]}', {"x": "DT_INT32"}, E1 + "INVALID_ARGUMENT: Expecting shape [] but got: [1]"),
    ('{"instances": [[1,2],["a", "b"]]}', {"x": "DT_INT32"},
     E1 + 'INVALID_ARGUMENT: JSON Value: "a" Type: String is not of expected type: int32'),
    ('{"instances": [[[1, 2], [3]]]}', {"x": "DT_FLOAT"},
     E0 + "INVALID_ARGUMENT: Encountered list at unexpected size: 1 at level: 1 expected size: 2"),
    ('{"instances": [[1, [2]]]}', {"x": "DT_FLOAT"},
     E0 + "INVALID_ARGUMENT: Encountered list at unexpected level: 1 expected < 1"),
    ('{"instances": [[[1], 2]]}', {"x": "DT_FLOAT"},
     E0 + "INVALID_ARGUMENT: JSON Value: 2 found at incorrect level: 2 in the JSON DOM. Expected at level: 2"),
    ('{"instances": [[1.5], [true]]}', {"x": "DT_FLOAT"},
     E1 + "INVALID_ARGUMENT: JSON Value: true Type: True is not of expected type: float"),
    ('{"instances": [1.5]}', {"x": "DT_HALF"},
     E0 + "UNIMPLEMENTED: Conversion of JSON Value: 1.5 to type: half"),
    ('{"instances": [["a"], [{"x": 1}]]}', {"x": "DT_STRING"},
     E1 + 'INVALID_ARGUMENT: JSON Value: {\n    "x": 1\n} not formatted correctly for base64 data'),
    ('{"instances": [{"b64": "a$=="}]}', {"x": "DT_STRING"}, E0 + "INVALID_ARGUMENT: Unable to base64 decode"),
])
def test_row_format_errors(body, inputs, message):
    err = error(predict, body, sig(inputs))
    assert (err.code, err.message) == (Code.INVALID_ARGUMENT, message)


# --------------------------------------------------------------------------- columnar format


@pytest.mark.parametrize("body, inputs, expected", [
    ('{"inputs": [1.0, 2.0]}', {"x": "DT_FLOAT"}, {"x": np.array([1, 2], np.float32)}),
    ('{"inputs": 7}', {"x": "DT_INT32"}, {"x": np.array(7, np.int32)}),
    ('{"inputs": {"b64": "AAE="}}', {"x": "DT_STRING"}, {"x": np.array(b"\x00\x01", object)}),
    ('{"inputs": {"a": [1, 2, 3], "b": [[true]], "extra": "ignored"}}', {"a": "DT_UINT8", "b": "DT_BOOL"},
     {"a": np.array([1, 2, 3], np.uint8), "b": np.array([[True]])}),
    ('{"inputs": []}', {"x": "DT_FLOAT"}, {"x": np.zeros((0,), np.float32)}),
    ('{"inputs": [[], []]}', {"x": "DT_INT64"}, {"x": np.zeros((2, 0), np.int64)}),
])
def test_columnar_format(body, inputs, expected):
    got = predict(body, sig(inputs))
    assert got.keys() == expected.keys()
    for name, want in expected.items():
        assert got[name].dtype == want.dtype and got[name].shape == want.shape
        assert got[name].tolist() == want.tolist()


@pytest.mark.parametrize("body, inputs, message", [
    ('{"inputs": [1, 2]}', {"a": "DT_INT32", "b": "DT_INT32"},
     "inputs is a plain value/list, but expecting an object as multiple input tensors required as per "
     "tensorinfo_map"),
    ('{"inputs": {"a": [1]}}', {"a": "DT_INT32", "b": "DT_INT32"}, "Missing named input: b in 'inputs' object."),
    ('{"inputs": {"a": [1]}}', {"x": "DT_INT32"}, "Missing named input: x in 'inputs' object."),
    ('{"inputs": [[1, 2], [3]]}', {"x": "DT_FLOAT"},
     "Encountered list at unexpected size: 1 at level: 1 expected size: 2"),
])
def test_columnar_format_errors(body, inputs, message):
    err = error(predict, body, sig(inputs))
    assert (err.code, err.message) == (Code.INVALID_ARGUMENT, message)


# --------------------------------------------------------------------------- dtype rules


@pytest.mark.parametrize("dtype, value, expected", [
    ("DT_FLOAT", "[1, 2.5, NaN, -Infinity]", [1.0, 2.5, float("nan"), float("-inf")]),
    ("DT_DOUBLE", "[0.1, 16777217]", [0.1, 16777217.0]),
    ("DT_INT32", "[-2147483648, 2147483647]", [-2147483648, 2147483647]),
    ("DT_INT8", "[300, -129]", [44, 127]),  # int_val, then a C cast: no range check
    ("DT_UINT8", "[256, -1]", [0, 255]),
    ("DT_INT16", "[40000]", [-25536]),
    ("DT_INT64", "[9223372036854775807, -9223372036854775808]", [2**63 - 1, -2**63]),
    ("DT_UINT32", "[4294967295, 0]", [4294967295, 0]),
    ("DT_UINT64", "[18446744073709551615]", [2**64 - 1]),
    ("DT_BOOL", "[true, false]", [True, False]),
    ("DT_STRING", '["h\\u00e9", {"b64": "/w=="}]', ["h\u00e9".encode(), b"\xff"]),
])
def test_accepted_json_per_dtype(dtype, value, expected):
    got = predict('{"inputs": ' + value + "}", sig({"x": dtype}))["x"]
    assert got.dtype == np.dtype(_NP[dtype])
    assert np.array_equal(got, np.array(expected, dtype=_NP[dtype]), equal_nan=dtype == "DT_FLOAT") if \
        dtype != "DT_STRING" else got.tolist() == expected


@pytest.mark.parametrize("dtype, value, message", [
    ("DT_INT32", "[1.0]", "JSON Value: 1.0 Type: Number is not of expected type: int32"),
    ("DT_INT32", "[2147483648]", "JSON Value: 2147483648 Type: Number is not of expected type: int32"),
    ("DT_INT32", "[true]", "JSON Value: true Type: True is not of expected type: int32"),
    ("DT_INT64", "[1, 9223372036854775808]",
     "JSON Value: 9223372036854775808 Type: Number is not of expected type: int64"),
    ("DT_INT64", "[1e3]", "JSON Value: 1000.0 Type: Number is not of expected type: int64"),
    ("DT_UINT32", "[-1]", "JSON Value: -1 Type: Number is not of expected type: uint32"),
    ("DT_UINT64", "[-1]", "JSON Value: -1 Type: Number is not of expected type: uint64"),
    ("DT_BOOL", "[0]", "JSON Value: 0 Type: Number is not of expected type: bool"),
    ("DT_BOOL", '["true"]', 'JSON Value: "true" Type: String is not of expected type: bool'),
    ("DT_FLOAT", '[1, "1"]', 'JSON Value: "1" Type: String is not of expected type: float'),
    ("DT_FLOAT", "[1, null]", "JSON Value: null Type: Null is not of expected type: float"),
    ("DT_FLOAT", "[1.5, false]", "JSON Value: false Type: False is not of expected type: float"),
    ("DT_FLOAT", '{"b64": "AA=="}', 'JSON Value: {\n    "b64": "AA=="\n} Type: Object is not of expected type: float'),
    ("DT_DOUBLE", '[{"a": [1, 2]}]',
     'JSON Value: {\n    "a": [1, 2]\n} Type: Object is not of expected type: double'),
    ("DT_STRING", "[1]", "JSON Value: 1 Type: Number is not of expected type: string"),
])
def test_rejected_json_per_dtype(dtype, value, message):
    err = error(predict, '{"inputs": ' + value + "}", sig({"x": dtype}))
    assert (err.code, err.message) == (Code.INVALID_ARGUMENT, message)


@pytest.mark.parametrize("dtype, name", [("DT_HALF", "half"), ("DT_BFLOAT16", "bfloat16"),
                                         ("DT_COMPLEX64", "complex64"), ("DT_UINT16", "uint16")])
def test_unsupported_input_dtypes_are_unimplemented(dtype, name):
    err = error(predict, '{"inputs": [[1.0, 2]]}', sig({"x": dtype}))
    assert (err.code, err.message) == (Code.UNIMPLEMENTED, f"Conversion of JSON Value: 1.0 to type: {name}")


# --------------------------------------------------------------------------- big numeric arrays


def _big_body(values: np.ndarray, sep=(", ", ": ")) -> bytes:
    return json.dumps({"signature_name": "s", "instances": values.tolist()}, separators=sep).encode()


def test_large_numeric_array_takes_the_raw_path_and_matches_the_generic_one(monkeypatch):
    values = np.random.default_rng(1).random((400, 7, 5, 1)).astype(np.float32).astype(np.float64)
    body = _big_body(values)
    assert len(body) > request_json._RAW_MIN_BYTES
    doc = request_json.parse_body(body)
    assert isinstance(doc["instances"], _raw_array.RawArray)
    got = predict(body, sig({"x": "DT_FLOAT"}))["x"]
    assert got.shape == (400, 7, 5, 1) and np.array_equal(got, values.astype(np.float32))
    ints = predict(_big_body(np.arange(40000).reshape(100, 400)), sig({"x": "DT_INT32"}))["x"]
    assert ints.dtype == np.int32 and ints[99, 399] == 39999


def _generic_only(monkeypatch):
    monkeypatch.setattr(request_json, "_RAW_MIN_BYTES", 1 << 62)
    monkeypatch.setattr(request_json, "_RAW_MIN_BRACKETS", 1 << 62)


def _split(body: bytes, size: int, seed: int = 0) -> _raw_array.Chunks:
    """`body` as the chunks a server might have received: random sizes around `size`, some
    empty."""
    rng = np.random.default_rng(seed)
    parts, at = [], 0
    while at < len(body):
        n = int(rng.integers(0, 2 * size + 1))
        parts.append(body[at:at + n])
        at += n
    return _raw_array.Chunks(parts)


def _outcome(body: bytes | _raw_array.Chunks, signature: Signature):
    try:
        return {k: (v.dtype.str, v.shape, v.tobytes()) for k, v in predict(body, signature).items()}
    except ServingError as err:
        return err.code, err.message


@pytest.mark.parametrize("corrupt", [
    lambda s: s.replace("], [", "] [", 1),          # missing comma
    lambda s: s[:len(s) // 2] + s[len(s) // 2:].replace("], [", ",] [", 1),  # same bytes, other order
    lambda s: s.replace("[[", "[5[", 1),            # number outside an element slot
    lambda s: s.replace(", ", ", [1], ", 1),        # ragged
    lambda s: s.replace("0.", "true", 1),           # a bool among floats
    lambda s: s.replace("0.", "NaN, 0.", 1),        # NaN (generic path) and ragged
    lambda s: s[:-1] + "]]}",                       # extra bracket
    lambda s: s.replace("0.", "1e400, 0.", 1),      # out of double range, and ragged
    lambda s: s.replace("0.", "-", 1),              # not a number
    lambda s: s.replace("0.", "0..", 1),            # not a number either
])
def test_large_arrays_fail_exactly_like_the_generic_path(monkeypatch, corrupt):
    values = np.round(np.random.default_rng(2).random((1500, 40)), 3)
    body = corrupt(_big_body(values).decode()).encode()
    raw = _outcome(body, sig({"x": "DT_FLOAT"}))  # checked whole
    _pieces_everywhere(monkeypatch)
    assert _outcome(body, sig({"x": "DT_FLOAT"})) == raw  # and in pieces
    for size in (40, 500, 5000):  # and in pieces from the chunks the body arrived in
        assert _outcome(_split(body, size), sig({"x": "DT_FLOAT"})) == raw
    _generic_only(monkeypatch)
    assert raw == _outcome(body, sig({"x": "DT_FLOAT"}))


# One MNIST-like image is what most clients send: it takes the raw path too.
_IMAGE = np.round(np.random.default_rng(4).random((1, 28, 28, 1)), 4)


@pytest.mark.parametrize("body, dtype", [
    (json.dumps({"instances": _IMAGE.tolist()}), "DT_FLOAT"),
    (json.dumps({"instances": _IMAGE.tolist(), "signature_name": "serving_default"}), "DT_FLOAT"),
    (json.dumps({"signature_name": "serving_default", "inputs": _IMAGE.tolist()}, indent=2), "DT_FLOAT"),
    (json.dumps({"instances": (_IMAGE * 255).astype(int).tolist()}), "DT_UINT8"),
    (json.dumps({"instances": (_IMAGE * 255).astype(int).tolist()}), "DT_FLOAT"),
    (json.dumps({"instances": (_IMAGE * 255).astype(int).tolist()}), "DT_INT8"),  # C-cast wrap
    (json.dumps({"instances": (_IMAGE * 1e12).astype(np.int64).tolist()}), "DT_INT32"),  # out of range
    (json.dumps({"instances": (_IMAGE - 0.5).tolist()}), "DT_DOUBLE"),
    (json.dumps({"instances": [[[[2**63 + 5]] * 4] * 8]}), "DT_UINT64"),  # beyond int64
    (json.dumps({"instances": [[[[2**70]] * 4] * 8]}), "DT_FLOAT"),  # beyond uint64
    (json.dumps({"instances": [[[[1]] * 4] * 8, [[[]] * 4] * 8]}), "DT_FLOAT"),  # [] where [n] is
    (json.dumps({"instances": [[[[1]] * 4] * 8, [[[]] + [[1, 2]] + [[3]] * 2] * 8]}), "DT_FLOAT"),  # ragged, same count
    (json.dumps({"instances": [[[[-0.0, 1e-320, 1.5e308]]] * 40]}), "DT_DOUBLE"),
    (json.dumps({"instances": [[[[1.0]] * 40]], "instances": [[[[2.0]] * 40]]})
     .replace('"instances": [[[[2', '"instances": [[[[2', 1), "DT_FLOAT"),
    ('{"signature_name": "\\"instances\\": [[[1]]]", "instances": ' + json.dumps(_IMAGE.tolist()) + "}", "DT_FLOAT"),
    ('{"meta": {"instances": [[[[1]]]]}, "instances": ' + json.dumps(_IMAGE.tolist()) + "}", "DT_FLOAT"),
    ('{"instances": ' + json.dumps(_IMAGE.tolist()) + ', "instances": [[[[7]]]]}', "DT_FLOAT"),  # duplicate key
    ('{"instances": ' + json.dumps(_IMAGE.tolist()) + "} trailing", "DT_FLOAT"),
    ('{"instances": ' + json.dumps(_IMAGE.tolist())[:-1] + "}", "DT_FLOAT"),  # unbalanced
])
def test_small_and_tricky_bodies_agree_with_the_generic_path(monkeypatch, body, dtype):
    body = body.encode()
    assert body.count(b"[") >= request_json._RAW_MIN_BRACKETS
    raw = _outcome(body, sig({"x": dtype}))
    _generic_only(monkeypatch)
    assert raw == _outcome(body, sig({"x": dtype}))


def test_one_image_is_parsed_without_lists():
    doc = request_json.parse_body(json.dumps({"instances": _IMAGE.tolist()}).encode())
    assert isinstance(doc["instances"], _raw_array.RawArray) and doc["instances"].shape == (1, 28, 28, 1)
    assert doc["instances"].flat.dtype == np.float64


# --------------------------------------------------------------------------- encode_predict


def encode(outputs, fmt, signature=None) -> bytes:
    return response_json.encode_predict({k: np.asarray(v) for k, v in outputs.items()}, fmt, signature)


def test_half_plus_two_examples():
    out = {"y": np.array([2.5, 3.0, 4.5], np.float32)}
    assert encode(out, "row") == b'{\n    "predictions": [2.5, 3.0, 4.5\n    ]\n}'
    out = {"y": np.array([3.5, 4.0], np.float32)}
    assert encode(out, "columnar") == b'{\n    "outputs": [\n        3.5,\n        4.0\n    ]\n}'
    assert encode({"y": np.array([[0, 0, 1, 2]])}, "row") == b'{\n    "predictions": [[0, 0, 1, 2]\n    ]\n}'


@pytest.mark.parametrize("value, dtype, text", [
    (0.1, np.float32, "0.1"), (3.0, np.float32, "3.0"), (1e6, np.float32, "1e+06"),
    (1e-7, np.float32, "1e-07"), (123456789.0, np.float32, "123456792.0"), (999999.0, np.float32, "999999.0"),
    (999999.5, np.float32, "999999.5"), (9e6, np.float32, "9e+06"), (0.0003, np.float32, "0.0003"),
    (3e-5, np.float32, "3e-05"), (555557.5, np.float32, "555557.5"), (-0.0, np.float32, "-0.0"),
    (1.0000001, np.float32, "1.00000012"), (16777216, np.float32, "16777216.0"),
    (3.4028234663852886e38, np.float32, "3.40282347e+38"), (1.401298464324817e-45, np.float32, "1.4013e-45"),
    (0.30194199085235596, np.float32, "0.301942"), (1234567, np.float32, "1234567.0"),
    (float("nan"), np.float32, "NaN"), (float("inf"), np.float32, "Infinity"), (-np.inf, np.float32, "-Infinity"),
    (0.1, np.float64, "0.1"), (1 / 3, np.float64, "0.33333333333333331"), (1e16, np.float64, "1e+16"),
    (123456789012345678.0, np.float64, "1.2345678901234568e+17"), (1e-310, np.float64, "1e-310"),
    (0.30194199085235596, np.float64, "0.30194199085235596"), (12345678.9, np.float64, "12345678.9"),
    (float("nan"), np.float64, "NaN"),
])
def test_float_formatting(value, dtype, text):
    assert encode({"y": np.array([value], dtype)}, "row") == ('{\n    "predictions": [' + text + "\n    ]\n}").encode()


def test_float_formatting_is_consistent_with_printf_on_random_floats():
    rng = np.random.default_rng(3)
    values = np.concatenate([rng.random(2000), rng.standard_normal(2000) * 10.0 ** rng.integers(-40, 38, 2000)])
    for dtype, long in ((np.float32, "%.9g"), (np.float64, "%.17g")):
        arr = values.astype(dtype)
        got = encode({"y": arr}, "row").decode()[len('{\n    "predictions": ['):-len("\n    ]\n}")].split(", ")
        for x, text in zip(arr.tolist(), got):
            short = "%g" % x
            want = short if dtype(float(short)) == dtype(x) else long % x
            want = want + ".0" if "." not in want and "e" not in want else want
            assert text == want, x


def test_row_and_columnar_layouts_with_several_outputs():
    out = {"a": np.array([[1.5, 2.0], [3.0, 4.0]], np.float32), "b_bytes": np.array([b"hi", b"yo"], object)}
    assert encode(out, "row").decode() == (
        '{\n    "predictions": [\n        {\n            "a": [1.5, 2.0],\n            "b_bytes": {\n'
        '                "b64": "aGk="\n            }\n        },\n        {\n            "a": [3.0, 4.0],\n'
        '            "b_bytes": {\n                "b64": "eW8="\n            }\n        }\n    ]\n}')
    out = {"a": np.array([[1, 2]], np.int64), "b": np.array(True)}
    assert encode(out, "columnar").decode() == (
        '{\n    "outputs": {\n        "a": [\n            [\n                1,\n                2\n'
        '            ]\n        ],\n        "b": true\n    }\n}')


def test_rank0_and_empty_outputs():
    assert encode({"y": np.float32(3.5)}, "columnar") == b'{\n    "outputs": 3.5\n}'
    assert encode({"y": np.zeros((0, 3), np.float32)}, "row") == b'{\n    "predictions": []\n}'
    assert encode({"y": np.zeros((2, 0), np.int32)}, "row") == b'{\n    "predictions": [[], []\n    ]\n}'
    assert encode({"y": np.zeros((2, 0), np.int32)}, "columnar") == (
        b'{\n    "outputs": [\n        [],\n        []\n    ]\n}')


def test_strings_bools_and_wide_integers():
    out = {"s": np.array([b"a\"b\\c\x01\x1f/\n", "\u00e9".encode(), b"\xff"], object)}
    assert encode(out, "row").decode() == '{\n    "predictions": ["a\\"b\\\\c\\u0001\\u001F/\\n", "\u00e9", "\ufffd"\n    ]\n}'
    out = {"i": np.array([2**63 - 1, -2**63], np.int64)}
    assert encode(out, "row") == b'{\n    "predictions": [9223372036854775807, -9223372036854775808\n    ]\n}'
    out = {"u": np.array([2**64 - 1], np.uint64), "b": np.array([False])}
    assert encode(out, "row") == (b'{\n    "predictions": [\n        {\n            "u": 18446744073709551615,\n'
                                  b'            "b": false\n        }\n    ]\n}')


def test_half_and_bfloat16_outputs_are_written_as_float32():
    out = {"h": np.array([0.5, 1.25], np.float16), "b": np.array([2.0, 0.75], ml_dtypes.bfloat16)}
    assert json.loads(encode(out, "columnar")) == {"outputs": {"h": [0.5, 1.25], "b": [2.0, 0.75]}}


@pytest.mark.parametrize("outputs, fmt, message", [
    ({}, "row", "Cannot convert empty tensor map to JSON"),
    ({"y": np.float32(1)}, "row", "Tensor name: y has no shape information "),
    ({"a": np.zeros(2), "b": np.zeros(3)}, "row", "Tensor name: b has inconsistent batch size: 3 expecting: 2"),
    ({"c": np.zeros(2, np.complex64)}, "columnar", "Failed to write JSON value for tensor type: complex64"),
])
def test_encode_predict_errors(outputs, fmt, message):
    err = error(response_json.encode_predict, outputs, fmt, None)
    assert (err.code, err.message) == (Code.INVALID_ARGUMENT, message)


def test_encode_error():
    assert response_json.encode_error('Servable not found for request: Latest(half)') == (
        b'{\n    "error": "Servable not found for request: Latest(half)"\n}')
    assert response_json.encode_error('bad "x"\n\t<>') == b'{\n    "error": "bad \\"x\\"\\n\\t<>"\n}'


# --------------------------------------------------------------------------- classify / regress


def _examples(body: str, method="classify"):
    from tensorflow.core.example import example_pb2

    name, serialized = request_json.parse_examples(request_json.parse_body(body.encode()), method)
    out = []
    for s in serialized:
        e = example_pb2.Example()
        e.ParseFromString(s)
        out.append({k: (f.WhichOneof("kind"), list(getattr(f, f.WhichOneof("kind")).value) if f.WhichOneof("kind") else [])
                    for k, f in e.features.feature.items()})
    return name, out


def test_parse_examples_feature_kinds():
    name, ex = _examples('{"examples": [{"s": "a", "b": {"b64": "aGk="}, "f": [1.0, 2.5e1], "i": [1, -5],'
                         ' "t": [true, false], "e": []}]}')
    assert name == "serving_default"
    assert ex == [{"s": ("bytes_list", [b"a"]), "b": ("bytes_list", [b"hi"]), "f": ("float_list", [1.0, 25.0]),
                   "i": ("int64_list", [1, -5]), "t": ("int64_list", [1, 0]), "e": (None, [])}]


def test_parse_examples_merges_the_context_like_example_list_with_context():
    name, ex = _examples('{"signature_name": "regress_x_to_y", "context": {"c": "ctx", "x": 1},'
                         ' "examples": [{"x": 2.0}, {}]}', "regress")
    assert name == "regress_x_to_y"
    assert ex == [{"c": ("bytes_list", [b"ctx"]), "x": ("float_list", [2.0])},
                  {"c": ("bytes_list", [b"ctx"]), "x": ("int64_list", [1])}]
    ctx_only = request_json.parse_examples({"context": {"c": "ctx"}, "examples": [{}]}, "regress")[1][0]
    plain = request_json.parse_examples({"examples": [{"c": "ctx"}]}, "regress")[1][0]
    assert ctx_only == plain  # context bytes + (empty) example bytes


@pytest.mark.parametrize("body, message", [
    ('{"foo": 1}', "JSON Value: {\n    \"foo\": 1\n} When method is classify, key 'examples' is expected and was not found"),
    ('{"examples": 1}', "JSON Value: {\n    \"examples\": 1\n} Expecting 'examples' value to be an list/array"),
    ('{"examples": []}', "JSON Value: {\n    \"examples\": []\n} 'examples' value is an empty array"),
    ('{"examples": [1]}', "Example must be JSON object but got JSON Number"),
    ('{"context": [], "examples": [{}]}', "Example must be JSON object but got JSON Array"),
    ('{"examples": [{"x": null}]}', "Feature: x has element with unexpected JSON type: Null"),
    ('{"examples": [{"x": [[1]]}]}', "Feature: x has element with unexpected JSON type: Array"),
    ('{"examples": [{"x": {"a": 1}}]}', "Feature: x has element with unexpected JSON type: Object"),
    ('{"examples": [{"x": [1.0, 2]}]}', "Unexpected element type in feature: x expecting type: float"),
    ('{"examples": [{"x": [1, "a"]}]}', "Unexpected element type in feature: x expecting type: int64"),
    ('{"examples": [{"x": ["a", true]}]}', "Unexpected element type in feature: x expecting type: bytes"),
    ('{"examples": [{"x": 9223372036854775808}]}', "Feature: x has uint64_t element. Only int64_t is supported."),
    ('{"examples": [{"x": {"b64": "#"}}]}', "Unable to base64 decode"),
    ('{"signature_name": 1, "examples": [{}]}',
     "JSON Value: {\n    \"signature_name\": 1,\n    \"examples\": [{}]\n} not formatted correctly. "
     "'signature_name' key must be a string value."),
])
@pytest.mark.parametrize("method", ["classify", "regress"])
def test_parse_examples_errors(body, message, method):
    err = error(request_json.parse_examples, request_json.parse_body(body.encode()), method)
    assert (err.code, err.message) == (Code.INVALID_ARGUMENT, message)


def test_encode_classify_and_regress():
    assert response_json.encode_classify([[("", 12.0)]]) == b'{\n    "results": [[["", 12.0]]\n    ]\n}'
    assert response_json.encode_classify([[(b"a", 0.5), ("b", 0.1)], []]) == (
        b'{\n    "results": [[["a", 0.5], ["b", 0.1]], []\n    ]\n}')
    assert response_json.encode_regress([42.0]) == b'{\n    "results": [42.0]\n}'
    assert response_json.encode_regress([0.2, float("inf"), 1.0, -np.inf, np.nan]) == (
        b'{\n    "results": [0.2, Infinity, 1.0, -Infinity, NaN]\n}')
    assert error(response_json.encode_classify, []).message == "Cannot convert empty ClassificationResults to JSON"
    assert error(response_json.encode_regress, []).message == "Cannot convert empty RegressionResults to JSON"


# --------------------------------------------------------------------------- status / metadata


def test_encode_status():
    assert response_json.encode_status([(123, "AVAILABLE", "OK", "")]) == (
        b'{\n "model_version_status": [\n  {\n   "version": "123",\n   "state": "AVAILABLE",\n'
        b'   "status": {\n    "error_code": "OK",\n    "error_message": ""\n   }\n  }\n ]\n}\n')
    two = json.loads(response_json.encode_status([(2, "END", "UNKNOWN", "a <b> \"c\""), (1, "AVAILABLE", "OK", "")]))
    assert [v["version"] for v in two["model_version_status"]] == ["2", "1"]
    assert b'"a \\u003cb\\u003e \\"c\\""' in response_json.encode_status([(2, "END", "UNKNOWN", 'a <b> "c"')])


def test_status_strings_quoted_like_the_protobuf_writer():
    # the fast path for plain ASCII must agree with the character-by-character writer
    for cp in range(0x80):
        for text in (chr(cp), "model_" + chr(cp) + "_x"):
            assert _protojson.quote(text) == _protojson._quote_each(text), cp
    escaped = {'"': '\\"', "\\": "\\\\", "<": "\\u003c", ">": "\\u003e", "\n": "\\n", "\x7f": "\\u007f"}
    for ch, text in escaped.items():
        assert _protojson.quote(ch) == '"' + text + '"'
    assert _protojson.quote("mnist-2_v1.0 (a/b)") == '"mnist-2_v1.0 (a/b)"'


def test_encode_metadata_matches_tf_serving(testdata: Path):
    from google.protobuf import json_format
    from tensorflow.core.protobuf import saved_model_pb2
    from tensorflow_serving.apis import get_model_metadata_pb2

    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString((testdata / "saved_model_half_plus_two_cpu/00000123/saved_model.pb").read_bytes())
    sigmap = get_model_metadata_pb2.SignatureDefMap()
    for key, sd in saved.meta_graphs[0].signature_def.items():
        sigmap.signature_def[key].CopyFrom(sd)
    as_dict = json_format.MessageToDict(sigmap, preserving_proto_field_name=True,
                                        always_print_fields_with_no_presence=True)
    text = response_json.encode_metadata("default", 123, as_dict)
    assert json.loads(text) == json.loads((testdata / "half_plus_two_model_metadata.json").read_text())
    assert text.startswith(b'{\n"model_spec":{\n "name": "default",\n "signature_name": "",\n "version": "123"\n}\n,\n'
                           b'"metadata": {"signature_def": {\n "signature_def": {\n')
    assert text.endswith(b"\n }\n}\n}\n}\n")
    info = json.loads(text)["metadata"]["signature_def"]["signature_def"]["serving_default"]["inputs"]["x"]
    assert list(info) == ["dtype", "tensor_shape", "name"]  # TF's printer puts the set oneof last


# --------------------------------------------------------------------------- small tensors


def _tricky_values(dtype) -> np.ndarray:
    rng = np.random.default_rng(11)
    finfo = np.finfo(dtype)
    values = np.concatenate([
        rng.random(3000), rng.standard_normal(3000) * 10.0 ** rng.integers(-45, 39, 3000),
        rng.integers(-10**7, 10**7, 500), [0.0, -0.0, np.nan, np.inf, -np.inf, 1e6, 999999.5, 16777216.0],
        [float(finfo.max), float(finfo.tiny), float(finfo.smallest_subnormal), 3.4028235e38, 1e-45],
        np.round(rng.random(500), 6) * 10.0 ** rng.integers(-8, 8, 500),  # 6 digits: short form wins
    ])
    with np.errstate(over="ignore"):
        return values.astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_small_tensors_are_written_exactly_as_large_ones(monkeypatch, dtype):
    values = _tricky_values(dtype)
    large = _writer.float_tokens(values, dtype == np.float64)
    assert len(values) > _writer.SMALL
    small = [tok for i in range(0, len(values), 50)
             for tok in _writer.float_tokens(values[i:i + 50], dtype == np.float64)]
    assert small == large


@pytest.mark.parametrize("shape", [(1, 10), (3,), (2, 3, 4), (1, 1, 1), (4, 1, 2, 2), (1, 64)])
@pytest.mark.parametrize("fmt", ["row", "columnar"])
def test_small_layouts_match_the_array_layout(monkeypatch, shape, fmt):
    rng = np.random.default_rng(5)
    outputs = {"y": rng.random(shape).astype(np.float32)}
    two = {"a": rng.random(shape).astype(np.float32), "b": rng.integers(0, 9, shape)}
    small = encode(outputs, fmt), encode(two, fmt)
    monkeypatch.setattr(_writer, "SMALL", 0)
    assert small == (encode(outputs, fmt), encode(two, fmt))


def test_parsers_are_reused_and_big_ones_are_not_kept(monkeypatch):
    small_body = json.dumps({"instances": _IMAGE.tolist()}).encode()
    monkeypatch.setattr(_raw_array, "_pool", [])
    request_json.parse_body(small_body)
    parser = _raw_array._pool[-1]
    request_json.parse_body(small_body)
    assert _raw_array._pool == [parser]  # reused
    monkeypatch.setattr(_raw_array, "_POOLED_BYTES", len(small_body) // 2)  # now "big"
    request_json.parse_body(small_body)
    assert _raw_array._pool == []  # a parser that grew past the limit is not kept


def test_a_big_array_is_parsed_in_pieces_with_one_small_parser(monkeypatch):
    images = np.round(np.random.default_rng(6).random((300, 28, 28, 1)), 3)
    body = json.dumps({"instances": images.tolist()}).encode()
    monkeypatch.setattr(_raw_array, "_SPLIT_BYTES", 100_000)
    monkeypatch.setattr(_raw_array, "_PIECE", 30_000)
    monkeypatch.setattr(_raw_array, "_pool", [])
    parsed = []
    real = _raw_array._numbers
    monkeypatch.setattr(_raw_array, "_numbers", lambda p, text, i: parsed.append(len(text)) or real(p, text, i))
    doc = request_json.parse_body(body)
    assert doc["instances"].shape == (300, 28, 28, 1) and np.array_equal(doc["instances"].flat, images.ravel())
    assert len(parsed) > 40 and max(parsed) < 40_000  # pieces of whole images
    assert len(_raw_array._pool) == 1


def _pieces_everywhere(monkeypatch):
    monkeypatch.setattr(request_json, "_RAW_MIN_BYTES", 0)
    monkeypatch.setattr(_raw_array, "_SPLIT_BYTES", 1000)
    monkeypatch.setattr(_raw_array, "_PIECE", 97)


@pytest.mark.parametrize("values, dtype", [
    (np.arange(5000), "DT_INT64"),  # rank 1: pieces cut at commas
    (np.arange(5000) * 0.25, "DT_FLOAT"),
    (np.array([*range(3000), 2**63 + 1], dtype=object), "DT_UINT64"),  # beyond int64 in the last piece
    (np.array([*range(3000), 0.5, *range(2999)], dtype=object).reshape(-1, 8), "DT_DOUBLE"),  # ints, a float
    (np.array([*range(3000), 0.5, *range(2999)], dtype=object).reshape(-1, 8), "DT_INT32"),  # a float in ints
    (np.round(np.random.default_rng(7).random((40, 5, 3, 2)), 2), "DT_FLOAT"),
    (np.arange(40 * 200).reshape(40, 200), "DT_FLOAT"),  # elements bigger than a piece
])
@pytest.mark.parametrize("indent", [None, 2])
def test_pieces_agree_with_the_generic_path(monkeypatch, values, dtype, indent):
    body = json.dumps({"instances": values.tolist()}, indent=indent).encode()
    _pieces_everywhere(monkeypatch)
    raw = _outcome(body, sig({"x": dtype}))
    assert isinstance(request_json.parse_body(body)["instances"], _raw_array.RawArray) or dtype == "DT_UINT64"
    for size in (60, 700):
        chunks = _split(body, size, seed=size)
        assert _outcome(chunks, sig({"x": dtype})) == raw
        assert isinstance(request_json.parse_body(chunks)["instances"], _raw_array.RawArray) or dtype == "DT_UINT64"
    _generic_only(monkeypatch)
    assert raw == _outcome(body, sig({"x": dtype}))


def test_chunks_read_like_the_joined_body():
    body = bytes(np.random.default_rng(8).integers(0, 4, 3000).astype(np.uint8)) .translate(
        bytes.maketrans(bytes([0, 1, 2, 3]), b'a"]x'))
    for size in (1, 7, 100, 5000):
        chunks = _split(body, size, seed=size)
        assert len(chunks) == len(body) and chunks[:] == body
        for a in (0, 1, 99, 1500, 2999, 3000):
            assert chunks.find(b'"', a) == body.find(b'"', a)
            for b in (a, a + 1, a + 37, 3000):
                assert chunks[a:b] == body[a:b]
                assert chunks.rfind(b"]", a, b) == body.rfind(b"]", a, b)
                assert b"".join(chunks.views(a, b)) == body[a:b]


@pytest.mark.parametrize("chunked", [False, True])
def test_a_big_array_ending_in_a_comma_is_refused_wherever_the_pieces_fall(monkeypatch, chunked):
    _pieces_everywhere(monkeypatch)
    for n in range(290, 320):  # the last cut lands on the trailing comma for some n
        body = (json.dumps({"instances": np.arange(n * 4).reshape(-1, 4).tolist()})[:-2] + ",]}").encode()
        assert _raw_array.try_parse(_split(body, 300) if chunked else body) is None
    body = (json.dumps({"instances": list(range(1000, 1100))})[:-2] + " , ]}").encode()
    assert _raw_array.try_parse(body) is None
    assert _outcome(body, sig({"x": "DT_INT64"}))[0] == Code.INVALID_ARGUMENT


def test_chunked_bodies_fall_back_when_the_key_is_late_or_elements_are_huge(monkeypatch):
    _pieces_everywhere(monkeypatch)
    values = np.arange(40 * 300).reshape(40, 300)
    late = json.dumps({"signature_name": "x" * 70_000, "instances": values.tolist()}).encode()
    huge = json.dumps({"instances": values.tolist()}).encode()
    monkeypatch.setattr(_raw_array, "_CARRY_MAX", 500)  # elements (~1.5 kB) bigger than that
    for body in (late, huge):
        got = predict(_split(body, 100), sig({"x": "DT_INT64"}))["x"]
        assert np.array_equal(got, values)
    assert isinstance(request_json.parse_body(_split(huge, 100))["instances"], _raw_array.RawArray)
    # A declined chunked body (here: its key is past the first _HEAD bytes) is joined and
    # decided by the generic path, without a second raw attempt.
    calls = []
    real = request_json.try_parse
    monkeypatch.setattr(request_json, "try_parse", lambda b: calls.append(type(b)) or real(b))
    assert isinstance(request_json.parse_body(_split(late, 100))["instances"], list)
    assert calls == [_raw_array.Chunks]
