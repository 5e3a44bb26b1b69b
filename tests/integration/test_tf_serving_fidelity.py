"""What TF Serving's own C++ tests of its gRPC APIs check, as black-box requests against the
real server (the official stubs, and REST where the behaviour is shared).

Scalar outputs (`predict_impl_test.cc`: PredictionSuccess, PredictionWithNamed*Signature,
PredictionWithCustomizedSignatures) compare whole responses, `tensor_shape {}` included. The
classify and regress output checks (`classifier_test.cc`, `regressor_test.cc`) use a model
made here whose signatures return what TF Serving's mock sessions return: scores of rank 3,
classes of the wrong batch size or dtype, and so on; the messages are those of
`classifier.cc` and `regressor.cc`. Wrong input dtypes (`predict_util_test.cc`) and unknown
MultiInference signatures (`multi_inference_helper_test.cc`) complete it. No answer may
name a Python exception.

One server for the module: TF Serving's half_plus_two (TF1 and TF2 exports) and counter
from the `testdata` tree, and the malformed-outputs model; a second one, with
`--enable_signature_method_name_check`, for what that flag refuses (`predict_util_test.cc`,
`classifier_test.cc`, `regressor_test.cc` MethodNameCheck).
"""

from __future__ import annotations

import re
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow.python.util import deprecation
from tensorflow_serving.apis import (
    classification_pb2,
    inference_pb2,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from support import READY, ServerProcess

_v1 = tf.compat.v1
CLASSIFY = "tensorflow/serving/classify"
REGRESS = "tensorflow/serving/regress"
PREDICT = "tensorflow/serving/predict"
VERSION = 123  # the testdata exports' version folder (00000123)


# --------------------------------------------------------------------------- the model


def make_malformed_outputs_model(export_dir: Path) -> Path:
    """A TF1 export whose classify and regress signatures return malformed outputs.

    Every classify/regress signature reads `inputs` (serialized examples, [-1], never
    parsed: only their count n matters) and returns constants shaped from n: the name of
    each signature says what is wrong. Two predict signatures: `two_inputs` (aliases in the
    opposite order of their tensor names: `first` is `z_first:0` float, `second` is
    `a_second:0` int64) and `classify_x2_to_y3` (a classification signature with a float
    input, `inputs` -> `scores` = 0.5 * x + 3, as in TF's half_plus_two testdata). Four
    well-formed ones with a method name not their own: `classify_says_regress`,
    `regress_says_predict`, `unknown_method` and `no_method` (both x -> y = 0.5 * x + 3).
    """
    info = _v1.saved_model.build_tensor_info
    with tf.Graph().as_default() as graph, _v1.Session(graph=graph) as sess, deprecation.silence():
        serialized = _v1.placeholder(tf.string, [None], name="tf_example")
        n = tf.shape(serialized)[0]
        classes = tf.fill(tf.stack([n, 2]), "label")
        scores = tf.fill(tf.stack([n, 2]), 0.25)
        examples = {"inputs": info(serialized)}

        def classify(**outputs: tf.Tensor):
            return _v1.saved_model.build_signature_def(examples, {k: info(v) for k, v in outputs.items()}, CLASSIFY)

        def regress(value: tf.Tensor):
            return _v1.saved_model.build_signature_def(examples, {"outputs": info(value)}, REGRESS)

        first = _v1.placeholder(tf.float32, None, name="z_first")
        second = _v1.placeholder(tf.int64, None, name="a_second")
        x2 = _v1.placeholder(tf.float32, None, name="x2")
        signatures = {
            "good_classify": classify(classes=classes, scores=scores),
            "scores_of_rank_3": classify(classes=classes, scores=tf.fill(tf.stack([n, 2, 1]), 0.25)),
            "classes_of_one_row": classify(classes=tf.constant([["a", "b"]]), scores=scores),
            "scores_of_one_row": classify(classes=classes, scores=tf.constant([[0.5, 0.5]])),
            "three_scores_two_classes": classify(classes=classes, scores=tf.fill(tf.stack([n, 3]), 0.25)),
            "string_scores": classify(classes=classes, scores=tf.fill(tf.stack([n, 2]), "0.25")),
            "float_classes": classify(classes=tf.fill(tf.stack([n, 2]), 1.0), scores=scores),
            "classes_of_rank_1": classify(classes=tf.fill(tf.stack([n]), "label")),
            "good_regress": regress(tf.fill(tf.stack([n]), 1.5)),
            "regress_two_values": regress(tf.constant([1.0, 2.0])),
            "regress_strings": regress(tf.fill(tf.stack([n]), "1.5")),
            "regress_doubles": regress(tf.fill(tf.stack([n]), tf.constant(1.5, tf.float64))),
            "regress_two_columns": regress(tf.fill(tf.stack([n, 2]), 1.5)),
            "two_inputs": _v1.saved_model.build_signature_def(
                {"first": info(first), "second": info(second)},
                {"sum": info(tf.identity(first + tf.cast(second, tf.float32), name="sum"))}, PREDICT),
            "classify_x2_to_y3": _v1.saved_model.build_signature_def(
                {"inputs": info(x2)}, {"scores": info(tf.identity(0.5 * x2 + 3.0, name="y3"))}, CLASSIFY),
        }
        # Well-formed signatures whose method name is another's, unknown or empty, for
        # --enable_signature_method_name_check.
        y3 = {"y": info(graph.get_tensor_by_name("y3:0"))}
        signatures.update({
            "classify_says_regress": _v1.saved_model.build_signature_def(
                examples, {"classes": info(classes), "scores": info(scores)}, REGRESS),
            "regress_says_predict": _v1.saved_model.build_signature_def(
                examples, {"outputs": info(tf.fill(tf.stack([n]), 1.5))}, PREDICT),
            "unknown_method": _v1.saved_model.build_signature_def({"x": info(x2)}, y3, "not/supported/method"),
            "no_method": _v1.saved_model.build_signature_def({"x": info(x2)}, y3, ""),
        })
        builder = _v1.saved_model.Builder(str(export_dir))
        builder.add_meta_graph_and_variables(sess, [tf.saved_model.SERVING], signature_def_map=signatures)
        builder.save()
    return export_dir


@pytest.fixture(scope="module")
def servers(testdata, tmp_path_factory):
    d = tmp_path_factory.mktemp("fidelity")
    make_malformed_outputs_model(d / "outputs" / "1")
    entries = {
        "hpt": testdata / "saved_model_half_plus_two_cpu",
        "hpt_tf2": testdata / "saved_model_half_plus_two_tf2_cpu",
        "counter": testdata / "saved_model_counter",
        "outputs": d / "outputs",
    }
    config = d / "models.config"
    config.write_text("model_config_list {\n" + "".join(
        f'  config {{ name: "{name}" base_path: "{path}" model_platform: "tensorflow" }}\n'
        for name, path in entries.items()) + "}\n")
    started = {
        "default": ServerProcess(f"--model_config_file={config}").launch(),
        "checking": ServerProcess(f"--model_config_file={config}", "--enable_signature_method_name_check=true").launch(),
    }
    try:
        for s in started.values():
            s.wait_for_log(READY, timeout=120)
        yield started
    finally:
        for s in started.values():
            if s.proc is not None and s.proc.poll() is None:
                s.stop()


@pytest.fixture(scope="module")
def server(servers):
    return servers["default"]


def grpc_stub(server: ServerProcess):
    with grpc.insecure_channel(server.grpc_target) as channel:
        yield prediction_service_pb2_grpc.PredictionServiceStub(channel)


@pytest.fixture(scope="module")
def stub(server):
    yield from grpc_stub(server)


@pytest.fixture(scope="module")
def checking(servers):
    return servers["checking"]


@pytest.fixture(scope="module")
def checking_stub(checking):
    yield from grpc_stub(checking)


def rpc_error(call, request) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(request, 30.0)
    return info.value


def float_proto(value: float) -> tensor_pb2.TensorProto:
    """A scalar the way TF Serving's tests write one: float_val and dtype, no shape."""
    return tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=[value])


