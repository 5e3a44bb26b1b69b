"""The TensorFlow SavedModel platform against generated models and TF Serving's own exports."""

from __future__ import annotations

import json
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pytest
from google.protobuf import json_format

_TESTS_DIR = Path(__file__).resolve().parents[2]
if str(_TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(_TESTS_DIR))

import modelgen  # noqa: E402

from pyserving.errors import Code, ServingError  # noqa: E402
from pyserving.platforms.base import Signature, TensorSpec  # noqa: E402
from pyserving.platforms.tensorflow._validation import (  # noqa: E402
    session_arg_index,
    shape_mismatch_message,
)
from pyserving.platforms.tensorflow._wire_order import signature_key_order  # noqa: E402
from pyserving.platforms.tensorflow.saved_model import (  # noqa: E402
    SavedModelLoader,
    TensorFlowServable,
)

LoadFn = Callable[..., TensorFlowServable]


# ---------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    for name, make in modelgen.ALL_GENERATORS.items():
        make(root / name, 1)
    modelgen.make_half_plus_two(root / "half_plus_two", 2, intercept=3.0)
    return root


@pytest.fixture(scope="module")
def load() -> Iterator[LoadFn]:
    """Load a version directory once per module; everything is unloaded at the end."""
    loaders: dict[str, SavedModelLoader] = {}

    def _load(path: Path | str) -> TensorFlowServable:
        key = str(path)
        if key not in loaders:
            loader = SavedModelLoader(key)
            loader.load()
            loaders[key] = loader
        return loaders[key].servable()

    yield _load
    for loader in loaders.values():
        loader.unload()


@pytest.fixture(scope="module")
def model(models_dir: Path, load: LoadFn) -> Callable[..., TensorFlowServable]:
    def _model(name: str, version: int = 1) -> TensorFlowServable:
        return load(models_dir / name / str(version))

    return _model


@pytest.fixture(scope="module")
def tfs(testdata: Path) -> Callable[[str], Path]:
    """Version 123 of an export of TF Serving's test data tree."""
    return lambda name: testdata / name / "00000123"


def run(servable: TensorFlowServable, signature: str, **inputs: object) -> dict[str, np.ndarray]:
    return servable.run(servable.signatures[signature], inputs)  # type: ignore[arg-type]


def f32(values: object) -> np.ndarray:
    return np.asarray(values, np.float32)


def error_of(fn: Callable[[], object]) -> ServingError:
    with pytest.raises(ServingError) as info:
        fn()
    return info.value


# ---------------------------------------------------------------------------- half_plus_two


def test_half_plus_two_signatures(model: Callable[..., TensorFlowServable]) -> None:
    sigs = model("half_plus_two").signatures
    assert set(sigs) == {"serving_default", "classify_x_to_y", "regress_x_to_y"}
    x = sigs["serving_default"].inputs["x"]
    assert (x.tensor_name, x.dtype, x.np_dtype, x.shape) == ("x:0", "DT_FLOAT", np.float32, (-1, 1))
    assert sigs["serving_default"].outputs["y"].tensor_name == "y:0"
    assert sigs["serving_default"].method_name == "tensorflow/serving/predict"
    classify = sigs["classify_x_to_y"]
    assert classify.method_name == "tensorflow/serving/classify"
    assert list(classify.inputs) == ["inputs"] and list(classify.outputs) == ["scores"]
    assert classify.inputs["inputs"].np_dtype == np.dtype(object)
    assert sigs["regress_x_to_y"].method_name == "tensorflow/serving/regress"


def test_half_plus_two_runs_all_signatures(model: Callable[..., TensorFlowServable]) -> None:
    s = model("half_plus_two")
    out = run(s, "serving_default", x=f32([[1.0], [2.0], [5.0]]))
    np.testing.assert_allclose(out["y"], [[2.5], [3.0], [4.5]])
    assert out["y"].dtype == np.float32
    examples = np.array(modelgen.serialized_examples("x", [2.0, 4.0]), dtype=object)
    np.testing.assert_allclose(run(s, "classify_x_to_y", inputs=examples)["scores"], [[3.0], [4.0]])
    np.testing.assert_allclose(run(s, "regress_x_to_y", inputs=examples)["outputs"], [[3.0], [4.0]])


