"""predict, classify, regress, metadata and status against the real server, over gRPC and
REST, blocking and asyncio, from an environment without TensorFlow."""

from __future__ import annotations

import asyncio
import sys

import ml_dtypes
import numpy as np
import pytest

from pyserving_client import (
    AsyncClient,
    Client,
    InvalidArgumentError,
    ModelVersionStatus,
    NotFoundError,
    ServingError,
    UnimplementedError,
)

RNG = np.random.default_rng(7)
NUMERIC = ["float32", "float64", "float16", "bfloat16", "int8", "int16", "int32", "int64",
           "uint8", "uint16", "uint32", "uint64", "bool", "complex64", "complex128"]
# TF Serving's JSON carries no half, bfloat16, uint16 or complex numbers (its REST API answers 501)
JSON_NUMERIC = [d for d in NUMERIC if d not in ("float16", "bfloat16", "uint16", "complex64", "complex128")]


def sample(dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    if dtype == "bool":
        return RNG.random(shape) > 0.5
    if dtype.startswith("complex"):
        return (RNG.normal(size=shape) + 1j * RNG.normal(size=shape)).astype(dtype)
    np_dtype = np.dtype(ml_dtypes.bfloat16) if dtype == "bfloat16" else np.dtype(dtype)
    if np_dtype.kind in "iu":
        info = np.iinfo(np_dtype)
        return RNG.integers(info.min, info.max, size=shape, dtype=np_dtype, endpoint=True)
    return RNG.normal(size=shape).astype(np_dtype)


def assert_same(got: np.ndarray, want: np.ndarray) -> None:
    assert got.dtype == want.dtype and got.shape == want.shape
    if want.dtype.kind == "O":
        assert got.tolist() == want.tolist()
    else:
        assert got.tobytes() == want.tobytes()


def test_the_environment_has_no_tensorflow(client):
    client.predict("hpt", [1.0])
    with pytest.raises(ImportError):
        import tensorflow  # noqa: F401
    with pytest.raises(ImportError):
        import tensorflow_serving  # noqa: F401
    assert not [m for m in sys.modules if m.split(".")[0] in ("tensorflow", "tensorflow_serving")]


def test_half_plus_two_as_the_readme_calls_it(client):
    assert client.predict("hpt", [1.0, 2.0, 5.0])["y"].tolist() == [2.5, 3.0, 4.5]
    y = client.predict("hpt", {"x": np.array([[1.0], [3.0]], np.float32)})["y"]
    assert y.dtype == np.float32 and y.shape == (2, 1) and y.ravel().tolist() == [2.5, 3.5]


@pytest.mark.parametrize("shape", [(2, 3), (), (1,), (0, 3)], ids=["matrix", "scalar", "one", "empty"])
@pytest.mark.parametrize("dtype", NUMERIC + ["string"])
def test_every_dtype_round_trips_over_grpc(server, dtype, shape):
    x = sample(dtype, shape) if dtype != "string" else np.array(
        [b"\x00\xff bytes", "caf\u00e9".encode(), b""] * 2, dtype=object)[: int(np.prod(shape))].reshape(shape)
    with Client(server.grpc_target) as client:
        assert_same(client.predict("identity", {"x": x}, signature=dtype)["y"], x)


@pytest.mark.parametrize("shape", [(2, 3), (), (0,)], ids=["matrix", "scalar", "empty"])
@pytest.mark.parametrize("dtype", JSON_NUMERIC + ["string"])
def test_json_dtypes_round_trip_over_rest(server, dtype, shape):
    if dtype == "string":
        x = np.array(["caf\u00e9".encode(), b"two"] * 3, dtype=object)[: int(np.prod(shape))].reshape(shape)
    else:
        x = sample(dtype, shape)
    with Client(server.url) as client:
        assert_same(client.predict("identity", {"x": x}, signature=dtype)["y"], x)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "uint16"])