def scalar_output(value: float) -> tensor_pb2.TensorProto:
    out = float_proto(value)
    out.tensor_shape.SetInParent()  # mutable_tensor_shape() in the C++ tests
    return out


def assert_same_response(got, expected) -> None:
    assert got == expected, f"{got} != {expected}"
    assert got.SerializeToString(deterministic=True) == expected.SerializeToString(deterministic=True)


# --------------------------------------------------------------------------- scalar outputs


def predict_request(model: str, signature: str = "", version: int | None = VERSION, **inputs):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    if version is not None:
        request.model_spec.version.value = version
    if signature:
        request.model_spec.signature_name = signature
    for alias, proto in inputs.items():
        request.inputs[alias].CopyFrom(proto)
    return request


def expected_response(request, signature: str, **outputs) -> predict_pb2.PredictResponse:
    response = predict_pb2.PredictResponse()
    response.model_spec.CopyFrom(request.model_spec)
    response.model_spec.signature_name = signature
    for alias, proto in outputs.items():
        response.outputs[alias].CopyFrom(proto)
    return response


def test_prediction_success_answers_a_scalar_with_an_empty_shape(stub):
    request = predict_request("hpt", x=float_proto(2.0))
    assert_same_response(stub.Predict(request, 30.0), expected_response(request, "serving_default", y=scalar_output(3)))