def test_versions_differ_by_intercept(model: Callable[..., TensorFlowServable]) -> None:
    out = run(model("half_plus_two", 2), "serving_default", x=f32([[1.0]]))
    np.testing.assert_allclose(out["y"], [[3.5]])


def test_rank_one_input_to_column_placeholder_is_accepted(
    model: Callable[..., TensorFlowServable],
) -> None:
    # TF Serving: {"instances": [2.0, 3.0, 4.0]} on half_plus_two gives [3.0, 3.5, 4.0].
    out = run(model("half_plus_two"), "serving_default", x=f32([2.0, 3.0, 4.0]))
    np.testing.assert_allclose(out["y"], [3.0, 3.5, 4.0])
    assert out["y"].shape == (3,)


def test_simple_save_export(model: Callable[..., TensorFlowServable]) -> None:
    s = model("half_plus_two_simple_save")
    assert list(s.signatures) == ["serving_default"]
    np.testing.assert_allclose(run(s, "serving_default", x=f32([[4.0]]))["y"], [[4.0]])


# ---------------------------------------------------------------------- other generated models


def test_frozen_graph_export(model: Callable[..., TensorFlowServable]) -> None:
    s = model("frozen_graph")
    sig = s.signatures["serving_default"]
    assert sig.inputs["input_image"].tensor_name == "input_1:0"
    assert sig.outputs["y_pred"].shape == (-1, 3)
    x = f32([[1, 0, 0, 0], [0.5, -1, 2, 0.25]])
    w, b = modelgen.frozen_graph_weights()
    logits = x @ w + b
    expected = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    out = run(s, "serving_default", input_image=x)
    np.testing.assert_allclose(out["y_pred"], expected, rtol=1e-5)


def test_tf2_multi_signature(model: Callable[..., TensorFlowServable]) -> None:
    s = model("tf2_multi_signature")
    assert set(s.signatures) == {
        "serving_default", "times_three", "add_one_int64", "echo_bytes", "multi_input",
        "mismatched_batch", "__saved_model_init_op",
    }
    x = f32([1.0, 2.0])
    np.testing.assert_allclose(run(s, "serving_default", x=x)["y"], [2.5, 3.0])
    np.testing.assert_allclose(run(s, "times_three", x=x)["y"], [3.0, 6.0])
    ints = run(s, "add_one_int64", x=np.array([1, 2**40], np.int64))["y"]
    assert ints.dtype == np.int64 and ints.tolist() == [2, 2**40 + 1]
    out = run(s, "multi_input", a=f32([1.0, 2.0]), b=np.array([[1, 2], [3, 4]], np.int32))
    np.testing.assert_allclose(out["sum"], [4.0, 9.0])
    assert out["b_doubled"].tolist() == [[2, 4], [6, 8]]
    out = run(s, "mismatched_batch", x=f32([1.0, 2.0, 3.0]))
    assert out["same"].shape == (3,) and out["doubled_batch"].shape == (6,)


def test_string_signature_accepts_bytes_str_and_object_arrays(
    model: Callable[..., TensorFlowServable],
) -> None:
    s = model("tf2_multi_signature")
    sig = s.signatures["echo_bytes"]
    assert sig.inputs["text"].dtype == "DT_STRING"
    assert sig.outputs["echo_bytes"].np_dtype == np.dtype(object)
    for text in (
        np.array([b"ab", b"\xff"], dtype=object),
        np.array([b"ab", b"\xff"]),
        np.array(["ab", "\u00e7"]),
    ):
        out = run(s, "echo_bytes", text=text)
        assert out["echo_bytes"].dtype == np.dtype(object)
        assert isinstance(out["echo_bytes"][0], bytes) and out["echo_bytes"][0] == b"ab"
        assert out["upper"][0] == b"AB"
        assert out["length"].tolist()[0] == 2
    err = error_of(lambda: run(s, "echo_bytes", text=np.array([1, 2], dtype=object)))
    assert err.code == Code.INVALID_ARGUMENT


