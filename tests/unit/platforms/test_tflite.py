"""The TFLite platform (platforms/tflite) against TF Serving's TFLite exports and models
converted here: signatures (metadata SignatureDefs, the model's own, the generated one),
batch resizing, the interpreter pool, errors, warmup and platform selection."""

from __future__ import annotations

import os
import shutil
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import prediction_log_pb2

_TESTS_DIR = Path(__file__).resolve().parents[2]
if str(_TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(_TESTS_DIR))

import modelgen  # noqa: E402

from pyserving.errors import Code, ServingError  # noqa: E402
from pyserving.platforms import create_loader, select_platform  # noqa: E402
from pyserving.platforms.tensorflow.saved_model import SavedModelLoader  # noqa: E402
from pyserving.platforms.tensorflow.warmup import warmup_file  # noqa: E402
from pyserving.platforms.tflite._flatbuffer import (  # noqa: E402
    read_metadata,
    signature_defs_from_metadata,
)
from pyserving.platforms.tflite.interpreter_pool import InterpreterPool  # noqa: E402
from pyserving.platforms.tflite.loader import TfLiteLoader, TfLiteServable  # noqa: E402

# TF Serving's two TFLite exports (folders of the `testdata` tree).
HALF_PLUS_TWO = "saved_model_half_plus_two_tflite"
WITH_SIGDEF = "saved_model_half_plus_two_tflite_with_sigdef"

# What TF Serving's tflite_session_test.cc expects for the two exports.
HALF_PLUS_TWO_SIGNATURE = """
inputs { key: "x" value { name: "x" dtype: DT_FLOAT tensor_shape { dim { size: 1 } dim { size: 1 } } } }
outputs { key: "y" value { name: "y" dtype: DT_FLOAT tensor_shape { dim { size: 1 } dim { size: 1 } } } }
method_name: "tensorflow/serving/predict"
"""
WITH_SIGDEF_SIGNATURE = HALF_PLUS_TWO_SIGNATURE.replace('name: "x"', 'name: "tflite_input"')


def _sig_def(text: str) -> Any:
    return text_format.Parse(text, meta_graph_pb2.SignatureDef())


# ---------------------------------------------------------------------------- models


class _Multi(tf.Module):
    """Two signatures in two subgraphs; `fixed` has a static [1,4] input reshaped to [2,2]."""

    def __init__(self) -> None:
        self.w = tf.Variable([[1.0, 2.0], [3.0, 4.0]])

    @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="a")])
    def matmul(self, a: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"product": tf.matmul(a, self.w)}

    @tf.function(input_signature=[tf.TensorSpec([1, 4], tf.float32, name="v"),
                                  tf.TensorSpec([None], tf.int32, name="k")])
    def fixed(self, v: tf.Tensor, k: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"square": tf.reshape(v, [2, 2]), "k2": k * 2}


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A Keras MNIST CNN (modelgen's) and a two-signature module, converted to TFLite."""
    root = tmp_path_factory.mktemp("tflite")
    cnn = modelgen.build_mnist_cnn(seed=0)
    cnn_dir = root / "cnn" / "1"
    cnn_dir.mkdir(parents=True)
    (cnn_dir / "model.tflite").write_bytes(tf.lite.TFLiteConverter.from_keras_model(cnn).convert())
    module = _Multi()
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [module.matmul.get_concrete_function(), module.fixed.get_concrete_function()], module
    )
    multi_dir = root / "multi" / "1"
    multi_dir.mkdir(parents=True)
    (multi_dir / "model.tflite").write_bytes(converter.convert())
    return {"cnn": cnn, "cnn_dir": cnn_dir, "multi_dir": multi_dir}


@pytest.fixture(scope="module")
def tflite(testdata: Path) -> Callable[[str], Path]:
    """The version folder (123) of one of the two exports."""
    return lambda name: testdata / name / "00000123"


@pytest.fixture
def load() -> Iterator[Any]:
    loaders: list[Any] = []

    def _load(path: Path, **options: Any) -> TfLiteServable:
        loader = create_loader("tensorflow", str(path), prefer_tflite_model=True, **options)
        assert isinstance(loader, TfLiteLoader)
        loader.load()
        loaders.append(loader)
        return loader.servable()

    yield _load
    for loader in loaders:
        loader.unload()


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, copy_function=shutil.copyfile)
    for root, dirs, _ in os.walk(dst):
        for d in [root, *(os.path.join(root, x) for x in dirs)]:
            os.chmod(d, 0o755)
    return dst