def test_named_regression_and_classification_signatures_answer_scalars(stub):
    request = predict_request("hpt", "regress_x2_to_y3", inputs=float_proto(2.0))
    assert_same_response(stub.Predict(request, 30.0),
                         expected_response(request, "regress_x2_to_y3", outputs=scalar_output(4)))
    request = predict_request("outputs", "classify_x2_to_y3", version=None, inputs=float_proto(2.0))
    response = stub.Predict(request, 30.0)
    expected = expected_response(request, "classify_x2_to_y3", scores=scalar_output(4))
    expected.model_spec.version.value = 1
    assert_same_response(response, expected)


def test_customized_signatures_of_the_counter_model(stub):
    """get, incr, reset, incr (with an output filter), incr_by(3): each a scalar answer."""
    steps = [("get_counter", {}, (), 0), ("incr_counter", {}, (), 1), ("reset_counter", {}, (), 0),
             ("incr_counter", {}, ("output",), 1), ("incr_counter_by", {"delta": float_proto(3)}, (), 4)]
    for signature, inputs, output_filter, value in steps:
        request = predict_request("counter", signature, **inputs)
        request.output_filter.extend(output_filter)
        assert_same_response(stub.Predict(request, 30.0),
                             expected_response(request, signature, output=scalar_output(value)))


def test_rest_scalars_are_unchanged(server):
    r = server.post("/v1/models/hpt:predict", json={"inputs": 2.0})
    assert (r.status_code, r.json()) == (200, {"outputs": 3.0})
    r = server.post("/v1/models/hpt:predict", json={"signature_name": "regress_x2_to_y3", "inputs": {"inputs": 2.0}})
    assert (r.status_code, r.json()) == (200, {"outputs": 4.0})


# --------------------------------------------------------------------------- classify and regress outputs

# (signature, examples, message): each answered INVALID_ARGUMENT with this message.
CLASSIFY_ERRORS = [
    ("scores_of_rank_3", 2, "Expected Tensor shape: [batch_size num_classes] but got [2,2,1]"),
    ("classes_of_one_row", 2, "Expected classes output batch size of 2. Got: 1"),
    ("scores_of_one_row", 2, "Expected scores output batch size of 2. Got: 1"),
    ("three_scores_two_classes", 2, "Tensors class and score should match in dim_size(1). Got 2 vs. 3"),
    ("string_scores", 2, "Expected scores Tensor of DT_FLOAT. Got: DT_STRING"),
    ("float_classes", 2, "Expected classes Tensor of DT_STRING. Got: DT_FLOAT"),
    ("classes_of_rank_1", 2, "Expected Tensor shape: [batch_size num_classes] but got [2]"),
]
REGRESS_ERRORS = [
    ("regress_two_values", 1, "Input batch size did not match output batch size: 1 vs. 2"),
    ("regress_strings", 1, "Expected output Tensor of DT_FLOAT.  Got: DT_STRING"),
    ("regress_doubles", 1, "Expected output Tensor of DT_FLOAT.  Got: DT_DOUBLE"),
    ("regress_two_columns", 1,
     "Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but got [1,2]"),
]