def test_saved_model_init_op_is_listed_but_not_runnable(
    model: Callable[..., TensorFlowServable],
) -> None:
    s = model("tf2_multi_signature")
    init = s.signatures["__saved_model_init_op"]
    assert init.outputs["__saved_model_init_op"].dtype == "DT_INVALID"
    assert init.outputs["__saved_model_init_op"].shape is None
    assert isinstance(error_of(lambda: s.run(init, {})), ServingError)


def test_keras_export(model: Callable[..., TensorFlowServable]) -> None:
    s = model("keras_export")
    assert {"serve", "serving_default"} <= set(s.signatures)
    for name in ("serve", "serving_default"):
        sig = s.signatures[name]
        assert list(sig.inputs) == ["features"] and list(sig.outputs) == ["output_0"]
        assert sig.inputs["features"].shape == (-1, 3)
        x = f32([[1, 2, 3], [0, 0, 0]])
        kernel, bias = modelgen.keras_export_weights()
        np.testing.assert_allclose(
            run(s, name, features=x)["output_0"], x @ kernel + bias, rtol=1e-6
        )


def test_image_bytes_model_decodes_a_batch(model: Callable[..., TensorFlowServable]) -> None:
    s = model("image_bytes")
    sig = s.signatures["serving_default"]
    assert sig.inputs["image_bytes"].dtype == "DT_STRING"
    assert sig.outputs["probabilities"].shape == (-1, 4)
    colors = [(255, 0, 0), (0, 0, 255), (10, 200, 30)]
    images = np.array([modelgen.png_bytes(16, 12, c) for c in colors], dtype=object)
    probs = run(s, "serving_default", image_bytes=images)["probabilities"]
    expected = np.stack([modelgen.image_bytes_model_reference(c) for c in colors])
    np.testing.assert_allclose(probs, expected, rtol=1e-5)
    jpeg = np.array([modelgen.jpeg_bytes(8, 8, (0, 255, 0))], dtype=object)
    probs = run(s, "serving_default", image_bytes=jpeg)["probabilities"]
    expected_green = modelgen.image_bytes_model_reference((0, 255, 0))
    np.testing.assert_allclose(probs[0], expected_green, atol=0.01)
    err = error_of(lambda: run(s, "serving_default", image_bytes=np.array([b"nope"], object)))
    assert err.code == Code.INVALID_ARGUMENT


def test_siamese_two_inputs(model: Callable[..., TensorFlowServable]) -> None:
    s = model("siamese")
    assert list(s.signatures) == ["signature-reid"]
    sig = s.signatures["signature-reid"]
    assert set(sig.inputs) == {"img1", "img2"}
    assert sig.inputs["img1"].shape == (-1, 64, 32, 3)
    same = np.full((2, 64, 32, 3), 0.3, np.float32)
    other = np.stack([same[0], np.full((64, 32, 3), 0.4, np.float32)])
    out = run(s, "signature-reid", img1=same, img2=other)["predict"]
    expected = 1 / (1 + np.exp(-(2 - 10 * np.array([0.0, 0.3]))))
    np.testing.assert_allclose(out[:, 0], expected, rtol=1e-3)
    assert out.shape == (2, 1)


