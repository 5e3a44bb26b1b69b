"""gRPC API against real server processes, with the official stubs and the seeds' client code.

Servers (all launched together, each shared by the tests that use it):
- `main`: every model the read-only tests need, profiler on (TF Serving's default) writing
  under `<dir>/profiles`;
- `unix`: UNIX socket only (a stale socket file is left at its path first),
  `--enable_serialization_as_tensor_content`, `--enable_profiler=false`; stopped by the
  last test to check the drain;
- `tls` / `mtls`: `--ssl_config_file` with certificates made here by the openssl CLI;
- `reload`: changed by HandleReloadConfigRequest, its tests run in file order;
- `bad_ssl` and `port_taken`: must fail to start with a clear message.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

import modelgen
from pyserving.protos.profiler_protos import ProfileRequest
from support import READY, ServerProcess, make_certificates, ssl_config

# --------------------------------------------------------------------------- models and servers

def model_entry(name: str, path: Path | str, extra: str = "") -> str:
    return f'config {{ name: "{name}" base_path: "{path}" model_platform: "tensorflow" {extra} }}'


def config_text(*entries: str) -> str:
    return "model_config_list {\n  " + "\n  ".join(entries) + "\n}\n"


LABELS = 'model_version_policy { all {} } version_labels { key: "stable" value: 123 } ' \
         'version_labels { key: "canary" value: 124 }'


def stop_all(servers: list[ServerProcess], timeout: float = 30) -> None:
    """SIGTERM every server still running, then wait for all (killed if still up)."""
    running = [s for s in servers if s.proc is not None and s.proc.poll() is None]
    for s in running:
        s.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for s in running:
        try:
            s.wait_exit(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:  # test_sigterm_* checks the shutdown itself
            s.proc.kill()
            s.proc.wait()


@pytest.fixture(scope="module")
def fleet(model_zoo, testdata, tmp_path_factory):
    d = tmp_path_factory.mktemp("grpc")
    modelgen.make_slow_model(d / "slow", 1)
    modelgen.make_identity_model(d / "identity", 1)
    certs = make_certificates(d)
    td = testdata
    (d / "main.config").write_text(config_text(
        model_entry("half_plus_two", td / "saved_model_half_plus_two_2_versions", LABELS),
        model_entry("hpt", td / "saved_model_half_plus_two_cpu"),
        model_entry("identity", d / "identity"),
        model_entry("slow", d / "slow"),
        model_entry("model", model_zoo / "image_bytes"),
        model_entry("siamese-reid", model_zoo / "siamese"),
        model_entry("ssd-mbv2-coco", model_zoo / "detection"),
        model_entry("mnist-serving", model_zoo / "mnist_cnn"),
        model_entry("classifier", model_zoo / "classifier"),
    ))
    (d / "small.config").write_text(config_text(
        model_entry("hpt", td / "saved_model_half_plus_two_cpu"),
        model_entry("identity", d / "identity"),
        model_entry("slow", d / "slow"),
    ))
    (d / "tls.config").write_text(config_text(model_entry("hpt", td / "saved_model_half_plus_two_cpu")))
    (d / "tls.pbtxt").write_text(ssl_config(certs, client_verify=False))
    (d / "mtls.pbtxt").write_text(ssl_config(certs, client_verify=True))
    (d / "bad_ssl.pbtxt").write_text('server_key: "not a key" bogus_field: 1\n')
    sock = d / "grpc.sock"
    stale = socket.socket(socket.AF_UNIX)  # bound then closed: the file stays, nobody listens
    stale.bind(str(sock))
    stale.close()

    servers = {
        # TF Serving checks labels once the latest version is up (its issue #1608): without
        # this flag, startup fails whenever version 123 loads after 124.
        "main": ServerProcess(f"--model_config_file={d / 'main.config'}",
                              "--allow_version_labels_for_unavailable_models", f"--profiler_dir={d / 'profiles'}",
                              rest=False),
        "unix": ServerProcess(f"--model_config_file={d / 'small.config'}", "--port=0", f"--grpc_socket_path={sock}",
                              "--enable_serialization_as_tensor_content", "--enable_profiler=false",
                              "--shutdown_grace_seconds=20", rest=False),
        "tls": ServerProcess(f"--model_config_file={d / 'tls.config'}", f"--ssl_config_file={d / 'tls.pbtxt'}",
                             rest=False),
        "mtls": ServerProcess(f"--model_config_file={d / 'tls.config'}", f"--ssl_config_file={d / 'mtls.pbtxt'}",
                              rest=False),
        "reload": ServerProcess(f"--model_config_file={d / 'tls.config'}", "--max_num_load_retries=0", rest=False),
        "bad_ssl": ServerProcess(f"--model_config_file={d / 'tls.config'}",
                                 f"--ssl_config_file={d / 'bad_ssl.pbtxt'}", rest=False),
    }
    for s in servers.values():
        s.launch()
    try:
        servers["main"].wait_for_log(READY, timeout=180)
        # started once main holds its port, so that binding it must fail
        servers["port_taken"] = ServerProcess(
            f"--port={servers['main'].grpc_port}", "--model_base_path=/nonexistent", rest=False
        ).launch()
        for name, s in servers.items():
            if name not in ("bad_ssl", "port_taken"):
                s.wait_for_log(READY, timeout=180)
        yield {"dir": d, "certs": certs, "socket": sock, **servers}
    finally:
        stop_all(list(servers.values()))


@pytest.fixture(scope="module")
def main(fleet) -> ServerProcess:
    return fleet["main"]


@pytest.fixture(scope="module")
def channel(main):
    with grpc.insecure_channel(main.grpc_target) as ch:
        yield ch


@pytest.fixture(scope="module")
def stub(channel):
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


@pytest.fixture(scope="module")
def model_stub(channel):
    return model_service_pb2_grpc.ModelServiceStub(channel)


def predict_request(name: str, inputs: dict, signature: str = "", **spec) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    if signature:
        request.model_spec.signature_name = signature
    if "version" in spec:
        request.model_spec.version.value = spec["version"]
    if "label" in spec:
        request.model_spec.version_label = spec["label"]
    for alias, value in inputs.items():
        if not isinstance(value, tensor_pb2.TensorProto):
            value = tf.make_tensor_proto(value)
        request.inputs[alias].CopyFrom(value)
    return request


def hpt_request(name: str = "hpt", **spec) -> predict_pb2.PredictRequest:
    return predict_request(name, {"x": np.array([[1.0], [2.0], [5.0]], np.float32)}, **spec)


def rpc_error(call, *args, **kwargs) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(*args, **kwargs)
    return info.value


def examples(values: list[float]) -> list[bytes]:
    return [tf.train.Example.FromString(e) for e in modelgen.serialized_examples("x", values)]


# --------------------------------------------------------------------------- seeds' client code

def test_seed_004_mnist_10000_images_in_one_request(main):
    """Seed 004's `grpc_infer` as written (tf.contrib.util.make_tensor_proto is today's
    tf.make_tensor_proto): a 31 MB request, `stub.Predict(request, 10.0)`."""
    channel = grpc.insecure_channel(main.grpc_target)
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "mnist-serving"
    request.model_spec.signature_name = "serving_default"

    def grpc_infer(imgs):
        if imgs.ndim == 3:
            imgs = np.expand_dims(imgs, axis=0)
        request.inputs["input_image"].CopyFrom(
            tf.make_tensor_proto(imgs, dtype=np.float32, shape=imgs.shape)
        )
        result = stub.Predict(request, 10.0)
        result = result.outputs["y_pred"].float_val
        result = np.array(result).reshape((-1, 10))
        return result

    x_test = np.random.default_rng(0).random((10000, 28, 28, 1), dtype=np.float32)
    probs = grpc_infer(x_test)
    assert probs.shape == (10000, 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-4)
    one = grpc_infer(x_test[0])  # the seed's single-image benchmark call
    np.testing.assert_allclose(one[0], probs[0], rtol=1e-4, atol=1e-6)
    channel.close()


def test_seed_004_hand_built_tensor_proto(stub):
    """Seed 004's protos section: TensorProto(dtype=DT_FLOAT, tensor_shape=..., float_val=imgs.reshape(-1))."""
    imgs = np.random.default_rng(1).random((8, 28, 28, 1), dtype=np.float32)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "mnist-serving"
    tensor_shape = imgs.shape
    dims = [tensor_shape_pb2.TensorShapeProto.Dim(size=dim) for dim in tensor_shape]
    tensor_shape = tensor_shape_pb2.TensorShapeProto(dim=dims)
    tensor = tensor_pb2.TensorProto(
        dtype=types_pb2.DT_FLOAT,
        tensor_shape=tensor_shape,
        float_val=imgs.reshape(-1))
    request.inputs["input_image"].CopyFrom(tensor)
    by_floats = np.array(stub.Predict(request, 10.0).outputs["y_pred"].float_val).reshape(-1, 10)
    request.inputs["input_image"].CopyFrom(tf.make_tensor_proto(imgs))  # tensor_content
    by_content = tf.make_ndarray(stub.Predict(request, 10.0).outputs["y_pred"])
    np.testing.assert_allclose(by_floats, by_content, rtol=1e-6)