def test_json_less_dtypes_over_rest_get_the_servers_answer(server, dtype):
    with Client(server.url) as client, pytest.raises(UnimplementedError):
        client.predict("identity", {"x": sample(dtype, (2,))}, signature=dtype)


def test_complex_over_rest_is_refused_before_sending(server):
    with Client(server.url) as client, pytest.raises(InvalidArgumentError, match="use gRPC"):
        client.predict("identity", {"x": sample("complex64", (2,))}, signature="complex64")


def test_binary_strings_travel_as_b64_over_rest(server):
    """Seed 000's image model: a PNG's bytes in, probabilities out."""
    png = bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000001000000010802000000907753de0000000c4944415408d763f8cfc000"
        "000301010018dd8db00000000049454e44ae426082")  # a 1x1 red PNG
    answers = []
    for target in (server.grpc_target, server.url):
        with Client(target) as client:
            answers.append(client.predict("image", [png])["probabilities"])
    assert answers[0].shape == (1, 4)
    np.testing.assert_allclose(answers[0], answers[1], rtol=1e-6)


def test_lists_and_float64_arrays_take_the_signatures_dtype(client):
    assert client.predict("hpt", {"x": [[1.0]]})["y"].tolist() == [[2.5]]
    assert client.predict("hpt", np.array([[3.0]], np.float64))["y"].tolist() == [[3.5]]


def test_ten_thousand_images_in_one_call_over_grpc(server):
    """Seed 004's 31 MB request: far above gRPC's default 4 MiB message limit."""
    images = RNG.random((10000, 28, 28, 1), dtype=np.float32)
    with Client(server.grpc_target) as client:
        probs = client.predict("mnist", images)["y_pred"]
    assert probs.shape == (10000, 10) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-4)


def test_two_named_inputs_and_a_named_signature(client):
    img = RNG.random((1, 64, 32, 3), dtype=np.float32)
    out = client.predict("siamese", {"img1": img, "img2": img}, signature="signature-reid")
    np.testing.assert_allclose(out["predict"].ravel(), [1 / (1 + np.exp(-2.0))], rtol=1e-5)


def test_output_filter(client):
    images = RNG.integers(0, 256, (1, 16, 16, 3), dtype=np.uint8)
    every = client.predict("detection", images)
    assert len(every) > 2
    some = client.predict("detection", images, output_filter=["detection_boxes"])
    assert list(some) == ["detection_boxes"]
    np.testing.assert_array_equal(some["detection_boxes"], every["detection_boxes"])


def test_version_and_label(client):
    assert client.predict("hpt", [1.0], version=1)["y"].tolist() == [2.5]
    assert client.predict("hpt", [1.0], label="stable")["y"].tolist() == [2.5]
    with pytest.raises(NotFoundError):
        client.predict("hpt", [1.0], version=99)
    with pytest.raises(ValueError):
        client.predict("hpt", [1.0], version=1, label="stable")


def test_errors_carry_tf_servings_code_and_message(client):
    with pytest.raises(NotFoundError) as info:
        client.predict("no_such_model", [1.0])
    assert "no_such_model" in info.value.message and info.value.code.name == "NOT_FOUND"
    with pytest.raises(InvalidArgumentError) as info:
        client.predict("hpt", {"z": np.array([1.0], np.float32)})
    assert isinstance(info.value, ServingError) and "x" in info.value.message


def test_metadata_has_numpy_dtypes_and_shapes(client):
    metadata = client.metadata("mnist")
    assert metadata.name == "mnist" and metadata.version == 1
    signature = metadata.signatures["serving_default"]
    (tensor,) = signature.inputs.values()
    assert tensor.dtype == np.float32 and tensor.datatype == "DT_FLOAT"
    assert tensor.shape == (None, 28, 28, 1)
    assert client.metadata("identity").signatures["bfloat16"].inputs["x"].dtype == np.dtype(ml_dtypes.bfloat16)
    assert client.metadata("identity").signatures["string"].inputs["x"].shape is None  # unknown rank