def test_detection_model(model: Callable[..., TensorFlowServable]) -> None:
    s = model("detection")
    sig = s.signatures["serving_default"]
    assert sig.inputs["inputs"].dtype == "DT_UINT8" and sig.inputs["inputs"].np_dtype == np.uint8
    assert sig.inputs["inputs"].shape == (-1, -1, -1, 3)
    assert sig.outputs["detection_boxes"].shape == (-1, 100, 4)
    assert sig.outputs["num_detections"].shape == (-1,)
    images = np.stack([np.full((5, 7, 3), 200, np.uint8), np.full((5, 7, 3), 50, np.uint8)])
    out = run(s, "serving_default", inputs=images)
    expected = modelgen.detection_model_reference(images)
    assert list(out) == list(sig.outputs)
    for alias, value in expected.items():
        np.testing.assert_allclose(out[alias], value, rtol=1e-5, atol=1e-6)
    assert out["num_detections"].tolist() == [37.0, 0.0]  # 200/255 * (1 - i/100) > 0.5 for i < 37


def test_mnist_cnn_matches_keras(model: Callable[..., TensorFlowServable]) -> None:
    s = model("mnist_cnn")
    sig = s.signatures["serving_default"]
    assert sig.inputs["input_image"].shape == (-1, 28, 28, 1)
    assert sig.outputs["y_pred"].shape == (-1, 10)
    keras_model = modelgen.build_mnist_cnn(0)
    assert keras_model.count_params() == 156_234
    x = np.random.default_rng(0).random((64, 28, 28, 1), dtype=np.float32)
    batch = run(s, "serving_default", input_image=x)["y_pred"]
    assert batch.shape == (64, 10)
    np.testing.assert_allclose(batch.sum(axis=1), np.ones(64), rtol=1e-5)
    np.testing.assert_allclose(batch, np.asarray(keras_model(x, training=False)), atol=1e-5)
    single = run(s, "serving_default", input_image=x[:1])["y_pred"]
    np.testing.assert_allclose(single, batch[:1], atol=1e-5)


def test_classifier_model(model: Callable[..., TensorFlowServable]) -> None:
    s = model("classifier")
    sig = s.signatures["serving_default"]
    assert sig.method_name == "tensorflow/serving/classify"
    assert sig.outputs["classes"].dtype == "DT_STRING" and sig.outputs["classes"].shape == (-1, 2)
    examples = np.array(modelgen.serialized_examples("x", [0.0, 2.0]), dtype=object)
    out = run(s, "serving_default", inputs=examples)
    assert out["classes"].tolist() == [list(modelgen.CLASSIFIER_LABELS)] * 2
    sig2 = 1 / (1 + np.exp(-2.0))
    np.testing.assert_allclose(out["scores"], [[0.5, 0.5], [1 - sig2, sig2]], rtol=1e-6)
    assert s.signatures["regress"].method_name == "tensorflow/serving/regress"
    np.testing.assert_allclose(run(s, "regress", inputs=examples)["outputs"], [1.0, 5.0])


def test_output_filter_keeps_signature_order(model: Callable[..., TensorFlowServable]) -> None:
    s = model("detection")
    sig = s.signatures["serving_default"]
    images = np.zeros((1, 2, 2, 3), np.uint8)
    wanted = ["num_detections", "detection_boxes"]
    out = s.run(sig, {"inputs": images}, output_filter=wanted)
    assert list(out) == [a for a in sig.outputs if a in wanted]


# ---------------------------------------------------------------------------- TF Serving's exports


def test_tf_serving_half_plus_two_cpu(load: LoadFn, tfs: Callable[[str], Path]) -> None:
    s = load(tfs("saved_model_half_plus_two_cpu"))
    assert set(s.signatures) == {
        "serving_default", "classify_x_to_y", "regress_x_to_y", "regress_x_to_y2",
        "regress_x2_to_y3",
    }
    np.testing.assert_allclose(
        run(s, "serving_default", x=f32([[1.0], [2.0], [5.0]]))["y"], [[2.5], [3.0], [4.5]]
    )
    out = run(s, "serving_default", x=f32([2.0, 3.0, 4.0]))
    np.testing.assert_allclose(out["y"], [3.0, 3.5, 4.0])
    examples = np.array(modelgen.serialized_examples("x", [2.0]), dtype=object)
    np.testing.assert_allclose(run(s, "classify_x_to_y", inputs=examples)["scores"], [[3.0]])
    assert s.signatures["classify_x_to_y"].inputs["inputs"].shape is None  # unknown rank