def example_list(target, n: int) -> None:
    for i in range(n):
        target.example_list.examples.add().features.feature["x"].float_list.value.append(float(i))


def classify_request(signature: str, n: int) -> classification_pb2.ClassificationRequest:
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "outputs"
    request.model_spec.signature_name = signature
    example_list(request.input, n)
    return request


def regress_request(signature: str, n: int) -> regression_pb2.RegressionRequest:
    request = regression_pb2.RegressionRequest()
    request.model_spec.name = "outputs"
    request.model_spec.signature_name = signature
    example_list(request.input, n)
    return request


def rest_body(signature: str, n: int) -> dict:
    return {"signature_name": signature, "examples": [{"x": float(i)} for i in range(n)]}


def test_well_formed_outputs_still_classify_and_regress(stub, server):
    response = stub.Classify(classify_request("good_classify", 2), 30.0)
    assert [[(c.label, c.score) for c in row.classes] for row in response.result.classifications] == \
        [[("label", 0.25)] * 2] * 2
    response = stub.Regress(regress_request("good_regress", 3), 30.0)
    assert [r.value for r in response.result.regressions] == [1.5] * 3
    r = server.post("/v1/models/outputs:classify", json=rest_body("good_classify", 1))
    assert r.json() == {"results": [[["label", 0.25], ["label", 0.25]]]}
    r = server.post("/v1/models/outputs:regress", json=rest_body("good_regress", 2))
    assert r.json() == {"results": [1.5, 1.5]}


@pytest.mark.parametrize("signature, n, message", CLASSIFY_ERRORS, ids=[c[0] for c in CLASSIFY_ERRORS])
def test_malformed_classification_outputs(stub, server, signature, n, message):
    err = rpc_error(stub.Classify, classify_request(signature, n))
    assert (err.code(), err.details()) == (grpc.StatusCode.INVALID_ARGUMENT, message)
    r = server.post("/v1/models/outputs:classify", json=rest_body(signature, n))
    assert (r.status_code, r.json()) == (400, {"error": message})


@pytest.mark.parametrize("signature, n, message", REGRESS_ERRORS, ids=[c[0] for c in REGRESS_ERRORS])
def test_malformed_regression_outputs(stub, server, signature, n, message):
    err = rpc_error(stub.Regress, regress_request(signature, n))
    assert (err.code(), err.details()) == (grpc.StatusCode.INVALID_ARGUMENT, message)
    r = server.post("/v1/models/outputs:regress", json=rest_body(signature, n))
    assert (r.status_code, r.json()) == (400, {"error": message})


def multi_inference_request(model: str, tasks: list[tuple[str, str]], n: int = 1):
    request = inference_pb2.MultiInferenceRequest()
    for signature, method in tasks:
        task = request.tasks.add()
        task.model_spec.name = model
        task.model_spec.signature_name = signature
        task.method_name = method
    example_list(request.input, n)
    return request


def test_multi_inference_checks_outputs_too(stub):
    request = multi_inference_request("outputs", [("good_classify", CLASSIFY), ("regress_two_values", REGRESS)])
    err = rpc_error(stub.MultiInference, request)
    assert (err.code(), err.details()) == (grpc.StatusCode.INVALID_ARGUMENT,
                                           "Input batch size did not match output batch size: 1 vs. 2")


# --------------------------------------------------------------------------- error texts


@pytest.mark.parametrize("model", ["hpt", "hpt_tf2"])
def test_multi_inference_with_an_unknown_signature(stub, model):
    request = multi_inference_request(model, [("ThisSignatureDoesNotExist", REGRESS)])
    err = rpc_error(stub.MultiInference, request)
    assert (err.code(), err.details()) == (grpc.StatusCode.INVALID_ARGUMENT,
                                           "Requested signature not found in model graph: ThisSignatureDoesNotExist")
    assert "signature not found" in err.details()  # what TF Serving's test looks for
    # a later task's signature is checked before anything runs
    request = multi_inference_request(model, [("regress_x_to_y", REGRESS), ("nope", CLASSIFY)])
    assert rpc_error(stub.MultiInference, request).details() == "Requested signature not found in model graph: nope"


