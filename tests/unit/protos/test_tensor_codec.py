"""TensorProto <-> numpy: every dtype both ways, TF's typed-field fill rules, parse errors,
and byte-level agreement with TensorFlow's own `make_tensor_proto` / `make_ndarray`."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

from pyserving.protos import tensor_codec as codec
from pyserving.errors import Code, ServingError

RNG = np.random.default_rng(7)

NUMERIC = [
    np.float32, np.float64, np.float16, ml_dtypes.bfloat16,
    np.int8, np.int16, np.int32, np.int64,
    np.uint8, np.uint16, np.uint32, np.uint64,
    np.bool_, np.complex64, np.complex128,
]
SMALL = [ml_dtypes.float8_e4m3fn, ml_dtypes.float8_e5m2, ml_dtypes.int4, ml_dtypes.uint4]


def sample(dtype, shape=(3, 4)) -> np.ndarray:
    dtype = np.dtype(dtype)
    if dtype.kind == "b":
        return RNG.random(shape) > 0.5
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        a = RNG.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)
        a.flat[0], a.flat[1] = info.min, info.max
        return a
    if dtype.kind == "c":
        return (RNG.standard_normal(shape) + 1j * RNG.standard_normal(shape)).astype(dtype)
    return RNG.standard_normal(shape).astype(dtype)


def proto(dtype: int, shape=(), **fields) -> tensor_pb2.TensorProto:
    p = tensor_pb2.TensorProto(dtype=dtype, **fields)
    for d in shape:
        p.tensor_shape.dim.add().size = d
    return p


@pytest.mark.parametrize("dtype", NUMERIC, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("content", [False, True], ids=["typed", "tensor_content"])
def test_numeric_round_trip_and_tf_reads_it(dtype, content):
    a = sample(dtype)
    p = codec.to_tensor_proto(a, tensor_content=content)
    assert bool(p.tensor_content) == content
    assert p.dtype == tf.dtypes.as_dtype(a.dtype).as_datatype_enum
    assert [d.size for d in p.tensor_shape.dim] == [3, 4]
    for back in (codec.to_ndarray(p), tf.make_ndarray(p)):
        assert back.dtype == a.dtype and back.shape == a.shape
        np.testing.assert_array_equal(back, a)


@pytest.mark.parametrize("dtype", NUMERIC, ids=lambda d: np.dtype(d).name)
def test_reads_what_tf_make_tensor_proto_writes(dtype):
    a = sample(dtype, (2, 5))
    for p in (tf.make_tensor_proto(a), tf.make_tensor_proto(a.reshape(-1)[:1], shape=[1])):
        back = codec.to_ndarray(p)
        np.testing.assert_array_equal(back, tf.make_ndarray(p))
        assert back.dtype == a.dtype


@pytest.mark.parametrize("dtype", SMALL, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("content", [False, True], ids=["typed", "tensor_content"])
def test_float8_and_int4_round_trip(dtype, content):
    a = np.array([1, 2, 3, 0, -1 if np.dtype(dtype).name != "uint4" else 5], dtype=dtype)
    p = codec.to_tensor_proto(a, tensor_content=content)
    for back in (codec.to_ndarray(p), tf.make_ndarray(p)):
        assert back.dtype == a.dtype
        np.testing.assert_array_equal(back.astype(np.float32), a.astype(np.float32))


def test_typed_fields_are_the_ones_tf_serving_writes():
    cases = {
        np.float32: "float_val", np.float64: "double_val", np.int32: "int_val", np.int8: "int_val",
        np.uint8: "int_val", np.int16: "int_val", np.uint16: "int_val", np.int64: "int64_val",
        np.uint32: "uint32_val", np.uint64: "uint64_val", np.bool_: "bool_val",
        np.float16: "half_val", ml_dtypes.bfloat16: "half_val", np.complex64: "scomplex_val",
        np.complex128: "dcomplex_val",
    }
    for dtype, field in cases.items():
        p = codec.to_tensor_proto(sample(dtype))
        per_element = 2 if np.dtype(dtype).kind == "c" else 1
        assert len(getattr(p, field)) == 12 * per_element, dtype
    half = codec.to_tensor_proto(np.array([1.0], np.float16))
    assert list(half.half_val) == [0x3C00]  # IEEE half 1.0 as uint16 bits in an int32 slot
    bf = codec.to_tensor_proto(np.array([1.0], ml_dtypes.bfloat16))
    assert list(bf.half_val) == [0x3F80]


def test_typed_encoding_equals_repeated_field_extend():
    """The packed-bytes fast path produces exactly what `extend` would."""
    for dtype, field in ((np.float32, "float_val"), (np.float64, "double_val"), (np.bool_, "bool_val"),
                         (np.complex64, "scomplex_val"), (np.complex128, "dcomplex_val")):
        a = sample(dtype, (50,))
        ours = codec.to_tensor_proto(a)
        ref = tensor_pb2.TensorProto(dtype=ours.dtype)
        ref.tensor_shape.CopyFrom(ours.tensor_shape)
        values = a.view(np.float32 if dtype == np.complex64 else np.float64) if np.dtype(dtype).kind == "c" else a
        getattr(ref, field).extend(values.tolist())
        assert ours == ref and ours.SerializeToString() == ref.SerializeToString(), dtype


def test_strings_round_trip_as_bytes_objects():
    a = np.array([b"a", b"", b"\xff\x00binary", "unicode \u00e9".encode()], dtype=object).reshape(2, 2)
    p = codec.to_tensor_proto(a)
    assert list(p.string_val) == a.reshape(-1).tolist()
    back = codec.to_ndarray(p)
    assert back.dtype == object and back.shape == (2, 2) and back.tolist() == a.tolist()
    assert tf.make_ndarray(p).tolist() == a.tolist()
    # str and fixed-width numpy strings are encoded as UTF-8 bytes
    assert list(codec.to_tensor_proto(np.array(["x", "\u00e9"])).string_val) == [b"x", "\u00e9".encode()]
    assert list(codec.to_tensor_proto(np.array([b"ab", b"c"])).string_val) == [b"ab", b"c"]
    with pytest.raises(TypeError):
        codec.to_tensor_proto(np.array([b"x", 5], dtype=object))


def test_string_tensor_content_uses_tf_string_list_encoding():
    a = np.array([b"ab", b"", b"xyz" * 100], dtype=object)
    p = codec.to_tensor_proto(a, tensor_content=True)
    assert p.tensor_content == b"\x02\x00\xac\x02" + b"ab" + b"xyz" * 100
    assert codec.to_ndarray(p).tolist() == a.tolist()


def test_seed_000_image_bytes_request():
    p = tf.make_tensor_proto([b"\x89PNG..."], shape=[1])
    back = codec.to_ndarray(p)
    assert back.dtype == object and back.tolist() == [b"\x89PNG..."]


def test_seed_004_hand_built_float_val_proto():
    imgs = RNG.random((3, 28, 28, 1)).astype(np.float32)
    dims = [tensor_shape_pb2.TensorShapeProto.Dim(size=dim) for dim in imgs.shape]
    p = tensor_pb2.TensorProto(
        dtype=types_pb2.DT_FLOAT,
        tensor_shape=tensor_shape_pb2.TensorShapeProto(dim=dims),
        float_val=imgs.reshape(-1),
    )
    np.testing.assert_array_equal(codec.to_ndarray(p), imgs)


def test_fewer_values_repeat_the_last_one_and_extras_are_ignored():
    np.testing.assert_array_equal(codec.to_ndarray(proto(1, (5,), float_val=[1, 2])), [1, 2, 2, 2, 2])
    np.testing.assert_array_equal(codec.to_ndarray(proto(1, (2,), float_val=[1, 2, 3, 4])), [1, 2])
    np.testing.assert_array_equal(codec.to_ndarray(proto(9, (2, 2), int64_val=[7])), [[7, 7], [7, 7]])
    assert codec.to_ndarray(proto(7, (3,), string_val=[b"q"])).tolist() == [b"q"] * 3
    np.testing.assert_array_equal(codec.to_ndarray(proto(8, (2,), scomplex_val=[1, 2, 3])), [1 + 2j, 1 + 2j])


def test_no_values_give_zeros():
    for dtype, np_dtype in ((1, np.float32), (3, np.int32), (10, np.bool_), (19, np.float16)):
        back = codec.to_ndarray(proto(dtype, (2, 3)))
        assert back.dtype == np_dtype and back.shape == (2, 3) and not back.any()
    assert codec.to_ndarray(proto(7, (2,))).tolist() == [b"", b""]


def test_scalars_and_empty_tensors():
    scalar = codec.to_ndarray(proto(1, (), float_val=[3.5]))
    assert scalar.shape == () and scalar == 3.5
    empty = codec.to_ndarray(proto(1, (0, 4)))
    assert empty.shape == (0, 4) and empty.dtype == np.float32
    p = codec.to_tensor_proto(np.zeros((0, 3), np.int64))
    assert [d.size for d in p.tensor_shape.dim] == [0, 3] and not p.int64_val
    assert tf.make_ndarray(codec.to_tensor_proto(np.float64(2.5))) == 2.5


@pytest.mark.parametrize("content", [False, True], ids=["typed", "tensor_content"])
@pytest.mark.parametrize("value", [np.float32(3.0), np.int64(-4), np.bool_(True), np.array(b"s", object)],
                         ids=["float32", "int64", "bool", "string"])
def test_a_scalar_carries_an_empty_tensor_shape(value, content):
    """TF writes `tensor_shape {}` (present, no dims) for a rank-0 tensor in both encodings."""
    p = codec.to_tensor_proto(value, tensor_content=content)
    assert p.HasField("tensor_shape") and not p.tensor_shape.dim and not p.tensor_shape.unknown_rank
    assert codec.to_ndarray(p).shape == ()


def test_a_scalar_is_byte_equal_to_tf_servings_expected_proto():
    # what predict_impl_test.cc's PredictionSuccess builds: float_val 3, DT_FLOAT, an empty shape
    expected = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=[3.0])
    expected.tensor_shape.SetInParent()
    assert codec.to_tensor_proto(np.float32(3.0)).SerializeToString() == expected.SerializeToString()
    assert codec.to_tensor_proto(np.float32(3.0)).SerializeToString() == \
        tf.make_tensor_proto(np.float32(3.0)).SerializeToString()
    content = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_content=np.float32(3.0).tobytes())
    content.tensor_shape.SetInParent()
    assert codec.to_tensor_proto(np.float32(3.0), tensor_content=True).SerializeToString() == \
        content.SerializeToString()


def test_narrow_ints_wrap_like_tf_static_cast():
    np.testing.assert_array_equal(codec.to_ndarray(proto(4, (2,), int_val=[256 + 5, -1])), [5, 255])
    np.testing.assert_array_equal(codec.to_ndarray(proto(6, (1,), int_val=[130])), [-126])


@pytest.mark.parametrize(
    "bad",
    [
        proto(1, (2,), tensor_content=b"\x00" * 7),  # not 2 x 4 bytes
        proto(1, (1,), tensor_content=b"\x00" * 8),  # extra bytes are an error too
        proto(0, (1,)),  # DT_INVALID
        proto(20, (1,)),  # DT_RESOURCE
        proto(21, (1,)),  # DT_VARIANT
        proto(11, (1,), int_val=[1]),  # quantized types are not supported
        proto(1, (-1,), float_val=[1.0]),  # negative dimension
        proto(1, (10**12,), float_val=[1.0]),  # broadcast far beyond any real message
        proto(7, (2,), tensor_content=b"\x05ab"),  # malformed string list
    ],
    ids=["short-content", "long-content", "invalid", "resource", "variant", "quantized",
         "negative-dim", "huge-broadcast", "bad-string-list"],
)
def test_parse_errors(bad):
    with pytest.raises(codec.TensorParseError):
        codec.to_ndarray(bad)


def test_unknown_rank_is_a_parse_error():
    p = proto(1, (), float_val=[1.0])
    p.tensor_shape.unknown_rank = True
    with pytest.raises(codec.TensorParseError):
        codec.to_ndarray(p)


def test_decode_inputs_reports_the_alias_as_tf_serving_does():
    good = tf.make_tensor_proto(np.ones((2, 1), np.float32))
    inputs = {"a": good, "b": proto(1, (2,), tensor_content=b"xx")}
    with pytest.raises(ServingError) as info:
        codec.decode_inputs(inputs, ["a", "b"])
    assert info.value.code == Code.INVALID_ARGUMENT
    assert info.value.message == "tensor parsing error: b"
    out = codec.decode_inputs({"x": good, "z": good}, ["x"])
    assert list(out) == ["x", "z"] and out["x"].shape == (2, 1)


def test_encode_outputs_fills_a_proto_map():
    from tensorflow_serving.apis import predict_pb2

    response = predict_pb2.PredictResponse()
    codec.encode_outputs({"y": np.arange(3, dtype=np.float32), "s": np.array([b"k"], object)}, response.outputs)
    assert list(response.outputs["y"].float_val) == [0, 1, 2]
    assert list(response.outputs["s"].string_val) == [b"k"]
    codec.encode_outputs({"y": np.arange(3, dtype=np.float32)}, response.outputs, tensor_content=True)
    y = response.outputs["y"]
    assert not y.float_val and [d.size for d in y.tensor_shape.dim] == [3]
    np.testing.assert_array_equal(tf.make_ndarray(y), [0, 1, 2])