def test_half_plus_two_cpu_signature_def_map_matches_tf_serving_metadata(
    load: LoadFn, tfs: Callable[[str], Path], testdata: Path
) -> None:
    s = load(tfs("saved_model_half_plus_two_cpu"))
    got = json_format.MessageToDict(
        s.signature_def_map(),
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
    )
    fixture = json.loads((testdata / "half_plus_two_model_metadata.json").read_text())
    assert got == fixture["metadata"]["signature_def"]
    assert set(s.signatures) == set(s.signature_def_map().signature_def)


def test_signatures_follow_file_order(load: LoadFn, tfs: Callable[[str], Path]) -> None:
    s = load(tfs("saved_model_half_plus_two_cpu"))
    # The order in which the file stores them (not sorted, not protobuf map order).
    assert list(s.signatures) == [
        "serving_default", "classify_x_to_y", "regress_x_to_y2", "regress_x_to_y",
        "regress_x2_to_y3",
    ]


def test_signature_key_order_gives_up_quietly(models_dir: Path, tmp_path: Path) -> None:
    pb = models_dir / "detection" / "1" / "saved_model.pb"
    order = signature_key_order(str(pb), 0)
    assert order is not None
    assert order["serving_default"][1] == (
        "detection_boxes", "detection_classes", "detection_scores", "num_detections",
    )
    assert signature_key_order(str(pb), 1) is None
    assert signature_key_order(str(models_dir / "broken" / "1" / "saved_model.pb"), 0) is None
    assert signature_key_order(str(tmp_path / "missing.pb"), 0) is None
    (tmp_path / "empty.pb").write_bytes(b"")
    assert signature_key_order(str(tmp_path / "empty.pb"), 0) is None


def test_pbtxt_saved_model_loads(models_dir: Path, tmp_path: Path) -> None:
    from tensorflow.core.protobuf import saved_model_pb2
    from google.protobuf import text_format

    export = tmp_path / "1"
    shutil.copytree(models_dir / "half_plus_two" / "1", export)
    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((export / "saved_model.pb").read_bytes())
    (export / "saved_model.pbtxt").write_text(text_format.MessageToString(proto))
    (export / "saved_model.pb").unlink()
    loader = SavedModelLoader(str(export))
    loader.load()
    try:
        s = loader.servable()
        assert list(s.signatures) == ["classify_x_to_y", "regress_x_to_y", "serving_default"]
        np.testing.assert_allclose(run(s, "serving_default", x=f32([[2.0]]))["y"], [[3.0]])
    finally:
        loader.unload()


def test_tf_serving_tf2_export_and_signature_defaults(load: LoadFn, tfs: Callable[[str], Path]) -> None:
    s = load(tfs("saved_model_half_plus_two_tf2_cpu"))
    sig = s.signatures["serving_default"]
    assert sig.defaults == frozenset({"x"}) and sig.inputs["x"].shape == (1,)
    # An omitted input with a default is fed the SignatureDef's default value (x = [0]).
    np.testing.assert_allclose(s.run(sig, {})["y"], [2.0])
    # The signature pins the batch to 1, but the graph computes any batch, as in TF Serving.
    out = run(s, "serving_default", x=f32([1.0, 2.0, 5.0]))
    np.testing.assert_allclose(out["y"], [2.5, 3.0, 4.5])
    examples = np.array(modelgen.serialized_examples("x", [2.0]), dtype=object)
    np.testing.assert_allclose(run(s, "regress_x_to_y", inputs=examples)["outputs"], [[3.0]])


@pytest.mark.parametrize(
    ("folder", "version", "expected"),
    [
        ("saved_model_half_plus_two_2_versions", "00000123", [[2.5], [3.0]]),
        ("saved_model_half_plus_two_2_versions", "00000124", [[2.5], [3.0]]),
        ("saved_model_half_plus_three", "00000123", [[3.5], [4.0]]),
    ],
)
def test_tf_serving_versioned_exports(
    load: LoadFn, testdata: Path, folder: str, version: str, expected: list[list[float]]
) -> None:
    out = run(load(testdata / folder / version), "serving_default", x=f32([[1.0], [2.0]]))
    np.testing.assert_allclose(out["y"], expected)


