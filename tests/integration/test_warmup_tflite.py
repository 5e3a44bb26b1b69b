"""Model warmup and TFLite models, against real server processes (REST and official gRPC stubs).

Two servers, launched together over (nearly) the same model config:

- `warm`: `--prefer_tflite_model --num_request_iterations_for_warmup=2`, warmup on (the
  default);
- `cold`: `--enable_model_warmup=false`, no `--prefer_tflite_model`, and an
  `ai_edge_litert` package on PYTHONPATH that fails to import (an install without the
  `tflite` extra).

Models (`model_version_policy { all {} }` where a model has broken versions, so that the
good version serves and the others show their errors; no load retries):

- `counter`: TF Serving's stateful counter, warmup = 3 `incr_counter` records;
- `hp2`: TF Serving's half_plus_two; version 1 warms up with a predict, a classify, a
  regress and a multi_inference record; versions 2-6 carry broken warmup data (1001
  records, a damaged file, an unparsable record, a session_run_log, a failing request);
- `lazy_warm` / `lazy_cold`: y = 0.5x + 2 whose first run also does a one-time ~0.1-0.5 s
  initialization (as a model that fills a cache or compiles on first use); only
  `lazy_warm` has warmup data;
- `both`: a folder with half_plus_THREE's saved_model.pb and half_plus_TWO's model.tflite
  (so the answer tells which one is served);
- `mixed`: version 1 a SavedModel, version 2 a folder with only model.tflite;
- `tflite`, `tflite_sigdef` (warm server only): TF Serving's own TFLite exports.
"""

from __future__ import annotations

import os
import shutil
import statistics
import time
from pathlib import Path
from typing import Any, Iterator

import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf
from tensorflow.python.util import deprecation
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    predict_pb2,
    prediction_log_pb2,
    prediction_service_pb2_grpc,
)

from support import ServerProcess

WARMUP_RELATIVE = os.path.join("assets.extra", "tf_serving_warmup_requests")
LAZY_INIT_ITERATIONS = 250  # 384x384 matmuls: about 0.1-0.5 s on a 2-core machine

_v1 = tf.compat.v1


# ---------------------------------------------------------------------------- model making


def copy_version(src: Path, dst: Path) -> Path:
    """Copy a (possibly read-only) version folder, leaving it writable."""
    shutil.copytree(src, dst, copy_function=shutil.copyfile)
    for root, dirs, _ in os.walk(dst):
        for d in [root, *(os.path.join(root, x) for x in dirs)]:
            os.chmod(d, 0o755)
    return dst


def write_warmup(version: Path, records: list[Any]) -> None:
    path = version / WARMUP_RELATIVE
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for record in records:
            writer.write(record if isinstance(record, bytes) else record.SerializeToString())


def predict_record(signature: str = "", **inputs: Any) -> Any:
    log = prediction_log_pb2.PredictionLog()
    log.predict_log.request.model_spec.signature_name = signature
    for alias, value in inputs.items():
        log.predict_log.request.inputs[alias].CopyFrom(tf.make_tensor_proto(value))
    return log


def _examples(input_proto: Any, xs: list[float]) -> None:
    for x in xs:
        input_proto.example_list.examples.add().features.feature["x"].float_list.value.append(x)


def example_records() -> list[Any]:
    """A predict, a classify, a regress and a multi_inference record for half_plus_two."""
    classify = prediction_log_pb2.PredictionLog()
    classify.classify_log.request.model_spec.signature_name = "classify_x_to_y"
    _examples(classify.classify_log.request.input, [1.0, 2.0])
    regress = prediction_log_pb2.PredictionLog()
    regress.regress_log.request.model_spec.signature_name = "regress_x_to_y"
    _examples(regress.regress_log.request.input, [3.0])
    multi = prediction_log_pb2.PredictionLog()
    for signature, method in (("classify_x_to_y", "classify"), ("regress_x_to_y", "regress")):
        task = multi.multi_inference_log.request.tasks.add()
        task.model_spec.name = "anything"
        task.model_spec.signature_name = signature
        task.method_name = f"tensorflow/serving/{method}"
    _examples(multi.multi_inference_log.request.input, [4.0])
    predict = predict_record(x=np.array([[2.0]], np.float32))
    return [predict, classify, regress, multi]