def test_status(client):
    assert client.status("hpt") == [ModelVersionStatus(1, "AVAILABLE", "OK", "")]
    assert client.status("hpt", version=1)[0].state == "AVAILABLE"
    with pytest.raises(NotFoundError):
        client.status("no_such_model")


def test_classify_and_regress_take_examples_as_dicts(client):
    x = [0.5, -1.0]
    classes = client.classify("classifier", [{"x": v} for v in x])
    for v, row in zip(x, classes):
        scores = dict(row)
        assert set(scores) == {"negative", "positive"}
        assert scores["positive"] == pytest.approx(1 / (1 + np.exp(-v)), rel=1e-5)
    values = client.regress("classifier", [{"x": v} for v in x], signature="regress")
    assert values.dtype == np.float32 and values.tolist() == [2 * v + 1 for v in x]


def test_async_client_has_the_same_methods(target):
    async def main():
        async with AsyncClient(target) as client:
            ys = await asyncio.gather(*(client.predict("hpt", [float(i)]) for i in range(20)))
            metadata = await client.metadata("hpt")
            status = await client.status("hpt")
            regressed = await client.regress("classifier", [{"x": 1.0}], signature="regress")
            with pytest.raises(NotFoundError):
                await client.predict("no_such_model", [1.0])
            return ys, metadata, status, regressed

    ys, metadata, status, regressed = asyncio.run(main())
    assert [y["y"].tolist() for y in ys] == [[0.5 * i + 2] for i in range(20)]
    assert "serving_default" in metadata.signatures and status[0].state == "AVAILABLE"
    assert regressed.shape == (1,)


@pytest.mark.parametrize("dtype", ["bfloat16", "complex128", "string", "uint64"])
def test_async_grpc_round_trips(server, dtype):
    x = sample(dtype, (3,)) if dtype != "string" else np.array([b"\xff", b"a"], dtype=object)

    async def main():
        async with AsyncClient(server.grpc_target) as client:
            return await client.predict("identity", {"x": x}, signature=dtype)

    assert_same(asyncio.run(main())["y"], x)


def open_sockets() -> int:
    import os

    fds = os.listdir("/proc/self/fd")
    count = 0
    for fd in fds:
        try:
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
        except OSError:  # closed meanwhile
            pass
    return count


def test_one_connection_is_kept_and_reused(target):
    with Client(target) as client:
        client.predict("hpt", [1.0])
        after_first = open_sockets()
        for i in range(50):
            client.predict("hpt", [float(i)])
        assert open_sockets() == after_first


@pytest.fixture(scope="module")
def content_server(models):
    """A server answering in `tensor_content` (--enable_serialization_as_tensor_content)."""
    from client_support import pyserving

    with pyserving(f"--model_config_file={models / 'models.config'}",
                   "--enable_serialization_as_tensor_content=true") as process:
        yield process


def test_the_content_server_does_answer_in_tensor_content(content_server):
    import grpc

    from pyserving_client import _protos, _tensor

    request = _protos.PredictRequest()
    request.model_spec.name, request.model_spec.signature_name = "identity", "float32"
    _tensor.to_tensor_proto(np.zeros((2, 3), np.float32), request.inputs["x"])
    with grpc.insecure_channel(content_server.grpc_target) as channel:
        call = channel.unary_unary("/tensorflow.serving.PredictionService/Predict",
                                   request_serializer=lambda m: m.SerializeToString(),
                                   response_deserializer=_protos.PredictResponse.FromString)
        y = call(request, timeout=30).outputs["y"]
    assert len(y.tensor_content) == 24 and not y.float_val


@pytest.mark.parametrize("dtype", NUMERIC)
def test_answers_in_tensor_content_are_decoded(content_server, dtype):
    x = sample(dtype, (2, 3))
    with Client(content_server.grpc_target) as client:
        assert_same(client.predict("identity", {"x": x}, signature=dtype)["y"], x)