def test_tf_serving_counter_is_stateful(tfs: Callable[[str], Path]) -> None:
    loader = SavedModelLoader(str(tfs("saved_model_counter")))
    loader.load()
    try:
        s = loader.servable()
        assert run(s, "reset_counter")["output"] == 0.0
        run(s, "incr_counter")
        assert run(s, "incr_counter")["output"] == 2.0
        assert run(s, "incr_counter_by", delta=np.float32(5.0))["output"] == 7.0
        out = run(s, "get_counter")["output"]
        assert isinstance(out, np.ndarray) and out.shape == () and out == 7.0
    finally:
        loader.unload()


# ---------------------------------------------------------------------------- load failures


def load_error(path: Path | str, **kwargs: object) -> ServingError:
    loader = SavedModelLoader(str(path), **kwargs)  # type: ignore[arg-type]
    err = error_of(loader.load)
    assert str(path) in err.message
    assert isinstance(error_of(loader.servable), ServingError)
    return err


def test_session_bundle_export_fails_cleanly(tfs: Callable[[str], Path]) -> None:
    err = load_error(tfs("bad_half_plus_two"))
    assert err.code == Code.NOT_FOUND
    assert "Could not find SavedModel .pb or .pbtxt" in err.message


def test_missing_directory_is_not_found(tmp_path: Path) -> None:
    assert load_error(tmp_path / "nope").code == Code.NOT_FOUND


def test_garbage_saved_model_is_data_loss(models_dir: Path) -> None:
    assert load_error(models_dir / "broken" / "1").code == Code.DATA_LOSS


def test_garbage_pbtxt_is_data_loss(tmp_path: Path) -> None:
    (tmp_path / "saved_model.pbtxt").write_text("meta_graphs { this is not a proto")
    assert load_error(tmp_path).code == Code.DATA_LOSS


def test_unknown_tag_set_lists_available_ones(models_dir: Path) -> None:
    err = load_error(models_dir / "half_plus_two" / "1", tags=("serve", "gpu"))
    assert err.code == Code.NOT_FOUND
    assert "{ gpu serve }" in err.message and "Available tag sets: [{ serve }]" in err.message


def test_corrupt_variables_fail_with_serving_error(models_dir: Path, tmp_path: Path) -> None:
    export = tmp_path / "1"
    shutil.copytree(models_dir / "half_plus_two" / "1", export)
    data = next((export / "variables").glob("variables.data-*"))
    data.write_bytes(b"\x00")
    err = load_error(export)
    assert err.code in (Code.DATA_LOSS, Code.INVALID_ARGUMENT, Code.OUT_OF_RANGE, Code.NOT_FOUND)
    shutil.rmtree(export / "variables")
    assert isinstance(load_error(export), ServingError)


def test_load_and_unload_are_idempotent(models_dir: Path) -> None:
    loader = SavedModelLoader(str(models_dir / "half_plus_two" / "1"))
    loader.unload()  # before load: no-op
    loader.load()
    servable = loader.servable()
    loader.load()  # already loaded: no-op
    assert loader.servable() is servable
    sig = servable.signatures["serving_default"]
    loader.unload()
    loader.unload()
    err = error_of(lambda: servable.run(sig, {"x": f32([[1.0]])}))
    assert err.code == Code.UNAVAILABLE
    assert error_of(loader.servable).code == Code.FAILED_PRECONDITION
    loader.load()  # a fresh session after unload
    out = run(loader.servable(), "serving_default", x=f32([[2.0]]))
    np.testing.assert_allclose(out["y"], [[3.0]])
    loader.unload()


# ---------------------------------------------------------------------------- request validation