def test_seed_004_siamese_two_inputs(main):
    def _grpc_client_request(img1, img2, host="localhost", port=8500, img1_name="img1", img2_name="img2",
                             model_spec_name="siamese-reid", model_sig_name="signature-reid", timeout=10):
        host = host.replace("http://", "").replace("https://", "")
        channel = grpc.insecure_channel("{}:{}".format(host, port))
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        request = predict_pb2.PredictRequest()
        request.model_spec.name = model_spec_name
        request.model_spec.signature_name = model_sig_name
        img_arr1 = np.expand_dims(img1, axis=0)
        request.inputs[img1_name].CopyFrom(
            tf.make_tensor_proto(img_arr1, dtype=np.float32, shape=[*img_arr1.shape]))
        img_arr2 = np.expand_dims(img2, axis=0)
        request.inputs[img2_name].CopyFrom(
            tf.make_tensor_proto(img_arr2, dtype=np.float32, shape=[*img_arr2.shape]))
        predict_response = stub.Predict(request, timeout=timeout)
        channel.close()
        return predict_response

    img = np.random.default_rng(2).random((64, 32, 3), dtype=np.float32)
    result = _grpc_client_request(img, img, host="http://localhost", port=main.grpc_port)
    pred = np.array(result.outputs["predict"].float_val)
    np.testing.assert_allclose(pred, [1 / (1 + np.exp(-2.0))], rtol=1e-5)
    assert result.model_spec.signature_name == "signature-reid"


