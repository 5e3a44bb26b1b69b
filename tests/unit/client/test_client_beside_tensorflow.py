"""pyserving_client beside TensorFlow: its tensors are byte for byte those of
`tf.make_tensor_proto` / `tf.make_ndarray` for every dtype, and it shares a process with
`tensorflow` and `tensorflow_serving.apis` in either import order."""

from __future__ import annotations

import subprocess
import sys

import ml_dtypes
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2

from pyserving_client import _protos, _tensor

RNG = np.random.default_rng(11)
DTYPES = [np.float16, ml_dtypes.bfloat16, np.float32, np.float64, np.int8, np.int16, np.int32, np.int64,
          np.uint8, np.uint16, np.uint32, np.uint64, np.bool_, np.complex64, np.complex128,
          ml_dtypes.float8_e5m2, ml_dtypes.float8_e4m3fn, ml_dtypes.int4, ml_dtypes.uint4]
SHAPES = [(), (1,), (0,), (0, 3), (2, 3), (4, 1, 2)]


def sample(dtype, shape) -> np.ndarray:
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        return RNG.random(shape) > 0.5
    if dtype.kind == "c":
        return (RNG.normal(size=shape) + 1j * RNG.normal(size=shape)).astype(dtype)
    if dtype in (np.dtype(ml_dtypes.int4), np.dtype(ml_dtypes.uint4)):
        return RNG.integers(0, 7, size=shape).astype(dtype)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return RNG.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)
    return RNG.normal(size=shape).astype(dtype)


STRINGS = [np.array([b"\x00\xffraw", "caf\u00e9".encode(), b""], dtype=object), np.array(b"scalar", dtype=object),
           np.array([["a", "bc"]]), np.array([b"x", b"yz"]), np.array([], dtype=object)]


def ids(value) -> str:
    return str(value) if not isinstance(value, type) else np.dtype(value).name


@pytest.mark.parametrize("shape", SHAPES, ids=ids)
@pytest.mark.parametrize("dtype", DTYPES, ids=ids)
def test_encoding_is_tf_make_tensor_proto_byte_for_byte(dtype, shape):
    x = sample(dtype, shape)
    assert _tensor.to_tensor_proto(x).SerializeToString() == tf.make_tensor_proto(x).SerializeToString()


@pytest.mark.parametrize("x", STRINGS, ids=range(len(STRINGS)))
def test_strings_are_encoded_as_tensorflow_does(x):
    assert _tensor.to_tensor_proto(x).SerializeToString() == tf.make_tensor_proto(x).SerializeToString()


@pytest.mark.parametrize("shape", SHAPES, ids=ids)
@pytest.mark.parametrize("dtype", DTYPES, ids=ids)
def test_decoding_is_tf_make_ndarray(dtype, shape):
    x = sample(dtype, shape)
    theirs = tf.make_tensor_proto(x)
    want = tf.make_ndarray(theirs)
    got = _tensor.to_ndarray(_protos.TensorProto.FromString(theirs.SerializeToString()))
    assert (got.dtype, got.shape, got.tobytes()) == (want.dtype, want.shape, want.tobytes())


@pytest.mark.parametrize("dtype", [np.float32, np.float16, ml_dtypes.bfloat16, np.int64, np.complex64, np.bool_])
def test_typed_fields_shorter_than_the_shape_repeat_the_last_value(dtype):
    x = sample(dtype, (3,))
    proto = tf.make_tensor_proto(x[:1], shape=[5])  # one value, broadcast by the reader
    want = tf.make_ndarray(proto)
    got = _tensor.to_ndarray(_protos.TensorProto.FromString(proto.SerializeToString()))
    assert (got.dtype, got.shape, got.tobytes()) == (want.dtype, want.shape, want.tobytes())


def test_a_huge_declared_shape_is_refused_not_allocated():
    proto = _protos.TensorProto(dtype=_protos.DATA_TYPES["DT_FLOAT"], float_val=[1.0])
    proto.tensor_shape.dim.add(size=1 << 40)
    with pytest.raises(ValueError, match="larger than"):
        _tensor.to_ndarray(proto)


def test_requests_interoperate_with_tensorflow_servings_classes():
    ours = _protos.PredictRequest()
    ours.model_spec.name = "m"
    _tensor.to_tensor_proto(np.arange(6, dtype=np.float32).reshape(2, 3), ours.inputs["x"])
    theirs = predict_pb2.PredictRequest.FromString(ours.SerializeToString())
    np.testing.assert_array_equal(tf.make_ndarray(theirs.inputs["x"]), np.arange(6, dtype=np.float32).reshape(2, 3))


ORDERS = {
    "client first": "import pyserving_client\nimport tensorflow as tf\nfrom tensorflow_serving.apis import predict_pb2\n",
    "tensorflow first": "import tensorflow as tf\nfrom tensorflow_serving.apis import predict_pb2\nimport pyserving_client\n",
}
CHECK = """
import numpy as np
from pyserving_client import _protos, _tensor
request = predict_pb2.PredictRequest()
request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.float32([1.5, 2.5])))
ours = _protos.PredictRequest.FromString(request.SerializeToString())
assert _tensor.to_ndarray(ours.inputs["x"]).tolist() == [1.5, 2.5]
assert float(tf.reduce_sum(tf.constant([1.0, 2.0]))) == 3.0
print("ok")
"""


@pytest.mark.parametrize("order", list(ORDERS))
def test_client_and_tensorflow_share_a_process_in_either_order(order):
    done = subprocess.run([sys.executable, "-c", ORDERS[order] + CHECK], capture_output=True, text=True, timeout=120,
                          env={"TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