def test_input_count_mismatch_message(model: Callable[..., TensorFlowServable]) -> None:
    s = model("half_plus_two")
    err = error_of(lambda: run(s, "serving_default", x=f32([[1.0]]), z=f32([1.0]), a=f32([1.0])))
    assert err.code == Code.INVALID_ARGUMENT
    assert err.message == (
        "input size does not match signature: 3!=1 len({a,x,z}) != len({x}). "
        "Sent extra: {a,z}. Missing but required: {}."
    )
    err = error_of(lambda: run(s, "serving_default"))
    assert err.message.endswith("Sent extra: {}. Missing but required: {x}.")


def test_wrong_input_name_message(model: Callable[..., TensorFlowServable]) -> None:
    err = error_of(lambda: run(model("half_plus_two"), "serving_default", z=f32([[1.0]])))
    assert err.code == Code.INVALID_ARGUMENT
    assert err.message.startswith(
        "Signature input alias: x(feed name: x:0) not found in request and no default value"
    )


def test_output_filter_errors(model: Callable[..., TensorFlowServable]) -> None:
    s = model("half_plus_two")
    sig = s.signatures["serving_default"]
    err = error_of(lambda: s.run(sig, {"x": f32([[1.0]])}, output_filter=["nope"]))
    assert err.code == Code.INVALID_ARGUMENT
    assert err.message == (
        "output tensor alias not found in signature: nope Outputs expected to be in the set {y}."
    )
    err = error_of(lambda: s.run(sig, {"x": f32([[1.0]])}, output_filter=["y", "y"]))
    assert err.message == "duplicate output tensor alias: y"


def test_dtype_mismatch_has_the_sessions_message(model: Callable[..., TensorFlowServable]) -> None:
    """TF Serving passes on what Session::Run says of a feed of the wrong dtype; the arg
    index counts the run's feeds in tensor-name order, not the signature's alias order."""
    s = model("half_plus_two")
    err = error_of(lambda: run(s, "serving_default", x=np.array([[1.0]], np.float64)))
    assert (err.code, err.message) == (Code.INVALID_ARGUMENT, "Expects arg[0] to be float but double is provided")
    err = error_of(lambda: run(s, "serving_default", x=np.array([[True]])))
    assert err.message == "Expects arg[0] to be float but bool is provided"
    err = error_of(lambda: run(s, "serving_default", x=np.array([[b"a"]], dtype=object)))
    assert err.message == "Expects arg[0] to be float but string is provided"
    err = error_of(lambda: run(model("tf2_multi_signature"), "echo_bytes", text=f32([1.0])))
    assert err.message == "Expects arg[0] to be string but float is provided"
    multi = model("tf2_multi_signature")
    sig = multi.signatures["multi_input"]
    names = sorted(spec.tensor_name for spec in sig.inputs.values())
    b_arg = names.index(sig.inputs["b"].tensor_name)
    err = error_of(lambda: run(multi, "multi_input", a=f32([1.0]), b=f32([[1.0, 2.0]])))
    assert err.message == f"Expects arg[{b_arg}] to be int32 but float is provided"


def test_session_arguments_are_the_feeds_in_tensor_name_order() -> None:
    def spec(alias: str, name: str) -> TensorSpec:
        return TensorSpec(alias, name, "DT_FLOAT", np.dtype(np.float32), None)

    sig = Signature("s", "", {"first": spec("first", "z:0"), "second": spec("second", "a:0"),
                              "third": spec("third", "m:0")}, {})
    assert session_arg_index(sig) == {"first": 2, "second": 0, "third": 1}


def test_shape_mismatch_at_equal_rank_names_shapes(
    model: Callable[..., TensorFlowServable],
) -> None:
    s = model("mnist_cnn")
    image = np.zeros((1, 28, 27, 1), np.float32)
    err = error_of(lambda: run(s, "serving_default", input_image=image))
    assert err.code == Code.INVALID_ARGUMENT
    assert "input_image" in err.message
    assert "[-1,28,28,1]" in err.message and "[1,28,27,1]" in err.message