def test_seed_004_detection_read_with_make_ndarray(stub):
    img_arr = np.random.default_rng(3).integers(0, 256, (1, 48, 64, 3), dtype=np.uint8)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "ssd-mbv2-coco"
    request.model_spec.signature_name = "serving_default"
    request.inputs["inputs"].CopyFrom(tf.make_tensor_proto(img_arr, dtype=np.uint8, shape=img_arr.shape))
    result = stub.Predict(request, 10.0)
    expected = modelgen.detection_model_reference(img_arr)
    assert set(result.outputs) == set(expected)
    for key, want in expected.items():
        got = tf.make_ndarray(result.outputs[key])
        assert got.shape == want.shape, key
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # the flattened reading of the seed: 100 boxes are 400 floats
    assert len(result.outputs["detection_boxes"].float_val) == 400


def test_seed_000_image_bytes(main):
    image_bytes = modelgen.png_bytes(rgb=(255, 0, 0))
    channel = grpc.insecure_channel(main.grpc_target)
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "model"
    request.inputs["image_bytes"].CopyFrom(
        tf.make_tensor_proto([image_bytes], shape=[1])
    )
    response = stub.Predict(request)
    probabilities = tf.make_ndarray(response.outputs["probabilities"])
    np.testing.assert_allclose(probabilities[0], modelgen.image_bytes_model_reference((255, 0, 0)), rtol=1e-5)
    channel.close()


def test_seed_003_predict_with_timeout_keyword(stub):
    """Seed 003 without `grpc.beta` (gone from grpcio): the rest of its snippet unchanged."""
    data_point = [[1.0], [3.0]]
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "hpt"
    request.model_spec.signature_name = "serving_default"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(data_point, dtype=tf.float32))
    result = stub.Predict(request, timeout=10.0)
    assert list(result.outputs["y"].float_val) == [2.5, 3.5]


# --------------------------------------------------------------------------- Predict

def test_predict_echoes_the_resolved_model_spec(stub):
    response = stub.Predict(hpt_request(), 10.0)
    assert response.model_spec.name == "hpt"
    assert response.model_spec.version.value == 123
    assert response.model_spec.signature_name == "serving_default"
    y = response.outputs["y"]
    assert y.dtype == types_pb2.DT_FLOAT and [d.size for d in y.tensor_shape.dim] == [3, 1]
    assert list(y.float_val) == [2.5, 3.0, 4.5] and not y.tensor_content


@pytest.mark.parametrize("dtype", list(modelgen.IDENTITY_DTYPES))
def test_every_dtype_round_trips_through_a_model(stub, dtype):
    tf_dtype = modelgen.IDENTITY_DTYPES[dtype]
    if tf_dtype == tf.string:
        value = np.array([[b"a", b"\xff\x00"], [b"", "\u00e9".encode()]], dtype=object)
    elif tf_dtype == tf.bool:
        value = np.array([[True, False], [False, True]])
    elif tf_dtype.is_complex:
        value = np.array([[1 + 2j, -3.5j], [0, 7]], dtype=tf_dtype.as_numpy_dtype)
    elif tf_dtype.is_integer:
        value = np.array([[tf_dtype.min, tf_dtype.max], [0, 1]], dtype=tf_dtype.as_numpy_dtype)
    else:
        value = np.array([[1.5, -2.25], [0.0, 65504 if tf_dtype == tf.float16 else 3.0e38]],
                         dtype=tf_dtype.as_numpy_dtype)
    for request_proto in (tf.make_tensor_proto(value), typed_proto(value)):
        response = stub.Predict(predict_request("identity", {"x": request_proto}, signature=dtype), 10.0)
        y = response.outputs["y"]
        assert y.dtype == tf_dtype.as_datatype_enum and not y.tensor_content
        back = tf.make_ndarray(y)
        assert back.dtype == value.dtype and back.shape == value.shape
        assert back.tolist() == value.tolist() if value.dtype == object else np.array_equal(back, value)


def typed_proto(value: np.ndarray) -> tensor_pb2.TensorProto:
    """The same tensor in the typed *_val field instead of tensor_content."""
    proto = tf.make_tensor_proto(value)
    if proto.tensor_content:
        flat = value.reshape(-1)
        proto.tensor_content = b""
        if value.dtype in (np.float16, tf.bfloat16.as_numpy_dtype):
            proto.half_val.extend(flat.view(np.uint16).tolist())
        elif value.dtype.kind == "c":
            getattr(proto, "scomplex_val" if value.dtype == np.complex64 else "dcomplex_val").extend(
                flat.view(np.float32 if value.dtype == np.complex64 else np.float64).tolist())
        else:
            field = {np.dtype(np.float32): "float_val", np.dtype(np.float64): "double_val",
                     np.dtype(np.int64): "int64_val", np.dtype(np.uint32): "uint32_val",
                     np.dtype(np.uint64): "uint64_val", np.dtype(np.bool_): "bool_val"}.get(value.dtype, "int_val")
            getattr(proto, field).extend(flat.tolist())
    return proto


