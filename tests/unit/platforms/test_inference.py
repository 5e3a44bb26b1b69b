"""Rules of `platforms/inference.py`, with TF Serving's messages: the classify and regress
output checks (`classifier.cc` PostProcessClassificationResult, `regressor.cc`
PostProcessRegressionResult: every malformed output is INVALID_ARGUMENT, never a Python
exception and never a silently reshaped or truncated answer) and the method-name check of
`--enable_signature_method_name_check` (`predict_util.cc`, `classifier.cc`, `regressor.cc`)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from pyserving.errors import Code, ServingError
from pyserving.platforms.base import Signature
from pyserving.platforms.inference import (
    CLASSIFY_METHOD_NAME,
    PREDICT_METHOD_NAME,
    REGRESS_METHOD_NAME,
    check_method_name,
    classification_rows,
    multi_inference_tasks,
    regression_values,
)


def strings(*shape: int) -> np.ndarray:
    out = np.empty(shape, dtype=object)
    out.reshape(-1)[:] = [f"c{i}".encode() for i in range(out.size)]
    return out


def floats(*shape: int, dtype=np.float32) -> np.ndarray:
    return np.arange(np.prod(shape), dtype=dtype).reshape(shape)


def invalid(fn, *args) -> str:
    with pytest.raises(ServingError) as info:
        fn(*args)
    assert info.value.code == Code.INVALID_ARGUMENT
    return info.value.message


def test_classes_and_scores_become_rows_of_label_score_pairs():
    rows = classification_rows({"classes": strings(2, 2), "scores": floats(2, 2)}, 2)
    assert rows == [[(b"c0", 0.0), (b"c1", 1.0)], [(b"c2", 2.0), (b"c3", 3.0)]]
    assert classification_rows({"scores": floats(1, 3)}, 1) == [[(b"", 0.0), (b"", 1.0), (b"", 2.0)]]
    assert classification_rows({"classes": strings(1, 2)}, 1) == [[(b"c0", 0.0), (b"c1", 0.0)]]
    # fixed-width numpy strings are labels too (str ones as UTF-8)
    assert classification_rows({"classes": np.array([["a", "\u00e9"]])}, 1) == [[(b"a", 0.0), ("\u00e9".encode(), 0.0)]]


@pytest.mark.parametrize(
    "outputs, message",
    [
        ({"classes": strings(2, 2), "scores": floats(2, 2, 1)},
         "Expected Tensor shape: [batch_size num_classes] but got [2,2,1]"),
        ({"classes": strings(2), "scores": floats(2, 2)},
         "Expected Tensor shape: [batch_size num_classes] but got [2]"),
        ({"scores": np.float32(1.0)}, "Expected Tensor shape: [batch_size num_classes] but got []"),
        ({"classes": strings(1, 2), "scores": floats(2, 2)}, "Expected classes output batch size of 2. Got: 1"),
        ({"classes": strings(2, 2), "scores": floats(1, 2)}, "Expected scores output batch size of 2. Got: 1"),
        ({"classes": strings(2, 2), "scores": floats(3, 2)}, "Expected scores output batch size of 2. Got: 3"),
        ({"classes": strings(2, 2), "scores": floats(2, 3)},
         "Tensors class and score should match in dim_size(1). Got 2 vs. 3"),
        ({"classes": strings(2, 2), "scores": strings(2, 2)}, "Expected scores Tensor of DT_FLOAT. Got: DT_STRING"),
        ({"scores": floats(2, 2, dtype=np.float64)}, "Expected scores Tensor of DT_FLOAT. Got: DT_DOUBLE"),
        ({"classes": floats(2, 2), "scores": floats(2, 2)}, "Expected classes Tensor of DT_STRING. Got: DT_FLOAT"),
        ({"classes": floats(2, 2, dtype=np.int64)}, "Expected classes Tensor of DT_STRING. Got: DT_INT64"),
        # classes are checked before scores, the batch size after the type
        ({"classes": floats(1, 2), "scores": floats(2, 2, 1)}, "Expected classes Tensor of DT_STRING. Got: DT_FLOAT"),
        ({"classes": strings(1, 2), "scores": strings(2, 2)}, "Expected classes output batch size of 2. Got: 1"),
    ],
)
def test_malformed_classification_outputs_are_invalid_argument(outputs, message):
    assert invalid(classification_rows, outputs, 2) == message


def test_regression_values_take_n_or_n_by_one():
    assert regression_values({"outputs": np.array([1.5, -2.0], np.float32)}, 2) == [1.5, -2.0]
    assert regression_values({"outputs": np.array([[1.5], [-2.0]], np.float32)}, 2) == [1.5, -2.0]


@pytest.mark.parametrize(
    "value, message",
    [
        (floats(2), "Input batch size did not match output batch size: 1 vs. 2"),
        (floats(2, 1), "Input batch size did not match output batch size: 1 vs. 2"),
        (floats(0), "Input batch size did not match output batch size: 1 vs. 0"),
        (floats(1, 2),
         "Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but got [1,2]"),
        (floats(1, 1, 1),
         "Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but got [1,1,1]"),
        (np.float32(2.0),
         "Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but got []"),
        (strings(1), "Expected output Tensor of DT_FLOAT.  Got: DT_STRING"),
        (floats(1, dtype=np.float64), "Expected output Tensor of DT_FLOAT.  Got: DT_DOUBLE"),
        (floats(1, dtype=np.int32), "Expected output Tensor of DT_FLOAT.  Got: DT_INT32"),
        # the shape is checked before the type
        (strings(2), "Input batch size did not match output batch size: 1 vs. 2"),
    ],
)
def test_malformed_regression_outputs_are_invalid_argument(value, message):
    assert invalid(regression_values, {"outputs": value}, 1) == message


# --------------------------------------------------------------------------- --enable_signature_method_name_check

PREDICT, CLASSIFY, REGRESS = PREDICT_METHOD_NAME, CLASSIFY_METHOD_NAME, REGRESS_METHOD_NAME


def signature(method: str, name: str = "s") -> Signature:
    return Signature(name, method, {}, {})


@pytest.mark.parametrize("method", [PREDICT, CLASSIFY, REGRESS])
def test_predict_runs_predict_classify_and_regress_signatures(method):
    check_method_name(signature(method), "predict")


@pytest.mark.parametrize("method", ["", "not/supported/method", "tensorflow/serving/classify "])
def test_predict_refuses_other_methods_as_internal(method):
    with pytest.raises(ServingError) as info:
        check_method_name(signature(method), "predict")
    assert (info.value.code, info.value.message) == (
        Code.INTERNAL,
        "Expected prediction signature method_name to be one of {tensorflow/serving/predict, "
        f"tensorflow/serving/classify, tensorflow/serving/regress}}. Was: {method}")


@pytest.mark.parametrize("api, own, kind", [("classify", CLASSIFY, "classification"),
                                           ("regress", REGRESS, "regression")])
def test_classify_and_regress_run_only_their_own_method(api, own, kind):
    check_method_name(signature(own), api)
    for method in ("", PREDICT, CLASSIFY if own == REGRESS else REGRESS, "unknown"):
        assert invalid(check_method_name, signature(method), api) == (
            f"Expected {kind} signature method_name to be {own}. Was: {method}")


def task(signature_name: str, method: str) -> SimpleNamespace:
    return SimpleNamespace(model_spec=SimpleNamespace(name="m", signature_name=signature_name), method_name=method)


def test_multi_inference_tasks_check_methods_only_when_asked():
    sigs = {"c": signature(PREDICT, "c"), "r": signature(REGRESS, "r")}
    tasks = [task("r", REGRESS), task("c", CLASSIFY)]
    assert multi_inference_tasks(tasks, sigs) == [("r", REGRESS), ("c", CLASSIFY)]
    assert invalid(lambda: multi_inference_tasks(tasks, sigs, method_check=True)) == (
        "Expected classification signature method_name to be tensorflow/serving/classify. "
        "Was: tensorflow/serving/predict")
    # an unsupported task method is still UNIMPLEMENTED, whatever the signature says
    with pytest.raises(ServingError) as info:
        multi_inference_tasks([task("c", PREDICT)], sigs, method_check=True)
    assert info.value.code == Code.UNIMPLEMENTED