def test_wrong_rank_for_image_input_is_rejected_before_the_session(
    model: Callable[..., TensorFlowServable],
) -> None:
    # oneDNN's convolution aborts the process on a rank-3 input; it must never get there.
    image = np.zeros((1, 28, 28), np.float32)
    err = error_of(lambda: run(model("mnist_cnn"), "serving_default", input_image=image))
    assert err.code == Code.INVALID_ARGUMENT
    assert "[1,28,28]" in err.message and "[-1,28,28,1]" in err.message


def test_session_errors_are_converted_with_expected_inputs(
    model: Callable[..., TensorFlowServable],
) -> None:
    s = model("keras_export")
    err = error_of(lambda: run(s, "serving_default", features=f32([1.0, 2.0, 3.0])))
    assert err.code == Code.INVALID_ARGUMENT
    assert "features: DT_FLOAT [-1,3]" in err.message


def test_shape_mismatch_message_covers_batch_dimension() -> None:
    from pyserving.platforms.base import TensorSpec

    spec = TensorSpec("x", "x:0", "DT_FLOAT", np.dtype(np.float32), (1, 2))
    sig = Signature("s", "tensorflow/serving/predict", {"x": spec}, {})
    message = shape_mismatch_message(sig, [np.zeros((3, 2), np.float32)])
    assert message is not None and "[3,2]" in message and "[1,2]" in message
    assert shape_mismatch_message(sig, [np.zeros((1, 2), np.float32)]) is None
    assert shape_mismatch_message(sig, [np.zeros((2,), np.float32)]) is None


def test_unknown_signature_is_failed_precondition(model: Callable[..., TensorFlowServable]) -> None:
    s = model("half_plus_two")
    other = Signature("nope", "tensorflow/serving/predict", {}, {})
    assert error_of(lambda: s.run(other, {})).code == Code.FAILED_PRECONDITION


# ---------------------------------------------------------------------------- timeouts


def test_timeout_is_deadline_exceeded(model: Callable[..., TensorFlowServable]) -> None:
    s = model("slow")
    sig = s.signatures["serving_default"]
    assert run(s, "serving_default", n=np.int64(10))["count"] == 10.0
    start = time.monotonic()
    err = error_of(lambda: s.run(sig, {"n": np.int64(3_000_000)}, timeout_ms=50))
    assert err.code == Code.DEADLINE_EXCEEDED
    assert time.monotonic() - start < 5.0
    out = s.run(sig, {"n": np.int64(5)}, timeout_ms=10_000)
    assert out["count"] == 5.0
    assert error_of(lambda: s.run(sig, {"n": np.int64(5)}, timeout_ms=-1)).code == (
        Code.DEADLINE_EXCEEDED
    )


# ---------------------------------------------------------------------------- concurrency


def test_concurrent_runs_with_varied_callables(model: Callable[..., TensorFlowServable]) -> None:
    s = model("tf2_multi_signature")
    threads_n, iterations = 6, 150
    barrier = threading.Barrier(threads_n)
    failures: list[str] = []

    def worker(k: int) -> None:
        barrier.wait()
        try:
            for i in range(iterations):
                value = float(k * 1000 + i)
                x = f32([value, -value])
                out = run(s, "serving_default", x=x)
                if not np.allclose(out["y"], 0.5 * x + 2.0):
                    failures.append(f"serving_default {k} {i}")
                # Other output filters and timeouts make new callables concurrently.
                sig = s.signatures["multi_input"]
                res = s.run(
                    sig,
                    {"a": x, "b": np.array([[1, 2], [3, 4]], np.int32)},
                    output_filter=["sum"] if i % 2 else (),
                    timeout_ms=1000 * (1 + i % 5),
                )
                if not np.allclose(res["sum"], x + [3, 7]):
                    failures.append(f"multi_input {k} {i}")
        except Exception as e:  # noqa: BLE001 - reported below
            failures.append(repr(e))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    assert failures == []