def test_scalar_broadcast_rule_on_typed_fields(stub):
    tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=[1.0, 7.0])
    tensor.tensor_shape.dim.add().size = 4
    response = stub.Predict(predict_request("identity", {"x": tensor}, signature="float32"), 10.0)
    assert list(response.outputs["y"].float_val) == [1.0, 7.0, 7.0, 7.0]


def test_versions_and_labels(stub):
    def version_of(**spec):
        return stub.Predict(hpt_request("half_plus_two", **spec), 10.0).model_spec.version.value

    assert version_of(version=123) == 123  # these two wait while a version still loads
    assert version_of(version=124) == 124
    assert version_of() == 124
    assert version_of(label="stable") == 123
    assert version_of(label="canary") == 124
    err = rpc_error(stub.Predict, hpt_request("half_plus_two", version=999), 10.0)
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert err.details() == "Servable not found for request: Specific(half_plus_two, 999)"
    err = rpc_error(stub.Predict, hpt_request("half_plus_two", label="nope"), 10.0)
    assert (err.code(), err.details()) == (grpc.StatusCode.INVALID_ARGUMENT,
                                           "Unrecognized servable version label: nope")


def test_output_filter(stub):
    img = np.zeros((1, 8, 8, 3), np.uint8)
    request = predict_request("ssd-mbv2-coco", {"inputs": img})
    request.output_filter.extend(["num_detections", "detection_scores"])
    response = stub.Predict(request, 10.0)
    assert set(response.outputs) == {"num_detections", "detection_scores"}
    request.output_filter[:] = ["nope"]
    err = rpc_error(stub.Predict, request, 10.0)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details().startswith("output tensor alias not found in signature: nope")
    request.output_filter[:] = ["num_detections", "num_detections"]
    err = rpc_error(stub.Predict, request, 10.0)
    assert (err.code(), err.details()) == (grpc.StatusCode.INVALID_ARGUMENT,
                                           "duplicate output tensor alias: num_detections")


def test_predict_errors(stub):
    def check(request, code, details=None, prefix=None):
        err = rpc_error(stub.Predict, request, 10.0)
        assert err.code() == code, err.details()
        if details is not None:
            assert err.details() == details
        if prefix is not None:
            assert err.details().startswith(prefix), err.details()

    check(predict_pb2.PredictRequest(), grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec")
    check(hpt_request(""), grpc.StatusCode.INVALID_ARGUMENT, "ModelSpec has no name specified.")
    check(hpt_request("nope"), grpc.StatusCode.NOT_FOUND, "Servable not found for request: Latest(nope)")
    check(hpt_request(signature="nope"), grpc.StatusCode.FAILED_PRECONDITION,
          'Serving signature key "nope" not found.')
    bad = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_content=b"\x00" * 7)
    bad.tensor_shape.dim.add().size = 2
    check(predict_request("hpt", {"x": bad}), grpc.StatusCode.INVALID_ARGUMENT, "tensor parsing error: x")
    check(predict_request("hpt", {"wrong": np.ones((1, 1), np.float32)}), grpc.StatusCode.INVALID_ARGUMENT)
    check(predict_request("hpt", {"x": np.ones((1, 1), np.int32)}), grpc.StatusCode.INVALID_ARGUMENT)
    long_name = "m" * 2000
    err = rpc_error(stub.Predict, hpt_request(long_name), 10.0)
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert err.details() == ("Servable not found for request: Latest(" + long_name)[:1024] + "...TRUNCATED"


def test_deadline_bounds_the_model_run(stub):
    slow = predict_request("slow", {"n": np.array(10**8, np.int64)})
    started = time.monotonic()
    err = rpc_error(stub.Predict, slow, 0.5)
    assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    quick = stub.Predict(predict_request("slow", {"n": np.array(10, np.int64)}), 10.0)
    assert tf.make_ndarray(quick.outputs["count"]) == 10.0
    assert time.monotonic() - started < 10


# --------------------------------------------------------------------------- Classify, Regress, MultiInference

def test_classify_regress_and_context(stub):
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "hpt"
    request.model_spec.signature_name = "classify_x_to_y"
    request.input.example_list.examples.extend(examples([1.0, 4.0]))
    response = stub.Classify(request, 10.0)
    assert response.model_spec.signature_name == "classify_x_to_y" and response.model_spec.version.value == 123
    assert [[(c.label, c.score) for c in row.classes] for row in response.result.classifications] == [
        [("", 2.5)], [("", 4.0)]]

    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "classifier"
    context = request.input.example_list_with_context
    context.context.CopyFrom(examples([2.0])[0])  # the feature comes from the context
    context.examples.add()
    context.examples.add()
    response = stub.Classify(request, 10.0)
    assert response.model_spec.signature_name == "serving_default"
    for row in response.result.classifications:
        assert [c.label for c in row.classes] == ["negative", "positive"]
        np.testing.assert_allclose([c.score for c in row.classes], [1 / (1 + np.exp(2)), 1 / (1 + np.exp(-2))],
                                   rtol=1e-5)

    request = regression_pb2.RegressionRequest()
    request.model_spec.name = "classifier"
    request.model_spec.signature_name = "regress"
    request.input.example_list.examples.extend(examples([1.0, -2.0]))
    response = stub.Regress(request, 10.0)
    assert [r.value for r in response.result.regressions] == [3.0, -3.0]
    assert response.model_spec.signature_name == "regress"