def _x(*values: float) -> np.ndarray:
    return np.array(values, dtype=np.float32)


# ---------------------------------------------------------------------------- TF Serving's exports


@pytest.mark.parametrize("export", [HALF_PLUS_TWO, WITH_SIGDEF], ids=["plain", "with_sigdef"])
def test_tf_serving_exports_answer_half_plus_two_at_any_batch_size(load, tflite, export):
    servable = load(tflite(export))
    sig = servable.signatures["serving_default"]
    assert servable.run(sig, {"x": _x(2.0).reshape(1, 1)})["y"].tolist() == [[3.0]]
    assert servable.run(sig, {"x": _x(1.0, 2.0, 3.0)})["y"].tolist() == [2.5, 3.0, 3.5]
    assert servable.run(sig, {"x": _x(4.0, 6.0).reshape(2, 1)})["y"].tolist() == [[4.0], [5.0]]
    assert servable.run(sig, {"x": _x(2.0).reshape(1, 1)})["y"].tolist() == [[3.0]]


@pytest.mark.parametrize(
    "export, expected", [(HALF_PLUS_TWO, HALF_PLUS_TWO_SIGNATURE), (WITH_SIGDEF, WITH_SIGDEF_SIGNATURE)],
    ids=["generated", "from_metadata"],
)
def test_signatures_are_the_ones_tf_serving_serves(load, tflite, export, expected):
    servable = load(tflite(export))
    sig_defs = servable.signature_def_map().signature_def
    assert list(sig_defs) == ["serving_default"]
    assert sig_defs["serving_default"] == _sig_def(expected)
    sig = servable.signatures["serving_default"]
    assert (list(sig.inputs), list(sig.outputs)) == (["x"], ["y"])
    assert (sig.inputs["x"].dtype, sig.inputs["x"].shape) == ("DT_FLOAT", (1, 1))


def test_metadata_signature_defs_are_read_from_the_flatbuffer(tflite):
    model = (tflite(WITH_SIGDEF) / "model.tflite").read_bytes()
    assert set(read_metadata(model)) == {"min_runtime_version", "signature_defs_metadata"}
    stored = signature_defs_from_metadata(model)
    assert list(stored) == ["serving_default"]
    assert stored["serving_default"].inputs["x"].name == "tflite_input:0"  # as stored
    assert signature_defs_from_metadata((tflite(HALF_PLUS_TWO) / "model.tflite").read_bytes()) == {}
    with pytest.raises(ValueError, match="TFL3"):
        read_metadata(b"definitely not a flatbuffer")


def test_a_metadata_signature_naming_an_unknown_tensor_fails_the_load(tmp_path, tflite):
    model = (tflite(WITH_SIGDEF) / "model.tflite").read_bytes()
    assert model.count(b"tflite_input:0") == 1
    (tmp_path / "model.tflite").write_bytes(model.replace(b"tflite_input:0", b"tflite_ghost:0"))
    with pytest.raises(ServingError) as info:
        TfLiteLoader(str(tmp_path), num_tflite_pools=1).load()
    assert info.value.code == Code.INTERNAL
    assert "Signature input x references an unknown tensor 'tflite_ghost:0'" in info.value.message


# ---------------------------------------------------------------------------- converted models


def test_a_converted_keras_model_serves_its_own_signature(load, converted):
    servable = load(converted["cnn_dir"])
    (name, sig), = servable.signatures.items()
    assert name == "serving_default"
    (alias, spec), = sig.inputs.items()
    assert (spec.dtype, spec.shape) == ("DT_FLOAT", (-1, 28, 28, 1))
    images = np.random.default_rng(0).random((5, 28, 28, 1), dtype=np.float32)
    for batch in (5, 1, 3):
        (out,) = servable.run(sig, {alias: images[:batch]}).values()
        expected = converted["cnn"](images[:batch], training=False).numpy()
        np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)


def test_every_signature_of_a_multi_signature_model_runs(load, converted):
    servable = load(converted["multi_dir"])
    assert sorted(servable.signatures) == ["fixed", "matmul"]
    matmul, fixed = servable.signatures["matmul"], servable.signatures["fixed"]
    assert matmul.inputs["a"].shape == (-1, 2) and fixed.inputs["v"].shape == (1, 4)
    product = servable.run(matmul, {"a": np.array([[1, 0], [0, 1], [1, 1]], np.float32)})
    assert product["product"].tolist() == [[1, 2], [3, 4], [4, 6]]
    out = servable.run(fixed, {"v": np.arange(4, dtype=np.float32).reshape(1, 4),
                               "k": np.array([1, 2, 3], np.int32)}, output_filter=["k2"])
    assert list(out) == ["k2"] and out["k2"].tolist() == [2, 4, 6]
    sig_defs = servable.signature_def_map().signature_def
    assert sig_defs["matmul"].method_name == "tensorflow/serving/predict"
    assert sig_defs["matmul"].inputs["a"].tensor_shape.dim[0].size == -1


