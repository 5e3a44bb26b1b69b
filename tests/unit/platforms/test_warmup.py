"""Model warmup (platforms/tensorflow/warmup.py) against real SavedModels: TF Serving's
replay, limits, failure rules, log lines and the metrics hook."""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

_TESTS_DIR = Path(__file__).resolve().parents[2]
if str(_TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(_TESTS_DIR))

import modelgen  # noqa: E402

from pyserving.errors import Code, ServingError  # noqa: E402
from pyserving.platforms.tensorflow.saved_model import SavedModelLoader  # noqa: E402
from pyserving.platforms.tensorflow.warmup import (  # noqa: E402
    MAX_WARMUP_RECORDS,
    WarmupOptions,
    run_warmup,
    warmup_file,
)

PredictionLog = prediction_log_pb2.PredictionLog


# ---------------------------------------------------------------------------- helpers


def copy_version(src: Path, dst: Path) -> Path:
    """Copy a (possibly read-only) version folder so that assets.extra can be added."""
    shutil.copytree(src, dst, copy_function=shutil.copyfile)
    for root, dirs, _ in os.walk(dst):
        for d in [root, *(os.path.join(root, x) for x in dirs)]:
            os.chmod(d, 0o755)
    return dst


def write_warmup(version_dir: Path, records: Sequence[PredictionLog | bytes]) -> Path:
    """Write `records` (protos or raw bytes) as the version's TFRecord warmup file."""
    path = Path(warmup_file(str(version_dir)))
    path.parent.mkdir(exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for record in records:
            writer.write(record if isinstance(record, bytes) else record.SerializeToString())
    return path


def predict_log(signature: str = "", **inputs: Any) -> PredictionLog:
    log = PredictionLog()
    request = log.predict_log.request
    request.model_spec.name = "ignored-by-warmup"
    request.model_spec.signature_name = signature
    for alias, value in inputs.items():
        request.inputs[alias].CopyFrom(tf.make_tensor_proto(value))
    return log


def _fill_examples(input_proto: Any, xs: Sequence[float]) -> None:
    for x in xs:
        input_proto.example_list.examples.add().features.feature["x"].float_list.value.append(x)


def classify_log(signature: str = "", xs: Sequence[float] = (1.0,)) -> PredictionLog:
    log = PredictionLog()
    log.classify_log.request.model_spec.signature_name = signature
    _fill_examples(log.classify_log.request.input, xs)
    return log


def regress_log(signature: str = "", xs: Sequence[float] = (1.0,)) -> PredictionLog:
    log = PredictionLog()
    log.regress_log.request.model_spec.signature_name = signature
    _fill_examples(log.regress_log.request.input, xs)
    return log


def multi_inference_log(tasks: Sequence[tuple[str, str, str]], xs: Sequence[float] = (1.0,)) -> PredictionLog:
    """tasks: (model name, signature name, method name)."""
    log = PredictionLog()
    request = log.multi_inference_log.request
    for model, signature, method in tasks:
        task = request.tasks.add()
        task.model_spec.name = model
        task.model_spec.signature_name = signature
        task.method_name = method
    _fill_examples(request.input, xs)
    return log


CLASSIFY = "tensorflow/serving/classify"
REGRESS = "tensorflow/serving/regress"


class RecordingServable:
    """A real servable, plus the names of the signatures run through it (a test spy)."""

    def __init__(self, servable: Any) -> None:
        self._servable = servable
        self.calls: list[str] = []

    @property
    def signatures(self) -> Mapping[str, Any]:
        return self._servable.signatures

    def run(self, signature: Any, inputs: Mapping[str, np.ndarray], output_filter: Sequence[str] = (),
            timeout_ms: int | None = None) -> dict[str, np.ndarray]:
        self.calls.append(signature.name)
        return self._servable.run(signature, inputs, output_filter, timeout_ms)


@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The classify + regress model, loaded once (warmup is called on it directly)."""
    path = modelgen.make_classifier_model(tmp_path_factory.mktemp("classifier"), 1)
    loader = SavedModelLoader(str(path), enable_model_warmup=False)
    loader.load()
    yield loader.servable()
    loader.unload()


@pytest.fixture
def counter_dir(tmp_path: Path, testdata: Path) -> Path:
    """A writable copy of TF Serving's stateful counter model."""
    return copy_version(testdata / "saved_model_counter" / "00000123", tmp_path / "counter" / "1")


def incr_log() -> PredictionLog:
    return predict_log("incr_counter")


def read_counter(loader: SavedModelLoader) -> float:
    servable = loader.servable()
    return float(servable.run(servable.signatures["get_counter"], {})["output"])


def failing_warmup(servable: Any, tmp_path: Path, records: Sequence[PredictionLog | bytes]) -> ServingError:
    write_warmup(tmp_path, records)
    with pytest.raises(ServingError) as info:
        run_warmup(servable, str(tmp_path))
    return info.value


# ---------------------------------------------------------------------------- replay


@pytest.mark.parametrize("iterations, expected", [(0, 3.0), (1, 3.0), (2, 6.0), (-4, 3.0)])
def test_each_record_is_replayed_num_request_iterations_times(counter_dir, iterations, expected):
    write_warmup(counter_dir, [incr_log()] * 3)
    loader = SavedModelLoader(str(counter_dir), num_request_iterations_for_warmup=iterations)
    loader.load()
    try:
        assert read_counter(loader) == expected
    finally:
        loader.unload()


def test_disabled_warmup_replays_nothing(counter_dir):
    write_warmup(counter_dir, [incr_log()] * 3)
    loader = SavedModelLoader(str(counter_dir), enable_model_warmup=False)
    loader.load()
    try:
        assert read_counter(loader) == 0.0
    finally:
        loader.unload()


def test_predict_classify_regress_and_multi_inference_records_run_their_signatures(classifier, tmp_path):
    example = tf.train.Example()
    example.features.feature["x"].float_list.value.append(0.5)
    write_warmup(tmp_path, [
        predict_log("regress", inputs=np.array([example.SerializeToString()], dtype=object)),
        classify_log(xs=[1.0, 2.0]),  # "" = serving_default
        regress_log("regress"),
        multi_inference_log([("m", "", CLASSIFY), ("m", "regress", REGRESS)]),
        PredictionLog(),  # no log set: nothing to run, as in TF Serving
    ])
    spy = RecordingServable(classifier)
    assert run_warmup(spy, str(tmp_path)) == 5
    assert spy.calls == ["regress", "serving_default", "regress", "serving_default", "regress"]


def test_request_model_name_and_version_are_ignored(counter_dir):
    log = incr_log()
    log.predict_log.request.model_spec.name = "some-other-model"
    log.predict_log.request.model_spec.version.value = 999
    write_warmup(counter_dir, [log])
    loader = SavedModelLoader(str(counter_dir))
    loader.load()
    try:
        assert read_counter(loader) == 1.0
    finally:
        loader.unload()


def test_no_warmup_file_is_fine(classifier, tmp_path, caplog):
    calls: list[tuple] = []
    with caplog.at_level(logging.INFO, logger="pyserving.warmup"):
        assert run_warmup(classifier, str(tmp_path), WarmupOptions(on_warmup=lambda *a: calls.append(a))) == 0
    assert f"No warmup data file found at {warmup_file(str(tmp_path))}" in caplog.text
    assert calls == []  # as TF Serving: no metric without a file


def test_logs_the_two_reference_lines(counter_dir, caplog):
    path = write_warmup(counter_dir, [incr_log()] * 2)
    loader = SavedModelLoader(str(counter_dir), num_request_iterations_for_warmup=3)
    with caplog.at_level(logging.INFO, logger="pyserving.warmup"):
        loader.load()
    loader.unload()
    assert (f"Starting to read warmup data for model at {path} with model-warmup-options "
            "num_request_iterations { value: 3 }") in caplog.text
    assert (f"Finished reading warmup data for model at {path}. Number of warmup records read: 2. "
            "Elapsed time (microseconds): ") in caplog.text


# ---------------------------------------------------------------------------- limits and failures


def test_exactly_the_maximum_number_of_records_is_accepted(classifier, tmp_path):
    write_warmup(tmp_path, [PredictionLog()] * MAX_WARMUP_RECORDS)
    assert run_warmup(classifier, str(tmp_path)) == MAX_WARMUP_RECORDS


def test_more_than_1000_records_fail_the_load(classifier, tmp_path):
    error = failing_warmup(classifier, tmp_path, [PredictionLog()] * (MAX_WARMUP_RECORDS + 1))
    assert error.code == Code.INVALID_ARGUMENT
    assert error.message == (
        f"Number of warmup records exceeds the maximum (1000) at {warmup_file(str(tmp_path))}"
    )


@pytest.mark.parametrize("content", [b"this is not a TFRecord file, honestly", "truncated"])
def test_a_damaged_file_is_data_loss(classifier, tmp_path, content):
    if content == "truncated":
        path = write_warmup(tmp_path, [classify_log()] * 2)
        content = path.read_bytes()[:-7]
    path = Path(warmup_file(str(tmp_path)))
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(content)
    with pytest.raises(ServingError) as info:
        run_warmup(classifier, str(tmp_path))
    assert info.value.code == Code.DATA_LOSS
    assert info.value.message.endswith(". Please verify your warmup data is in TFRecord format.")


def test_a_record_that_does_not_parse_fails_the_load(classifier, tmp_path):
    error = failing_warmup(classifier, tmp_path, [classify_log(), b"\xff\xff\xff not a PredictionLog"])
    assert error.code == Code.INVALID_ARGUMENT
    assert error.message.startswith("Failed to parse warmup record: ")
    assert error.message.endswith(f" from {warmup_file(str(tmp_path))}")


@pytest.mark.parametrize("kind, number", [("session_run_log", 5), ("predict_streamed_log", 7)])
def test_session_run_and_streamed_logs_are_unimplemented(classifier, tmp_path, kind, number):
    log = PredictionLog()
    getattr(log, kind).SetInParent()
    error = failing_warmup(classifier, tmp_path, [log])
    assert error.code == Code.UNIMPLEMENTED
    assert error.message.startswith(f"Unsupported log_type for warmup: {number} ")


@pytest.mark.parametrize(
    "record, code, message",
    [
        (predict_log("nope"), Code.FAILED_PRECONDITION, 'Serving signature key "nope" not found.'),
        (predict_log("regress", wrong=np.array([b"x"], dtype=object)), Code.INVALID_ARGUMENT,
         "Signature input alias: inputs(feed name: tf_example:0) not found in request"),
        (classify_log("regress"), Code.INVALID_ARGUMENT,
         "Expected classification signature outputs to contain classes and/or scores"),
        (regress_log("nope"), Code.INVALID_ARGUMENT, "No signature was found with the name: nope"),
        (classify_log(xs=()), Code.INVALID_ARGUMENT, "Input is empty."),
        (multi_inference_log([("m", "", CLASSIFY), ("m", "", REGRESS)]), Code.INVALID_ARGUMENT,
         "Duplicate evaluation of signature: serving_default"),
        (multi_inference_log([("a", "", CLASSIFY), ("b", "regress", REGRESS)]), Code.INVALID_ARGUMENT,
         "All ModelSpecs in a MultiInferenceRequest must access the same model name."),
        (multi_inference_log([("", "", CLASSIFY)]), Code.INVALID_ARGUMENT,
         "Found ModelSpec with an empty model name."),
        (multi_inference_log([("m", "nope", CLASSIFY)]), Code.INVALID_ARGUMENT,
         "Requested signature not found in model graph: nope"),
        (multi_inference_log([("m", "", "tensorflow/serving/predict")]), Code.UNIMPLEMENTED,
         "Unsupported signature method_name: tensorflow/serving/predict"),
    ],
)
def test_a_record_that_fails_to_run_fails_the_load_with_its_own_code(classifier, tmp_path, record, code, message):
    error = failing_warmup(classifier, tmp_path, [classify_log(), record])
    assert error.code == code
    assert error.message.startswith(message)
    assert error.message.endswith(f"[while replaying warmup record 2 from {warmup_file(str(tmp_path))}]")


def test_a_failed_warmup_fails_the_load_and_frees_the_version(counter_dir):
    write_warmup(counter_dir, [incr_log(), predict_log("nope")])
    loader = SavedModelLoader(str(counter_dir))
    with pytest.raises(ServingError) as info:
        loader.load()
    assert info.value.code == Code.FAILED_PRECONDITION
    with pytest.raises(ServingError, match="is not loaded"):
        loader.servable()
    # The same folder loads once the warmup data is fixed (nothing was left half-loaded).
    write_warmup(counter_dir, [incr_log()])
    loader.load()
    try:
        assert read_counter(loader) == 1.0
    finally:
        loader.unload()


# ---------------------------------------------------------------------------- metrics hook


def test_the_metrics_hook_sees_successes_and_failures(classifier, tmp_path):
    calls: list[tuple] = []
    options = WarmupOptions(on_warmup=lambda *a: calls.append(a))
    write_warmup(tmp_path, [classify_log()] * 3)
    run_warmup(classifier, str(tmp_path), options)
    write_warmup(tmp_path, [PredictionLog()] * (MAX_WARMUP_RECORDS + 1))
    with pytest.raises(ServingError):
        run_warmup(classifier, str(tmp_path), options)
    (path_ok, status_ok, latency_ok, records_ok), (path_bad, status_bad, _, records_bad) = calls
    assert (path_ok, status_ok, records_ok) == (str(tmp_path), "OK", 3)
    assert isinstance(latency_ok, int) and latency_ok > 0
    assert path_bad == str(tmp_path)
    assert status_bad.startswith("INVALID_ARGUMENT: Number of warmup records exceeds the maximum (1000)")
    assert records_bad == MAX_WARMUP_RECORDS + 1


def test_a_failing_metrics_hook_does_not_fail_the_load(classifier, tmp_path, caplog):
    def broken(*_: Any) -> None:
        raise RuntimeError("metrics are down")

    write_warmup(tmp_path, [classify_log()])
    with caplog.at_level(logging.ERROR, logger="pyserving.warmup"):
        assert run_warmup(classifier, str(tmp_path), WarmupOptions(on_warmup=broken)) == 1
    assert "Warmup metrics callback failed" in caplog.text


def test_from_flags():
    assert WarmupOptions.from_flags(False, 5) is None
    hook = lambda *a: None  # noqa: E731
    assert WarmupOptions.from_flags(True, 5, hook) == WarmupOptions(5, hook)
    assert WarmupOptions.from_flags(True, 0, None, True) == WarmupOptions(0, None, method_name_check=True)
    assert WarmupOptions(0).describe() == ""


class Relabelled(RecordingServable):
    """The servable with other method names on some signatures (as a TF2 classifier's,
    whose signatures all say predict)."""

    def __init__(self, servable: Any, methods: Mapping[str, str]) -> None:
        super().__init__(servable)
        self._signatures = {name: dataclasses.replace(sig, method_name=methods.get(name, sig.method_name))
                            for name, sig in servable.signatures.items()}

    @property
    def signatures(self) -> Mapping[str, Any]:
        return self._signatures


@pytest.mark.parametrize(
    "record, code, message",
    [
        (classify_log(), Code.INVALID_ARGUMENT,
         "Expected classification signature method_name to be tensorflow/serving/classify. "
         "Was: tensorflow/serving/predict"),
        (regress_log("regress"), Code.INVALID_ARGUMENT,
         "Expected regression signature method_name to be tensorflow/serving/regress. Was: "),
        (multi_inference_log([("m", "", CLASSIFY)]), Code.INVALID_ARGUMENT,
         "Expected classification signature method_name to be tensorflow/serving/classify. "
         "Was: tensorflow/serving/predict"),
        (predict_log("regress", inputs=np.array(modelgen.serialized_examples("x", [1.0]), dtype=object)),
         Code.INTERNAL,
         "Expected prediction signature method_name to be one of {tensorflow/serving/predict, "
         "tensorflow/serving/classify, tensorflow/serving/regress}. Was: "),
    ],
)
def test_the_method_name_check_applies_to_warmup_requests(classifier, tmp_path, record, code, message):
    servable = Relabelled(classifier, {"serving_default": "tensorflow/serving/predict", "regress": ""})
    write_warmup(tmp_path, [record])
    assert run_warmup(servable, str(tmp_path), WarmupOptions()) == 1  # off: TF Serving's default
    runs = len(servable.calls)
    with pytest.raises(ServingError) as info:
        run_warmup(servable, str(tmp_path), WarmupOptions(method_name_check=True))
    assert info.value.code == code
    assert info.value.message.startswith(message), info.value.message
    assert len(servable.calls) == runs  # refused before anything ran


# ---------------------------------------------------------------------------- with batching


class _Enqueued:
    """BatchObserver recording every enqueued task's (model, size)."""

    def __init__(self) -> None:
        self.tasks: list[tuple[str, int]] = []

    def on_enqueue(self, model_name: str, queue_name: str, task_size: int, queue_depth: int) -> None:
        self.tasks.append((model_name, task_size))

    def on_batch(self, stats: Any) -> None:
        pass


@pytest.fixture
def batching() -> Iterator[tuple[Any, _Enqueued]]:
    from pyserving.batching.scheduler import BatchScheduler

    enqueued = _Enqueued()
    scheduler = BatchScheduler(1, observers=[enqueued])
    yield scheduler, enqueued
    scheduler.stop(10)


def batched_loader(version_dir: Path, scheduler: Any) -> Any:
    from pyserving.batching.batching_servable import BatchingLoader
    from pyserving.batching.options import BatchingConfig, BatchingOptions

    config = BatchingConfig(BatchingOptions(max_batch_size=4, batch_timeout_micros=0))
    return BatchingLoader(SavedModelLoader(str(version_dir)), scheduler, config, str(version_dir), "hp2", 1)


def test_with_batching_warmup_runs_through_the_batch_queue(tmp_path, batching):
    """TF Serving wraps the session for batching before replaying warmup, so warmup
    requests are batched like served ones (and warm the batched path)."""
    scheduler, enqueued = batching
    version = modelgen.make_half_plus_two(tmp_path / "hp2", 1)
    write_warmup(version, [predict_log(x=np.array([[1.0], [2.0]], np.float32))] * 3)
    loader = batched_loader(version, scheduler)
    loader.load()
    try:
        assert enqueued.tasks == [("hp2", 2)] * 3
        servable = loader.servable()
        out = servable.run(servable.signatures["serving_default"], {"x": np.array([[4.0]], np.float32)})
        assert out["y"].tolist() == [[4.0]]
    finally:
        loader.unload()


def test_with_batching_a_failed_warmup_fails_the_load_and_frees_the_version(tmp_path, batching):
    scheduler, enqueued = batching
    version = modelgen.make_half_plus_two(tmp_path / "hp2", 1)
    write_warmup(version, [predict_log(x=np.array([[1.0]], np.float32)), predict_log("nope")])
    loader = batched_loader(version, scheduler)
    with pytest.raises(ServingError) as info:
        loader.load()
    assert info.value.code == Code.FAILED_PRECONDITION
    assert enqueued.tasks == [("hp2", 1)]
    with pytest.raises(ServingError, match="is not loaded"):
        loader.servable()
    write_warmup(version, [predict_log(x=np.array([[1.0]], np.float32))])
    loader.load()  # nothing was left half-loaded: the fixed folder loads
    try:
        assert enqueued.tasks == [("hp2", 1)] * 2
    finally:
        loader.unload()