def test_classify_and_regress_errors(stub):
    err = rpc_error(stub.Classify, classification_pb2.ClassificationRequest(), 10.0)
    assert (err.code(), err.details()) == (grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec")
    err = rpc_error(stub.Regress, regression_pb2.RegressionRequest(), 10.0)
    assert (err.code(), err.details()) == (grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec")
    request = regression_pb2.RegressionRequest()
    request.model_spec.name = "hpt"
    request.model_spec.signature_name = "regress_x_to_y"
    err = rpc_error(stub.Regress, request, 10.0)
    assert (err.code(), err.details()) == (grpc.StatusCode.INVALID_ARGUMENT, "Input is empty.")
    request.model_spec.signature_name = "nope"
    request.input.example_list.examples.extend(examples([1.0]))
    assert rpc_error(stub.Regress, request, 10.0).code() == grpc.StatusCode.INVALID_ARGUMENT


def test_multi_inference(stub):
    request = inference_pb2.MultiInferenceRequest()
    for signature, method in (("classify_x_to_y", "tensorflow/serving/classify"),
                              ("regress_x_to_y", "tensorflow/serving/regress")):
        task = request.tasks.add()
        task.model_spec.name = "hpt"
        task.model_spec.signature_name = signature
        task.method_name = method
    request.input.example_list.examples.extend(examples([2.0, 6.0]))
    response = stub.MultiInference(request, 10.0)
    classify, regress = response.results
    assert classify.model_spec.signature_name == "classify_x_to_y" and classify.model_spec.version.value == 123
    assert [row.classes[0].score for row in classify.classification_result.classifications] == [3.0, 5.0]
    assert [r.value for r in regress.regression_result.regressions] == [3.0, 5.0]
    assert regress.model_spec.name == "hpt" and regress.model_spec.signature_name == "regress_x_to_y"

    request.tasks[1].method_name = "tensorflow/serving/predict"
    err = rpc_error(stub.MultiInference, request, 10.0)
    assert (err.code(), err.details()) == (grpc.StatusCode.UNIMPLEMENTED,
                                           "Unsupported signature method_name: tensorflow/serving/predict")
    request.tasks[1].method_name = "tensorflow/serving/regress"
    request.tasks[1].model_spec.signature_name = "classify_x_to_y"
    err = rpc_error(stub.MultiInference, request, 10.0)
    assert err.details() == "Duplicate evaluation of signature: classify_x_to_y"
    request.tasks[1].model_spec.name = "other"
    err = rpc_error(stub.MultiInference, request, 10.0)
    assert err.details() == "All ModelSpecs in a MultiInferenceRequest must access the same model name."
    err = rpc_error(stub.MultiInference, inference_pb2.MultiInferenceRequest(), 10.0)
    assert (err.code(), err.details()) == (grpc.StatusCode.INVALID_ARGUMENT, "ModelSpec has no name specified.")


# --------------------------------------------------------------------------- metadata and status

def test_get_model_metadata(stub):
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = "half_plus_two"
    request.model_spec.version_label = "stable"
    request.metadata_field.append("signature_def")
    response = stub.GetModelMetadata(request, 10.0)
    assert response.model_spec.name == "half_plus_two" and response.model_spec.version.value == 123
    assert not response.model_spec.signature_name
    any_proto = response.metadata["signature_def"]
    assert any_proto.type_url == "type.googleapis.com/tensorflow.serving.SignatureDefMap"
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    assert any_proto.Unpack(signature_map)
    sig = signature_map.signature_def["serving_default"]
    assert sig.inputs["x"].name == "x:0" and sig.outputs["y"].dtype == types_pb2.DT_FLOAT
    assert "regress_x_to_y" in signature_map.signature_def

    for fields, details in (([], "GetModelMetadataRequest must specify at least one metadata_field"),
                            (["signature_def", "bogus"], "Metadata field bogus is not supported")):
        request.ClearField("metadata_field")
        request.metadata_field.extend(fields)
        err = rpc_error(stub.GetModelMetadata, request, 10.0)
        assert (err.code(), err.details()) == (grpc.StatusCode.INVALID_ARGUMENT, details)
    err = rpc_error(stub.GetModelMetadata, get_model_metadata_pb2.GetModelMetadataRequest(), 10.0)
    assert err.details() == "Missing ModelSpec"


def test_get_model_status(stub, model_stub):
    stub.Predict(hpt_request("half_plus_two", version=123), 30.0)  # waits while 123 still loads
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "half_plus_two"
    response = model_stub.GetModelStatus(request, 10.0)
    assert [(s.version, s.state, s.status.error_code) for s in response.model_version_status] == [
        (124, get_model_status_pb2.ModelVersionStatus.AVAILABLE, 0),
        (123, get_model_status_pb2.ModelVersionStatus.AVAILABLE, 0),
    ]
    request.model_spec.version.value = 123
    assert [s.version for s in model_stub.GetModelStatus(request, 10.0).model_version_status] == [123]
    request.model_spec.version.value = 7
    err = rpc_error(model_stub.GetModelStatus, request, 10.0)
    assert (err.code(), err.details()) == (grpc.StatusCode.NOT_FOUND, "Could not find version 7 of model half_plus_two")
    request.model_spec.name = "nope"
    request.model_spec.ClearField("version")
    err = rpc_error(model_stub.GetModelStatus, request, 10.0)
    assert (err.code(), err.details()) == (grpc.StatusCode.NOT_FOUND, "Could not find any versions of model nope")
    err = rpc_error(model_stub.GetModelStatus, get_model_status_pb2.GetModelStatusRequest(), 10.0)
    assert (err.code(), err.details()) == (grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec")


# --------------------------------------------------------------------------- health, reflection, profiler

def test_health_reports_serving(channel):
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "ModelService", "PredictionService", "tensorflow.serving.PredictionService",
                    "tensorflow.serving.ModelService"):
        assert health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status == \
            health_pb2.HealthCheckResponse.SERVING
    err = rpc_error(health.Check, health_pb2.HealthCheckRequest(service="nope"), timeout=10)
    assert err.code() == grpc.StatusCode.NOT_FOUND


def test_reflection_lists_the_services(channel):
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10)
    names = {s.name for r in responses for s in r.list_services_response.service}
    assert {"tensorflow.serving.PredictionService", "tensorflow.serving.ModelService",
            "grpc.health.v1.Health"} <= names


def test_profiler_trace_writes_a_trace(fleet, main, stub, tmp_path):
    """TensorBoard's capture path: `trace('grpc://host:port', logdir, ms)` on the model port.
    The trace goes to the server's --profiler_dir, never to the logdir the client names."""
    done = threading.Event()

    def traffic():  # something for the trace to record
        while not done.is_set():
            stub.Predict(hpt_request(), 10.0)

    worker = threading.Thread(target=traffic)
    worker.start()
    try:
        tf.profiler.experimental.client.trace(f"grpc://{main.grpc_target}", str(tmp_path), 300)
    finally:
        done.set()
        worker.join()
    traces = list((fleet["dir"] / "profiles").glob("*/*.xplane.pb"))
    assert traces and traces[0].stat().st_size > 0, list((fleet["dir"] / "profiles").rglob("*"))
    assert not list(tmp_path.rglob("*")), "the client's repository_root was used"


def test_profiler_without_a_directory_writes_to_a_private_temporary_one(fleet, tmp_path):
    server = fleet["reload"]  # profiler on, no --profiler_dir
    request = ProfileRequest(session_id="run", host_name="h", repository_root=str(tmp_path), duration_ms=10)
    with grpc.insecure_channel(server.grpc_target) as ch:
        ch.unary_unary("/tensorflow.ProfilerService/Profile")(request.SerializeToString(), timeout=60)
    line = server.lines[server.wait_for_log("Profiles are written to ")]
    directory = Path(line.split("Profiles are written to ", 1)[1].split(" (", 1)[0])
    try:
        assert directory.parent == Path(tempfile.gettempdir())
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
        assert (directory / "run" / "h.xplane.pb").is_file()
    finally:
        shutil.rmtree(directory)
    assert not list(tmp_path.rglob("*"))


# --------------------------------------------------------------------------- TLS

def test_tls(fleet):
    server = fleet["tls"]
    assert "Using SSL credentials" in server.output
    credentials = grpc.ssl_channel_credentials(root_certificates=fleet["certs"]["ca.pem"])
    with grpc.secure_channel(server.grpc_target, credentials) as ch:
        response = prediction_service_pb2_grpc.PredictionServiceStub(ch).Predict(hpt_request(), 10.0)
        assert list(response.outputs["y"].float_val) == [2.5, 3.0, 4.5]
    with grpc.insecure_channel(server.grpc_target) as ch:
        err = rpc_error(prediction_service_pb2_grpc.PredictionServiceStub(ch).Predict, hpt_request(), 5.0)
        assert err.code() == grpc.StatusCode.UNAVAILABLE


def test_mutual_tls(fleet):
    server, certs = fleet["mtls"], fleet["certs"]
    with_cert = grpc.ssl_channel_credentials(certs["ca.pem"], certs["client.key"], certs["client.pem"])
    with grpc.secure_channel(server.grpc_target, with_cert) as ch:
        response = prediction_service_pb2_grpc.PredictionServiceStub(ch).Predict(hpt_request(), 10.0)
        assert list(response.outputs["y"].float_val) == [2.5, 3.0, 4.5]
    without_cert = grpc.ssl_channel_credentials(certs["ca.pem"])
    with grpc.secure_channel(server.grpc_target, without_cert) as ch:
        err = rpc_error(prediction_service_pb2_grpc.PredictionServiceStub(ch).Predict, hpt_request(), 5.0)
        assert err.code() == grpc.StatusCode.UNAVAILABLE


# --------------------------------------------------------------------------- startup errors

def test_bad_ssl_config_is_a_startup_error(fleet):
    server = fleet["bad_ssl"]
    assert server.wait_exit(120) != 0
    assert "ssl_config_file" in server.output and "bogus_field" in server.output
    assert "Traceback" not in server.output


def test_port_in_use_is_a_startup_error(main, fleet):
    server = fleet["port_taken"]
    assert server.wait_exit(120) != 0
    assert f"cannot listen for gRPC on 0.0.0.0:{main.grpc_port}" in server.output
    assert "Traceback" not in server.output


# --------------------------------------------------------------------------- HandleReloadConfigRequest

def reload_request(*entries: str) -> model_management_pb2.ReloadConfigRequest:
    request = model_management_pb2.ReloadConfigRequest()
    text_format.Parse(config_text(*entries), request.config)
    return request


@pytest.fixture(scope="module")
def reload_stubs(fleet):
    with grpc.insecure_channel(fleet["reload"].grpc_target) as ch:
        yield model_service_pb2_grpc.ModelServiceStub(ch), prediction_service_pb2_grpc.PredictionServiceStub(ch)


def test_reload_adds_a_model(reload_stubs, testdata):
    models, predictions = reload_stubs
    request = reload_request(model_entry("hpt", testdata / "saved_model_half_plus_two_cpu"),
                             model_entry("three", testdata / "saved_model_half_plus_three"))
    request.metric_names.append("/tensorflow/serving/model_count")
    response = models.HandleReloadConfigRequest(request, 60.0)
    assert response.status.error_code == 0 and not response.status.error_message
    assert [(m.name, m.int64_value_increase) for m in response.metric] == [("/tensorflow/serving/model_count", 0)]
    assert list(predictions.Predict(hpt_request("three"), 10.0).outputs["y"].float_val) == [3.5, 4.0, 5.5]


def test_reload_removes_a_model(reload_stubs, testdata):
    models, predictions = reload_stubs
    models.HandleReloadConfigRequest(reload_request(model_entry("three", testdata / "saved_model_half_plus_three")),
                                     60.0)
    status = get_model_status_pb2.GetModelStatusRequest()
    status.model_spec.name = "hpt"
    deadline = time.monotonic() + 30
    while models.GetModelStatus(status, 10.0).model_version_status[0].state != \
            get_model_status_pb2.ModelVersionStatus.END:
        assert time.monotonic() < deadline, "hpt was never unloaded"
        time.sleep(0.02)  # polling interval of a bounded wait, not a synchronisation guess
    err = rpc_error(predictions.Predict, hpt_request("hpt"), 10.0)
    assert (err.code(), err.details()) == (grpc.StatusCode.NOT_FOUND, "Servable not found for request: Latest(hpt)")
    assert predictions.Predict(hpt_request("three"), 10.0).model_spec.version.value == 123


def test_reload_with_a_bad_base_path_answers_an_error_not_a_hang(reload_stubs, testdata):
    models, predictions = reload_stubs
    request = reload_request(model_entry("three", testdata / "saved_model_half_plus_three"),
                             model_entry("ghost", "/nonexistent/pyserving/ghost"))
    started = time.monotonic()
    err = rpc_error(models.HandleReloadConfigRequest, request, 30.0)
    assert err.code() not in (grpc.StatusCode.OK, grpc.StatusCode.DEADLINE_EXCEEDED), err.details()
    assert "ghost" in err.details()
    assert time.monotonic() - started < 25
    assert predictions.Predict(hpt_request("three"), 10.0).model_spec.version.value == 123


def test_reload_rejects_invalid_configs(reload_stubs):
    models, _ = reload_stubs
    err = rpc_error(models.HandleReloadConfigRequest, model_management_pb2.ReloadConfigRequest(), 10.0)
    assert (err.code(), err.details()) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "ServerModelConfig type not supported by HandleReloadConfigRequest. "
        "Only ModelConfigList is currently supported",
    )
    err = rpc_error(models.HandleReloadConfigRequest, reload_request(model_entry("rel", "relative/path")), 10.0)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "absolute" in err.details()


