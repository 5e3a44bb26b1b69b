"""The Open Inference Protocol's tensor codec (api/open_inference.py), without a server."""

from __future__ import annotations

import struct

import ml_dtypes
import numpy as np
import pytest

from pyserving.api import open_inference as oip
from pyserving.errors import Code, ServingError
from pyserving.platforms.base import Signature, TensorSpec


def spec(alias: str, dtype: str, np_dtype, shape) -> TensorSpec:
    return TensorSpec(alias, f"{alias}:0", dtype, np.dtype(np_dtype) if np_dtype is not None else None, shape)


SIGNATURE = Signature(
    "serving_default", "tensorflow/serving/predict",
    {"a": spec("a", "DT_FLOAT", np.float32, (-1, 2)), "s": spec("s", "DT_STRING", object, None)},
    {"y": spec("y", "DT_HALF", np.float16, ()), "z": spec("z", "DT_BFLOAT16", ml_dtypes.bfloat16, (3,))},
)


def invalid(fn, *args) -> str:
    with pytest.raises(ServingError) as err:
        fn(*args)
    assert err.value.code == Code.INVALID_ARGUMENT
    return err.value.message


def test_datatypes_of_tf_dtypes():
    assert [oip.datatype_of(np.dtype(t)) for t in (np.float32, np.float16, np.int8, np.uint64, np.bool_)] == \
        ["FP32", "FP16", "INT8", "UINT64", "BOOL"]
    assert oip.datatype_of(np.dtype(ml_dtypes.bfloat16)) == "BF16"
    assert oip.datatype_of(np.dtype(object)) == oip.datatype_of(np.dtype("S3")) == "BYTES"
    assert oip.datatype_of(np.dtype(np.complex64), "DT_COMPLEX64") == "COMPLEX64"
    assert oip.datatype_of(None, "DT_RESOURCE") == "RESOURCE"


def test_metadata_shows_unknown_dimensions_and_rank_as_minus_one():
    assert oip.tensor_metadata(SIGNATURE.inputs) == [
        {"name": "a", "datatype": "FP32", "shape": [-1, 2]}, {"name": "s", "datatype": "BYTES", "shape": [-1]}]
    assert oip.tensor_metadata(SIGNATURE.outputs)[0] == {"name": "y", "datatype": "FP16", "shape": []}


@pytest.mark.parametrize("text,expected", [
    ("", (None, None)), ("7", (7, None)), ("007", (7, None)), ("stable", (None, "stable")),
    ("٣", (None, "٣")),  # a non-ASCII digit is a label, not a version
])
def test_versions_are_numbers_or_labels(text, expected):
    assert oip.parse_version(text) == expected


def test_a_version_past_int64_is_refused():
    assert "larger than int64" in invalid(oip.parse_version, "9" * 30)


def test_raw_bytes_become_a_view_of_the_shape():
    data = np.arange(6, dtype=np.float32)
    raw = memoryview(data.tobytes())
    out = oip.from_raw("a", "FP32", [3, 2], raw)
    assert out.shape == (3, 2) and np.array_equal(out.reshape(-1), data)
    assert not out.flags.owndata  # no copy


def test_unaligned_raw_bytes_are_copied():
    buffer = b"\0" + np.arange(4, dtype=np.float32).tobytes()
    out = oip.from_raw("a", "FP32", [4], memoryview(buffer)[1:])
    assert out.flags.aligned and out.tolist() == [0.0, 1.0, 2.0, 3.0]


@pytest.mark.parametrize("datatype", ["FP16", "BF16", "BOOL", "UINT16", "INT64"])
def test_raw_bytes_of_every_width(datatype):
    values = np.array([1, 0, 1], dtype=oip.DATATYPES[datatype])
    assert np.array_equal(oip.from_raw("t", datatype, [3], values.tobytes()), values)


def test_raw_size_must_match_the_shape_before_anything_is_allocated():
    assert "has 8 bytes of data, but shape [3] of FP32 needs 12" in invalid(oip.from_raw, "a", "FP32", [3], b"\0" * 8)
    huge = [1 << 40, 1 << 40, 1 << 40]
    assert "needs" in invalid(oip.from_raw, "a", "FP32", huge, b"\0" * 4)


def test_raw_bytes_elements():
    words = [b"abc", b"", b"\xff\x00"]
    raw = b"".join(struct.pack("<I", len(w)) + w for w in words)
    out = oip.from_raw("s", "BYTES", [3], raw)
    assert out.dtype == object and out.tolist() == words
    assert oip.to_raw(out) == raw


@pytest.mark.parametrize("raw,shape,message", [
    (struct.pack("<I", 5) + b"ab", [1], "past the end"),
    (b"\0\0", [1], "truncated"),
    (struct.pack("<I", 0) * 3, [2], "more BYTES elements"),
    (struct.pack("<I", 0), [2], "1 BYTES elements, but its shape needs 2"),
    (struct.pack("<I", 0) * 3, [1 << 62], "3 BYTES elements"),
])
def test_bad_bytes_elements(raw, shape, message):
    assert message in invalid(oip.from_raw, "s", "BYTES", shape, raw)