# ---------------------------------------------------------------------------- errors


def test_bad_requests_are_invalid_argument_and_never_break_the_model(load, converted):
    servable = load(converted["multi_dir"], num_tflite_pools=1)
    fixed = servable.signatures["fixed"]
    v, k = np.arange(4, dtype=np.float32).reshape(1, 4), np.array([1], np.int32)
    cases = [
        ({"v": v.astype(np.float64), "k": k}, "has dtype DT_DOUBLE"),
        ({"v": v}, "input size does not match signature"),
        ({"v": v, "k": k, "z": k}, "input size does not match signature"),
        # Passes the rank-2 leniency, then the runtime cannot prepare a [1,6] -> [2,2] reshape.
        ({"v": np.zeros((1, 6), np.float32), "k": k}, "Failed to run signature \"fixed\""),
    ]
    for inputs, message in cases:
        with pytest.raises(ServingError) as info:
            servable.run(fixed, inputs)
        assert info.value.code == Code.INVALID_ARGUMENT, info.value
        assert message in info.value.message
    with pytest.raises(ServingError, match="output tensor alias not found"):
        servable.run(fixed, {"v": v, "k": k}, output_filter=["nope"])
    unknown = servable.signatures["matmul"].__class__("nope", "", {}, {})
    with pytest.raises(ServingError) as info:
        servable.run(unknown, {})
    assert info.value.code == Code.FAILED_PRECONDITION
    # The one interpreter was replaced after the failed run: the model still answers.
    assert servable.run(fixed, {"v": v, "k": k})["square"].tolist() == [[0, 1], [2, 3]]


def test_an_expired_deadline_is_not_run(load, tflite):
    servable = load(tflite(HALF_PLUS_TWO))
    with pytest.raises(ServingError) as info:
        servable.run(servable.signatures["serving_default"], {"x": _x(2.0)}, timeout_ms=-1)
    assert info.value.code == Code.DEADLINE_EXCEEDED


def test_a_missing_or_broken_model_file_fails_the_load(tmp_path):
    with pytest.raises(ServingError) as info:
        TfLiteLoader(str(tmp_path)).load()
    assert info.value.code == Code.NOT_FOUND
    (tmp_path / "model.tflite").write_bytes(b"\x00" * 64)
    with pytest.raises(ServingError) as info:
        TfLiteLoader(str(tmp_path)).load()
    assert info.value.code == Code.INVALID_ARGUMENT
    assert "Cannot build a TFLite interpreter" in info.value.message


def test_an_unloaded_model_is_unavailable(load, tflite):
    loader = TfLiteLoader(str(tflite(HALF_PLUS_TWO)), num_tflite_pools=1)
    loader.load()
    servable = loader.servable()
    loader.unload()
    loader.unload()  # idempotent
    with pytest.raises(ServingError) as info:
        servable.run(servable.signatures["serving_default"], {"x": _x(2.0)})
    assert info.value.code == Code.UNAVAILABLE
    with pytest.raises(ServingError, match="is not loaded"):
        loader.servable()


# ---------------------------------------------------------------------------- the pool


def test_pool_size_is_pools_times_interpreters_per_pool(load, tflite):
    assert load(tflite(HALF_PLUS_TWO), num_tflite_pools=3, num_tflite_interpreters_per_pool=2).num_interpreters == 6
    assert load(tflite(HALF_PLUS_TWO), num_tflite_pools=0, num_tflite_interpreters_per_pool=0).num_interpreters == 1


def test_concurrent_runs_of_different_batch_sizes_get_their_own_answers(load, tflite):
    servable = load(tflite(HALF_PLUS_TWO), num_tflite_pools=2)
    sig = servable.signatures["serving_default"]
    wrong: list[Any] = []

    def client(seed: int) -> None:
        rng = np.random.default_rng(seed)
        for _ in range(300):
            x = rng.random(int(rng.integers(1, 9)), dtype=np.float32)
            y = servable.run(sig, {"x": x})["y"]
            if y.shape != x.shape or not np.allclose(y, x * 0.5 + 2):
                wrong.append((x, y))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wrong == []