# --------------------------------------------------------------------------- UNIX socket, tensor_content, drain

@pytest.fixture(scope="module")
def unix_stub(fleet):
    with grpc.insecure_channel(f"unix:{fleet['socket']}") as ch:
        yield prediction_service_pb2_grpc.PredictionServiceStub(ch), ch


def test_unix_socket_replaces_a_stale_socket_file(fleet, unix_stub):
    stub, _ = unix_stub
    assert f"Running gRPC ModelServer at UNIX socket {fleet['socket']} ..." in fleet["unix"].output
    assert "Running gRPC ModelServer at 0.0.0.0" not in fleet["unix"].output
    np.testing.assert_array_equal(tf.make_ndarray(stub.Predict(hpt_request(), 10.0).outputs["y"]), [[2.5], [3], [4.5]])


def test_serialization_as_tensor_content(unix_stub):
    stub, _ = unix_stub
    y = stub.Predict(hpt_request(), 10.0).outputs["y"]
    assert not y.float_val and len(y.tensor_content) == 12
    np.testing.assert_array_equal(tf.make_ndarray(y), [[2.5], [3.0], [4.5]])
    value = np.array([1, -2, 3], np.int64)
    y = stub.Predict(predict_request("identity", {"x": value}, signature="int64"), 10.0).outputs["y"]
    assert not y.int64_val and y.tensor_content
    np.testing.assert_array_equal(tf.make_ndarray(y), value)
    # a scalar keeps its empty tensor_shape, as TF's AsProtoTensorContent writes it
    y = stub.Predict(predict_request("identity", {"x": np.float32(2.5)}, signature="float32"), 10.0).outputs["y"]
    expected = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_content=np.float32(2.5).tobytes())
    expected.tensor_shape.SetInParent()
    assert y.SerializeToString() == expected.SerializeToString()