def make_lazy_init_model(export_dir: Path) -> Path:
    """y = 0.5x + 2 whose first run also runs a one-time initialization (a while loop of
    matmuls) and flips a variable so later runs skip it."""
    with tf.Graph().as_default(), _v1.Session() as sess, deprecation.silence():
        x = _v1.placeholder(tf.float32, [None, 1], name="x")
        ready = _v1.get_variable("ready", initializer=False, use_resource=True, trainable=False)

        def initialize() -> tf.Tensor:
            w = tf.random.stateless_uniform([384, 384], seed=[1, 2]) / 384.0
            _, m = tf.while_loop(
                lambda i, m: i < LAZY_INIT_ITERATIONS,
                lambda i, m: (i + 1, tf.matmul(m, w)),
                (tf.constant(0), tf.eye(384)),
            )
            with tf.control_dependencies([m]):
                done = ready.assign(True)
            with tf.control_dependencies([done]):
                return tf.reduce_sum(m) * 0.0

        extra = tf.cond(ready.read_value(), lambda: tf.constant(0.0), initialize)
        y = tf.add(0.5 * x + 2.0, extra, name="y")
        sess.run(_v1.global_variables_initializer())
        builder = _v1.saved_model.Builder(str(export_dir))
        builder.add_meta_graph_and_variables(
            sess, ["serve"], strip_default_attrs=True,
            signature_def_map={"serving_default": _v1.saved_model.predict_signature_def({"x": x}, {"y": y})},
        )
        builder.save()
    return export_dir


def config_text(entries: dict[str, tuple[Path, bool]]) -> str:
    """name -> (base path, serve all versions)."""
    lines = []
    for name, (path, all_versions) in entries.items():
        policy = "model_version_policy { all {} }" if all_versions else ""
        lines.append(f'config {{ name: "{name}" base_path: "{path}" model_platform: "tensorflow" {policy} }}')
    return "model_config_list {\n  " + "\n  ".join(lines) + "\n}\n"


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, testdata: Path) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("warmup_tflite")
    half_plus_two = testdata / "saved_model_half_plus_two_cpu" / "00000123"
    half_plus_three = testdata / "saved_model_half_plus_three" / "00000123"
    tflite = testdata / "saved_model_half_plus_two_tflite"
    tflite_sigdef = testdata / "saved_model_half_plus_two_tflite_with_sigdef"
    counter = copy_version(testdata / "saved_model_counter" / "00000123", root / "counter" / "1")
    incr = predict_record("incr_counter")
    incr.predict_log.request.model_spec.name = "not-the-model-name"  # ignored by warmup
    write_warmup(counter, [incr] * 3)

    hp2 = root / "hp2"
    write_warmup(copy_version(half_plus_two, hp2 / "1"), example_records())
    write_warmup(copy_version(half_plus_two, hp2 / "2"), [prediction_log_pb2.PredictionLog()] * 1001)
    copy_version(half_plus_two, hp2 / "3")
    (hp2 / "3" / "assets.extra").mkdir()
    (hp2 / "3" / WARMUP_RELATIVE).write_bytes(b"this is no TFRecord file" * 4)
    write_warmup(copy_version(half_plus_two, hp2 / "4"), [b"\xff\xfe not a PredictionLog"])
    session_run = prediction_log_pb2.PredictionLog()
    session_run.session_run_log.SetInParent()
    write_warmup(copy_version(half_plus_two, hp2 / "5"), [session_run])
    write_warmup(copy_version(half_plus_two, hp2 / "6"), [predict_record("nope", x=np.array([[1.0]], np.float32))])

    write_warmup(make_lazy_init_model(root / "lazy_warm" / "1"), [predict_record(x=np.array([[1.0]], np.float32))])
    make_lazy_init_model(root / "lazy_cold" / "1")

    both = copy_version(half_plus_three, root / "both" / "1")
    shutil.copyfile(tflite / "00000123" / "model.tflite", both / "model.tflite")
    copy_version(half_plus_two, root / "mixed" / "1")
    copy_version(tflite / "00000123", root / "mixed" / "2")

    entries = {
        "counter": (root / "counter", False),
        "hp2": (hp2, True),
        "lazy_warm": (root / "lazy_warm", False),
        "lazy_cold": (root / "lazy_cold", False),
        "both": (root / "both", False),
        "mixed": (root / "mixed", True),
    }
    warm_config = root / "warm.config"
    warm_config.write_text(config_text({**entries, "tflite": (tflite, False), "tflite_sigdef": (tflite_sigdef, False)}))
    cold_config = root / "cold.config"
    cold_config.write_text(config_text(entries))
    no_litert = root / "no_litert" / "ai_edge_litert"
    no_litert.mkdir(parents=True)
    (no_litert / "__init__.py").write_text('raise ImportError("simulated: ai-edge-litert is not installed")\n')
    return {"root": root, "warm_config": warm_config, "cold_config": cold_config, "no_litert": no_litert.parent}