@pytest.mark.parametrize("values,datatype,expected", [
    ([[1, 2], [3, 4]], "INT32", np.array([[1, 2], [3, 4]], np.int32)),
    ([1, 2, 3, 4], "INT8", np.array([[1, 2], [3, 4]], np.int8)),
    ([1, 2.5, 3, 4], "FP32", np.array([[1, 2.5], [3, 4]], np.float32)),
    ([1, 2, 3, 4], "FP64", np.array([[1, 2], [3, 4]], np.float64)),
    ([True, False, True, True], "BOOL", np.array([[True, False], [True, True]])),
    ([0.5, 1, 2, 3], "BF16", np.array([[0.5, 1], [2, 3]], ml_dtypes.bfloat16)),
    ([(1 << 64) - 1] * 4, "UINT64", np.full((2, 2), (1 << 64) - 1, np.uint64)),
])
def test_typed_values_become_the_datatype(values, datatype, expected):
    out = oip.from_values("t", datatype, [2, 2], values)
    assert out.dtype == expected.dtype and np.array_equal(out, expected)


def test_json_floats_round_like_v1():
    x = 0.1  # a double; FP32 takes the nearest float32, as V1's JSON does
    assert oip.from_values("t", "FP32", [1], [x])[0] == np.float32(x)


@pytest.mark.parametrize("values,datatype,message", [
    ([1, 2, 3], "INT32", "3 elements of data, but shape [2,2] needs 4"),
    ([1.5, 2, 3, 4], "INT32", "fraction"),
    (["a", "b", "c", "d"], "FP32", "strings"),
    ([1, 0, 1, 1], "BOOL", "integers"),
    ([300, 0, 0, 0], "UINT8", "range of UINT8"),
    ([-1, 0, 0, 0], "UINT32", "range of UINT32"),
    ([[1, 2], [3]], "INT32", "regular array"),
    ([{"a": 1}] * 4, "INT32", "mixed or other types"),
    ([1, 2, 3, 4], "INT3", "invalid datatype 'INT3'"),
])
def test_bad_typed_values(values, datatype, message):
    assert message in invalid(oip.from_values, "t", datatype, [2, 2], values)


@pytest.mark.parametrize("shape", [[-1], [1.5], ["2"], [True]])
def test_shapes_are_integers_at_least_zero(shape):
    assert "invalid shape" in invalid(oip.element_count, "t", shape)


@pytest.mark.parametrize("datatype", ["FP32", "BYTES"])
@pytest.mark.parametrize("shape", [[0, 2**63], [0, 2**62], [0, 2**40, 2**40], [1] * 65])
def test_a_shape_no_tensor_can_have_is_refused_even_without_elements(shape, datatype):
    for build in (lambda: oip.from_raw("x", datatype, shape, b""), lambda: oip.from_values("x", datatype, shape, [])):
        with pytest.raises(ServingError) as err:
            build()
        assert err.value.code == Code.INVALID_ARGUMENT


def test_empty_tensors():
    assert oip.from_values("t", "FP32", [0, 3], []).shape == (0, 3)
    assert oip.from_raw("t", "INT32", [2, 0], b"").shape == (2, 0)


def test_bytes_values_from_json_strings_and_protobuf_bytes():
    assert oip.from_values("s", "BYTES", [2], ["é", b"\xff"]).tolist() == ["é".encode(), b"\xff"]
    assert oip.from_values("s", "BYTES", [1, 2], [["a", "b"]]).shape == (1, 2)
    assert "holds a int" in invalid(oip.from_values, "s", "BYTES", [1], [3])


def test_outputs_as_json_values():
    assert oip.to_json_values(np.array([[1.5, 2]], np.float16)).dtype == np.float32
    assert oip.to_json_values(np.array([b"a", "b"], dtype=object)) == ["a", "b"]
    assert oip.to_json_values(np.array([b"\xff"], dtype=object)) is None  # not UTF-8: binary
    assert "cannot be sent as V2 JSON" in invalid(oip.to_json_values, np.zeros(2, np.complex64))


def test_check_request_names_the_signatures_tensors():
    oip.check_request("m", SIGNATURE, [("a", "FP32"), ("s", "BYTES")], ["y"])
    assert "Unexpected inference input 'b'" in invalid(oip.check_request, "m", SIGNATURE, [("b", "FP32")], [])
    assert "expects FP32" in invalid(oip.check_request, "m", SIGNATURE, [("a", "FP64")], [])
    assert "more than once" in invalid(oip.check_request, "m", SIGNATURE, [("a", "FP32"), ("a", "FP32")], [])
    assert "Unexpected inference output 'q'" in invalid(oip.check_request, "m", SIGNATURE, [], ["q"])
    assert "requested more than once" in invalid(oip.check_request, "m", SIGNATURE, [], ["y", "y"])