def test_profiler_can_be_disabled(unix_stub):
    _, channel = unix_stub
    err = rpc_error(channel.unary_unary("/tensorflow.ProfilerService/Monitor"), b"", timeout=10)
    assert err.code() == grpc.StatusCode.UNIMPLEMENTED


def test_sigterm_drains_requests_in_flight_and_removes_the_socket(fleet, unix_stub):
    stub, _ = unix_stub
    server = fleet["unix"]
    slow = stub.Predict.future(predict_request("slow", {"n": np.array(300_000, np.int64)}), 60.0)
    # Answered after the slow request was received on the same connection: it is in flight.
    stub.Predict(hpt_request(), 10.0)
    server.proc.send_signal(signal.SIGTERM)
    assert tf.make_ndarray(slow.result().outputs["count"]) == 300_000.0
    assert server.wait_exit(30) == 0
    assert "gRPC server stopped" in server.output
    assert not os.path.exists(fleet["socket"])


# --------------------------------------------------------------------------- load

def test_a_burst_of_concurrent_calls_is_queued_not_cancelled(stub):
    """2000 calls at once: gRPC core's default pending queue (1000) would cancel some."""
    request = hpt_request()
    futures = [stub.Predict.future(request, 60.0) for _ in range(2000)]
    codes = [f.code() for f in futures]
    assert set(codes) == {grpc.StatusCode.OK}