@pytest.fixture(scope="module")
def servers(models: dict[str, Any]) -> Iterator[dict[str, ServerProcess]]:
    common = ("--max_num_load_retries=0", "--file_system_poll_wait_seconds=0")
    pythonpath = os.pathsep.join(p for p in (str(models["no_litert"]), os.environ.get("PYTHONPATH", "")) if p)
    started = {
        "warm": ServerProcess(f"--model_config_file={models['warm_config']}", "--prefer_tflite_model",
                              "--num_request_iterations_for_warmup=2", *common),
        "cold": ServerProcess(f"--model_config_file={models['cold_config']}", "--enable_model_warmup=false",
                              *common, env={"PYTHONPATH": pythonpath}),
    }
    try:
        for server in started.values():
            server.launch()
        for server in started.values():
            server.wait_for_log("Server ready", timeout=180)
        yield started
    finally:
        for server in started.values():
            if server.proc is not None and server.proc.poll() is None:
                server.stop()


# ---------------------------------------------------------------------------- clients


def grpc_predict(server: ServerProcess, model: str, signature: str = "", **inputs: np.ndarray) -> dict[str, np.ndarray]:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    for alias, value in inputs.items():
        request.inputs[alias].CopyFrom(tf.make_tensor_proto(value))
    with grpc.insecure_channel(server.grpc_target) as channel:
        response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=30)
    return {alias: tf.make_ndarray(proto) for alias, proto in response.outputs.items()}


def rest_predict(server: ServerProcess, model: str, body: dict[str, Any], version: int | None = None) -> Any:
    path = f"/v1/models/{model}" + (f"/versions/{version}" if version else "") + ":predict"
    response = server.post(path, json=body)
    assert response.status_code == 200, response.text
    return response.json()


def version_status(server: ServerProcess, model: str) -> dict[str, dict[str, Any]]:
    body = server.get(f"/v1/models/{model}").json()
    return {v["version"]: v for v in body["model_version_status"]}


# ---------------------------------------------------------------------------- warmup


def test_warmup_records_are_replayed_before_the_version_is_available(servers, models):
    # 3 incr_counter records x --num_request_iterations_for_warmup=2, as TF Serving replays
    assert grpc_predict(servers["warm"], "counter", "get_counter")["output"] == 6.0
    warmup_path = models["root"] / "counter" / "1" / WARMUP_RELATIVE
    lines = servers["warm"].output
    assert (f"Starting to read warmup data for model at {warmup_path} with model-warmup-options "
            "num_request_iterations { value: 2 }") in lines
    assert f"Finished reading warmup data for model at {warmup_path}. Number of warmup records read: 3." in lines
    # Replay happened while LOADING: AVAILABLE is logged after the warmup's last line.
    finished = servers["warm"].wait_for_log(f"Finished reading warmup data for model at {warmup_path}")
    assert servers["warm"].wait_for_log("{name: counter version: 1} is AVAILABLE") > finished


def test_predict_classify_regress_and_multi_inference_records_warm_a_version(servers, models):
    warmup_path = models["root"] / "hp2" / "1" / WARMUP_RELATIVE
    assert f"Finished reading warmup data for model at {warmup_path}. Number of warmup records read: 4." in \
        servers["warm"].output
    assert rest_predict(servers["warm"], "hp2", {"instances": [2.0]}) == {"predictions": [3.0]}


@pytest.mark.parametrize(
    "version, code, message",
    [
        ("2", "INVALID_ARGUMENT", "Number of warmup records exceeds the maximum (1000) at {path}"),
        ("3", "DATA_LOSS", ". Please verify your warmup data is in TFRecord format."),
        ("4", "INVALID_ARGUMENT", "Failed to parse warmup record: "),
        ("5", "UNIMPLEMENTED", "Unsupported log_type for warmup: 5"),
        ("6", "FAILED_PRECONDITION", 'Serving signature key "nope" not found.'),
    ],
)
def test_bad_warmup_data_fails_that_version_only(servers, models, version, code, message):
    status = version_status(servers["warm"], "hp2")
    assert status["1"]["state"] == "AVAILABLE"
    assert status[version]["state"] == "END"
    assert status[version]["status"]["error_code"] == code
    path = models["root"] / "hp2" / version / WARMUP_RELATIVE
    assert message.format(path=path) in status[version]["status"]["error_message"]


def test_disabled_warmup_replays_nothing(servers):
    assert grpc_predict(servers["cold"], "counter", "get_counter")["output"] == 0.0
    assert "warmup data" not in servers["cold"].output
    status = version_status(servers["cold"], "hp2")  # broken warmup data is never read
    assert {v: s["state"] for v, s in status.items()} == {str(v): "AVAILABLE" for v in range(1, 7)}