def test_predict_input_of_the_wrong_dtype(stub):
    request = predict_request("hpt", x=tensor_pb2.TensorProto(dtype=types_pb2.DT_BOOL, bool_val=[True]))
    err = rpc_error(stub.Predict, request)
    assert (err.code(), err.details()) == (grpc.StatusCode.INVALID_ARGUMENT,
                                           "Expects arg[0] to be float but bool is provided")
    strings = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, string_val=[b"any_value"])
    strings.tensor_shape.dim.add().size = 1
    request = predict_request("hpt", x=strings)
    request.output_filter.append("y")
    assert rpc_error(stub.Predict, request).details() == "Expects arg[0] to be float but string is provided"
    # Session::Run counts its arguments in tensor-name order: `first` is z_first:0, the second
    request = predict_request("outputs", "two_inputs", version=None, first=tf.make_tensor_proto(np.array([True])),
                              second=tf.make_tensor_proto(np.array([1], np.int64)))
    assert rpc_error(stub.Predict, request).details() == "Expects arg[1] to be float but bool is provided"
    request = predict_request("outputs", "two_inputs", version=None, first=tf.make_tensor_proto(np.array([1.0], np.float32)),
                              second=tf.make_tensor_proto(np.array([1], np.int32)))
    assert rpc_error(stub.Predict, request).details() == "Expects arg[0] to be int64 but int32 is provided"


# --------------------------------------------------------------------------- no Python in the answers

PYTHON_EXCEPTION = re.compile(r"Traceback|\b[A-Z]\w*(?:Error|Exception)\b|\bStopIteration\b")


def grpc_answer(call, request) -> str:
    """The status details of a call ("" when it succeeds)."""
    try:
        call(request, 30.0)
    except grpc.RpcError as err:
        return err.details()
    return ""


def test_no_answer_names_a_python_exception(stub, server, checking_stub, checking):
    answers = []
    for _, method, request, verb, body, _, _ in method_check_calls():
        answers.append(grpc_answer(getattr(checking_stub, method), request))
        if verb is not None:
            answers.append(checking.post(f"/v1/models/{verb}", json=body).text)
    for signature, n, _ in CLASSIFY_ERRORS:
        answers.append(grpc_answer(stub.Classify, classify_request(signature, n)))
        answers.append(server.post("/v1/models/outputs:classify", json=rest_body(signature, n)).text)
        answers.append(grpc_answer(stub.MultiInference, multi_inference_request("outputs", [(signature, CLASSIFY)], n)))
    for signature, n, _ in REGRESS_ERRORS:
        answers.append(grpc_answer(stub.Regress, regress_request(signature, n)))
        answers.append(server.post("/v1/models/outputs:regress", json=rest_body(signature, n)).text)
        answers.append(grpc_answer(stub.MultiInference, multi_inference_request("outputs", [(signature, REGRESS)], n)))
    # the wrong kind of signature for the API, and wrong input dtypes
    answers.append(grpc_answer(stub.Classify, classify_request("good_regress", 1)))
    answers.append(grpc_answer(stub.Regress, regress_request("good_classify", 1)))
    answers.append(grpc_answer(stub.Classify, classify_request("two_inputs", 1)))
    answers.append(grpc_answer(stub.Predict, predict_request(
        "hpt", x=tensor_pb2.TensorProto(dtype=types_pb2.DT_BOOL, bool_val=[True]))))
    answers.append(server.post("/v1/models/outputs:classify", json=rest_body("classify_x2_to_y3", 1)).text)
    leaks = [a for a in answers if PYTHON_EXCEPTION.search(a)]
    assert not leaks, leaks


# --------------------------------------------------------------------------- --enable_signature_method_name_check