# --------------------------------------------------------------------------- pieces without a server

def test_error_mapping_truncation_and_internal_errors():
    import asyncio

    from pyserving.api.grpc.servicers import rpc
    from pyserving.errors import Code, ServingError

    class Context:
        aborted: tuple | None = None

        async def abort(self, code, details):
            self.aborted = (code, details)

    class Servicer:
        @rpc
        async def Fails(self, request, context):
            raise ServingError(Code.UNAVAILABLE, "x" * 1500)

        @rpc
        async def Crashes(self, request, context):
            return 1 / 0

        @rpc
        async def Works(self, request, context):
            return "ok"

    servicer = Servicer()
    for method, expected in (
        (servicer.Fails, (grpc.StatusCode.UNAVAILABLE, "x" * 1024 + "...TRUNCATED")),
        (servicer.Crashes, (grpc.StatusCode.INTERNAL, "ZeroDivisionError: division by zero")),
    ):
        context = Context()
        asyncio.run(method(None, context))
        assert context.aborted == expected
    assert asyncio.run(servicer.Works(None, Context())) == "ok"


def test_channel_arguments_parse_like_tf_serving():
    from pyserving.api.grpc.server import parse_channel_arguments
    from pyserving.errors import StartupError

    assert parse_channel_arguments("") == []
    assert parse_channel_arguments("grpc.max_connection_age_ms=1000,grpc.primary_user_agent=x y,n=-3") == [
        ("grpc.max_connection_age_ms", 1000), ("grpc.primary_user_agent", "x y"), ("n", -3)]
    assert parse_channel_arguments("big=99999999999") == [("big", "99999999999")]  # not an int32
    with pytest.raises(StartupError):
        parse_channel_arguments("novalue")


def test_config_protos_match_tf_serving_field_numbers(testdata):
    from pyserving.protos.config_protos import BatchingParameters, MonitoringConfig, SSLConfig, parse_text

    assert SSLConfig(server_key="k", server_cert="c", custom_ca="a", client_verify=True).SerializeToString() == \
        b"\n\x01k\x12\x01c\x1a\x01a\x20\x01"
    batching = parse_text(BatchingParameters, (testdata / "batching_config.txt").read_text())
    assert batching.max_batch_size.value == 128 and batching.num_batch_threads.value == 8
    assert batching.HasField("batch_timeout_micros") and not batching.HasField("thread_pool_name")
    full = parse_text(BatchingParameters, """
        max_batch_size { value: 1 } batch_timeout_micros { value: 2 } max_enqueued_batches { value: 3 }
        num_batch_threads { value: 4 } thread_pool_name { value: "p" } allowed_batch_sizes: [6]
        pad_variable_length_inputs: true enable_large_batch_splitting { value: true }
        max_execution_batch_size { value: 9 }""")
    tags = []
    data = full.SerializeToString()
    i = 0
    while i < len(data):  # walk the top-level fields: (number, wire type)
        tag = data[i]
        tags.append(tag >> 3)
        i += 1
        if tag & 7 == 2:
            i += 1 + data[i]
        else:
            i += 1
    assert sorted(tags) == [1, 2, 3, 4, 5, 6, 7, 8, 9]
    monitoring = parse_text(MonitoringConfig, (testdata / "monitoring_config.txt").read_text())
    assert monitoring.prometheus_config.enable
    assert monitoring.prometheus_config.path == "/monitoring/prometheus/metrics"