def _latencies_ms(server: ServerProcess, model: str, n: int = 16) -> list[float]:
    """Wall times of `n` predicts on one keep-alive connection, opened by a status request
    (the server's first HTTP request costs ~3 ms more on its own, model or not)."""
    session = requests.Session()
    assert session.get(f"{server.url}/v1/models/{model}", timeout=60).status_code == 200
    times = []
    for _ in range(n):
        start = time.perf_counter()
        response = session.post(f"{server.url}/v1/models/{model}:predict", json={"instances": [[2.0]]}, timeout=60)
        times.append((time.perf_counter() - start) * 1000)
        assert response.json() == {"predictions": [[3.0]]}
    return times


def test_first_request_after_available_is_not_slower_than_the_tenth(servers):
    server = servers["warm"]
    warm = _latencies_ms(server, "lazy_warm")
    cold = _latencies_ms(server, "lazy_cold")
    warm_median, cold_median = statistics.median(warm[4:15]), statistics.median(cold[4:15])
    report = f"warm first {warm[0]:.1f} ms, median {warm_median:.1f}; cold first {cold[0]:.1f} ms, median {cold_median:.1f}"
    # "Not slower than the tenth", with slack for a shared 2-core machine: at most 3x the
    # median of requests 5-15 plus 5 ms of scheduling jitter. (Measured here: warm first
    # 2.3-2.9 ms, once 6.2 ms in a CI run, median 1.1-1.3 ms, the first inference of the
    # server included; cold first 110-200 ms, the model's one-time work being 100-500 ms.)
    def slow(first: float, median: float) -> bool:
        return first > 3 * median + 5.0

    # Without warmup data the same model's first request is clearly slow (the test can fail)...
    assert slow(cold[0], cold_median), report
    # ...and warmup removes that.
    assert not slow(warm[0], warm_median), report


# ---------------------------------------------------------------------------- TFLite


@pytest.mark.parametrize("model", ["tflite", "tflite_sigdef"])
def test_tf_serving_tflite_exports_answer_over_rest_and_grpc(servers, model):
    server = servers["warm"]
    assert rest_predict(server, model, {"instances": [[2.0]]}) == {"predictions": [[3.0]]}
    assert rest_predict(server, model, {"inputs": {"x": [[1.0], [2.0], [3.0]]}}) == {"outputs": [[2.5], [3.0], [3.5]]}
    assert grpc_predict(server, model, x=np.array([[2.0]], np.float32))["y"].tolist() == [[3.0]]
    assert grpc_predict(server, model, x=np.array([2.0, 4.0], np.float32))["y"].tolist() == [3.0, 4.0]


def test_tflite_metadata_shows_the_served_signature(servers):
    body = servers["warm"].get("/v1/models/tflite_sigdef/metadata").json()
    sig = body["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert sig["inputs"]["x"]["name"] == "tflite_input"  # stored as "tflite_input:0"
    assert sig["outputs"]["y"]["dtype"] == "DT_FLOAT"
    assert sig["method_name"] == "tensorflow/serving/predict"
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "tflite"
    with grpc.insecure_channel(servers["warm"].grpc_target) as channel:
        response = prediction_service_pb2_grpc.PredictionServiceStub(channel).GetModelMetadata(request, timeout=30)
    sig_map = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(sig_map)
    assert [d.size for d in sig_map.signature_def["serving_default"].inputs["x"].tensor_shape.dim] == [1, 1]


def test_prefer_tflite_model_chooses_model_tflite_over_saved_model(servers):
    # `both` holds half_plus_three's saved_model.pb and half_plus_two's model.tflite.
    assert rest_predict(servers["warm"], "both", {"instances": [[2.0]]}) == {"predictions": [[3.0]]}
    assert rest_predict(servers["cold"], "both", {"instances": [[2.0]]}) == {"predictions": [[4.0]]}


def test_a_folder_with_only_model_tflite_is_served_through_tflite(servers):
    assert rest_predict(servers["warm"], "mixed", {"instances": [[2.0]]}, version=2) == {"predictions": [[3.0]]}


def test_without_the_tflite_runtime_only_tflite_versions_fail(servers):
    status = version_status(servers["cold"], "mixed")
    assert status["1"]["state"] == "AVAILABLE"
    assert status["2"]["state"] == "END"
    assert status["2"]["status"]["error_code"] == "FAILED_PRECONDITION"
    assert "pip install 'pyserving[tflite]'" in status["2"]["status"]["error_message"]
    assert rest_predict(servers["cold"], "mixed", {"instances": [[2.0]]}) == {"predictions": [[3.0]]}