def method_check_calls():
    """(name, gRPC method, request, REST verb, REST body, code with the check, message)."""
    classify_on_regress = "Expected classification signature method_name to be tensorflow/serving/classify. Was: "
    regress_on_other = "Expected regression signature method_name to be tensorflow/serving/regress. Was: "
    predict_on_other = ("Expected prediction signature method_name to be one of {tensorflow/serving/predict, "
                        "tensorflow/serving/classify, tensorflow/serving/regress}. Was: ")
    tf2_classify = classification_pb2.ClassificationRequest()
    tf2_classify.model_spec.name = "hpt_tf2"
    tf2_classify.model_spec.signature_name = "classify_x_to_y"
    example_list(tf2_classify.input, 1)
    return [
        ("classify_on_regress", "Classify", classify_request("classify_says_regress", 1), "outputs:classify",
         rest_body("classify_says_regress", 1), grpc.StatusCode.INVALID_ARGUMENT, classify_on_regress + REGRESS),
        ("classify_on_tf2_predict", "Classify", tf2_classify, "hpt_tf2:classify", rest_body("classify_x_to_y", 1),
         grpc.StatusCode.INVALID_ARGUMENT, classify_on_regress + PREDICT),
        ("regress_on_predict", "Regress", regress_request("regress_says_predict", 1), "outputs:regress",
         rest_body("regress_says_predict", 1), grpc.StatusCode.INVALID_ARGUMENT, regress_on_other + PREDICT),
        ("predict_unknown_method", "Predict", predict_request("outputs", "unknown_method", None, x=float_proto(2.0)),
         "outputs:predict", {"signature_name": "unknown_method", "inputs": 2.0},
         grpc.StatusCode.INTERNAL, predict_on_other + "not/supported/method"),
        ("predict_no_method", "Predict", predict_request("outputs", "no_method", None, x=float_proto(2.0)),
         "outputs:predict", {"signature_name": "no_method", "inputs": 2.0}, grpc.StatusCode.INTERNAL,
         predict_on_other),
        ("multi_inference_on_tf2_predict", "MultiInference",
         multi_inference_request("hpt_tf2", [("regress_x_to_y", REGRESS)]), None, None,
         grpc.StatusCode.INVALID_ARGUMENT, regress_on_other + PREDICT),
    ]


# TF Serving's REST front end maps INVALID_ARGUMENT to 400 and INTERNAL to 500.
HTTP = {grpc.StatusCode.INVALID_ARGUMENT: 400, grpc.StatusCode.INTERNAL: 500}


@pytest.mark.parametrize("case", method_check_calls(), ids=lambda c: c[0])
def test_method_name_check_refuses_a_signature_of_another_method(checking_stub, checking, case):
    _, method, request, verb, body, code, message = case
    err = rpc_error(getattr(checking_stub, method), request)
    assert (err.code(), err.details()) == (code, message)
    if verb is not None:
        r = checking.post(f"/v1/models/{verb}", json=body)
        assert (r.status_code, r.json()) == (HTTP[code], {"error": message})


@pytest.mark.parametrize("case", method_check_calls(), ids=lambda c: c[0])
def test_without_the_method_name_check_those_signatures_run(stub, server, case):
    _, method, request, verb, body, _, _ = case
    getattr(stub, method)(request, 30.0)
    if verb is not None:
        r = server.post(f"/v1/models/{verb}", json=body)
        assert r.status_code == 200, r.text


def test_method_name_check_lets_each_api_run_its_own_methods(checking_stub):
    # Predict runs classify and regress signatures too; Classify and Regress their own
    response = checking_stub.Predict(predict_request("hpt", "regress_x2_to_y3", inputs=float_proto(2.0)), 30.0)
    assert response.outputs["outputs"].float_val == [4.0]
    response = checking_stub.Predict(predict_request("outputs", "classify_x2_to_y3", None, inputs=float_proto(2.0)),
                                     30.0)
    assert response.outputs["scores"].float_val == [4.0]
    assert len(checking_stub.Classify(classify_request("good_classify", 2), 30.0).result.classifications) == 2
    assert len(checking_stub.Regress(regress_request("good_regress", 2), 30.0).result.regressions) == 2
    response = checking_stub.MultiInference(
        multi_inference_request("outputs", [("good_classify", CLASSIFY), ("good_regress", REGRESS)]), 30.0)
    assert len(response.results) == 2