def test_waiting_for_a_free_interpreter_honours_the_deadline(tflite):
    pool = InterpreterPool((tflite(HALF_PLUS_TWO) / "model.tflite").read_bytes(), 1)
    with pool.acquire():
        with pytest.raises(ServingError) as info:
            with pool.acquire(timeout_seconds=0.05):
                pass
        assert info.value.code == Code.DEADLINE_EXCEEDED
    with pool.acquire(timeout_seconds=0.05):  # free again
        pass
    pool.close()
    with pytest.raises(ServingError) as info:
        with pool.acquire():
            pass
    assert info.value.code == Code.UNAVAILABLE


# ---------------------------------------------------------------------------- warmup


def test_warmup_records_run_against_a_tflite_model(tmp_path, tflite):
    version = _copy(tflite(HALF_PLUS_TWO), tmp_path / "1")
    log = prediction_log_pb2.PredictionLog()
    log.predict_log.request.inputs["x"].CopyFrom(tf.make_tensor_proto(_x(1.0, 2.0)))
    bad = prediction_log_pb2.PredictionLog()
    bad.predict_log.request.inputs["nope"].CopyFrom(tf.make_tensor_proto(_x(1.0)))
    calls: list[tuple] = []
    os.makedirs(os.path.dirname(warmup_file(str(version))))
    with tf.io.TFRecordWriter(warmup_file(str(version))) as writer:
        writer.write(log.SerializeToString())
        writer.write(log.SerializeToString())
    loader = TfLiteLoader(str(version), on_warmup=lambda *a: calls.append(a))
    loader.load()
    loader.unload()
    assert [(c[1], c[3]) for c in calls] == [("OK", 2)]
    with tf.io.TFRecordWriter(warmup_file(str(version))) as writer:
        writer.write(bad.SerializeToString())
    with pytest.raises(ServingError) as info:
        TfLiteLoader(str(version)).load()
    assert info.value.code == Code.INVALID_ARGUMENT
    TfLiteLoader(str(version), enable_model_warmup=False).load()  # warmup off: loads


# ---------------------------------------------------------------------------- platform selection


def test_platform_selection(tmp_path):
    both = tmp_path / "both"
    both.mkdir()
    (both / "saved_model.pb").write_bytes(b"")
    (both / "model.tflite").write_bytes(b"")
    only_tflite = tmp_path / "only_tflite"
    only_tflite.mkdir()
    (only_tflite / "model.tflite").write_bytes(b"")
    assert select_platform("tensorflow", str(both), prefer_tflite_model=False) == "tensorflow"
    assert select_platform("tensorflow", str(both), prefer_tflite_model=True) == "tflite"
    assert select_platform("tensorflow", str(only_tflite), prefer_tflite_model=False) == "tflite"
    assert select_platform("tensorflow", str(tmp_path), prefer_tflite_model=True) == "tensorflow"
    assert select_platform("onnx", str(only_tflite), prefer_tflite_model=True) == "onnx"


def test_each_loader_gets_only_the_options_it_takes(tmp_path, tflite):
    options = {"tags": ("serve",), "prefer_tflite_model": True, "num_tflite_pools": 1,
               "enable_model_warmup": False, "some_future_option": 1}
    assert isinstance(create_loader("tensorflow", str(tflite(HALF_PLUS_TWO)), **options), TfLiteLoader)
    saved_model = modelgen.make_half_plus_two(tmp_path / "hp2", 1)
    assert isinstance(create_loader("tensorflow", str(saved_model), **options), SavedModelLoader)


def test_a_missing_tflite_runtime_fails_tflite_models_only(monkeypatch, tmp_path, tflite):
    """Simulate an install without the `tflite` extra: the runtime cannot be imported."""
    for name in list(sys.modules):
        if name.split(".")[0] == "ai_edge_litert" or name.startswith("pyserving.platforms.tflite."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    with pytest.raises(ServingError) as info:
        create_loader("tensorflow", str(tflite(HALF_PLUS_TWO)), prefer_tflite_model=True)
    assert info.value.code == Code.FAILED_PRECONDITION
    assert "Platform tflite is not available" in info.value.message
    assert "pip install 'pyserving[tflite]'" in info.value.message
    saved_model = modelgen.make_half_plus_two(tmp_path / "hp2", 1)
    loader = create_loader("tensorflow", str(saved_model), prefer_tflite_model=True)
    loader.load()
    try:
        servable = loader.servable()
        assert servable.run(servable.signatures["serving_default"], {"x": _x(2.0)})["y"].tolist() == [3.0]
    finally:
        loader.unload()
