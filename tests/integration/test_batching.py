"""Server-side batching against the real server: REST and the official gRPC stubs.

One server (`--enable_batching --enable_per_model_batching_parameters`, one batch thread
shared by every model) serves copies of the same models with different
`batching_params.pbtxt` files, plus copies without one (not batched: the reference
answers). A second server turns batching on through seed 000's environment variables.

"Slow" requests go to a model whose run time is set by the request (`n` loop iterations,
far more than the test lasts) and end at their gRPC deadline, which bounds the batch run:
they hold the single batch thread for a known stretch without any sleep in the tests.
"""

from __future__ import annotations

import concurrent.futures
import shutil
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from prometheus_client.parser import text_string_to_metric_families
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from support import ServerProcess

METRICS_PATH = "/monitoring/prometheus/metrics"
HUGE_N = 10**12  # loop iterations: the run only ends at its deadline


def make_batchable_slow_model(base: Path, version: int = 1) -> Path:
    """`n` int64 [-1] -> `count` float [-1] (after max(n) loop iterations) and `echo` = 2n."""
    export_dir = base / str(version)
    with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
        n = tf.compat.v1.placeholder(tf.int64, [None], name="n")
        limit = tf.reduce_max(n)
        _, count = tf.while_loop(lambda i, c: i < limit, lambda i, c: (i + 1, c + 1.0),
                                 (tf.constant(0, tf.int64), tf.constant(0.0)))
        count = tf.identity(tf.zeros_like(n, tf.float32) + count, name="count")
        echo = tf.identity(n * 2, name="echo")
        builder = tf.compat.v1.saved_model.Builder(str(export_dir))
        sig = tf.compat.v1.saved_model.predict_signature_def({"n": n}, {"count": count, "echo": echo})
        builder.add_meta_graph_and_variables(sess, ["serve"], signature_def_map={"serving_default": sig})
        builder.save()
    return export_dir


def copy_model(src: Path, dst: Path, params: str | None) -> Path:
    shutil.copytree(src, dst)
    if params is not None:
        for version_dir in dst.iterdir():
            (version_dir / "batching_params.pbtxt").write_text(params)
    return dst


MODELS = {
    # name: (source, batching_params.pbtxt or None = not batched)
    "hpt": ("half_plus_two", "max_batch_size { value: 8 } batch_timeout_micros { value: 20000 } "
                             "allowed_batch_sizes: 2 allowed_batch_sizes: 4 allowed_batch_sizes: 8 "
                             "max_enqueued_batches { value: 1000 }"),
    "hpt_split": ("half_plus_two", "max_batch_size { value: 100000 } enable_large_batch_splitting { value: true } "
                                   "max_execution_batch_size { value: 4 } allowed_batch_sizes: 2 "
                                   "allowed_batch_sizes: 4 max_enqueued_batches { value: 100000 }"),
    "hpt_plain": ("half_plus_two", None),
    "mnist": ("mnist_cnn", "max_batch_size { value: 64 } batch_timeout_micros { value: 20000 }"),
    "mnist_plain": ("mnist_cnn", None),
    "slow": ("slow", "max_batch_size { value: 1 } max_enqueued_batches { value: 1 }"),
    "slow_fair": ("slow", "max_batch_size { value: 1 } max_enqueued_batches { value: 10 }"),
}


@pytest.fixture(scope="module")
def server(model_zoo, tmp_path_factory):
    root = tmp_path_factory.mktemp("batching")
    slow_src = make_batchable_slow_model(root / "slow_src")
    entries = []
    for name, (source, params) in MODELS.items():
        src = slow_src.parent if source == "slow" else model_zoo / source
        path = copy_model(src, root / name, params)
        entries.append(f'config {{ name: "{name}" base_path: "{path}" model_platform: "tensorflow" }}')
    config = root / "models.config"
    config.write_text("model_config_list {\n" + "\n".join(entries) + "\n}\n")
    pool = root / "pool.txt"
    pool.write_text("num_batch_threads { value: 1 } thread_pool_name { value: \"test_batch_threads\" }")
    monitoring = root / "monitoring.txt"
    monitoring.write_text(f'prometheus_config {{ enable: true path: "{METRICS_PATH}" }}')
    with ServerProcess(
        f"--model_config_file={config}", "--enable_batching", f"--batching_parameters_file={pool}",
        "--enable_per_model_batching_parameters", f"--monitoring_config_file={monitoring}",
        "--file_system_poll_wait_seconds=0",
    ) as proc:
        yield proc


@pytest.fixture(scope="module")
def stub(server):
    channel = grpc.insecure_channel(server.grpc_target)
    yield prediction_service_pb2_grpc.PredictionServiceStub(channel)
    channel.close()


def predict(server, model, instances):
    return server.post(f"/v1/models/{model}:predict", json={"instances": instances})


def slow_request(model: str, n: int) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.inputs["n"].CopyFrom(tf.make_tensor_proto([n], dtype=tf.int64))
    return request


def tasks_admitted(server) -> float:
    """TF's `batching_session/wrapped_run_count`: requests admitted to any batch queue."""
    name = ":tensorflow:serving:batching_session:wrapped_run_count"
    for family in text_string_to_metric_families(server.get(METRICS_PATH).text):
        for sample in family.samples:
            if sample.name in (name, name + "_total"):
                return sample.value
    return 0.0


def wait_admitted(server, count: float, timeout: float = 30) -> None:
    """Until `count` requests in all have entered a batch queue (the scheduler's metric)."""
    deadline = time.monotonic() + timeout
    while tasks_admitted(server) < count:
        assert time.monotonic() < deadline, f"fewer than {count} requests ever reached a batch queue"
        time.sleep(0.01)


# --------------------------------------------------------------------------- results


def assert_rest_answers_equal_unbatched(server, sizes, threads):
    """Concurrent requests of ``sizes`` rows to the batched copies of half_plus_two answer
    byte for byte as the unbatched one."""
    bodies = [[[float(10 * i + j)] for j in range(size)] for i, size in enumerate(sizes)]
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        batched = list(pool.map(lambda b: predict(server, "hpt", b), bodies))
        split = list(pool.map(lambda b: predict(server, "hpt_split", b), bodies))
    for body, a, b in zip(bodies, batched, split):
        reference = predict(server, "hpt_plain", body)
        assert reference.status_code == a.status_code == b.status_code == 200, (a.text, b.text)
        assert a.text == reference.text == b.text  # byte for byte


def assert_cnn_answers_match_unbatched(call, sizes, seed):
    """``call(model, images) -> predictions``: concurrent requests of ``sizes`` images to
    the batched MNIST CNN match the unbatched model's answers."""
    rng = np.random.default_rng(seed)
    images = [rng.random((k, 28, 28, 1), dtype=np.float32) for k in sizes]
    with concurrent.futures.ThreadPoolExecutor(len(images)) as pool:
        batched = list(pool.map(lambda x: call("mnist", x), images))
    for x, got in zip(images, batched):
        want = call("mnist_plain", x)
        assert got.shape == want.shape == (len(x), 10)
        # Same rows; a different batch size may pick another kernel (last-bit differences,
        # as in TF Serving), so compare to float32 precision.
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


def test_batched_answers_equal_unbatched_for_mixed_sizes_rest(server):
    assert_rest_answers_equal_unbatched(server, [1, 3, 2, 5, 1, 4, 8, 2], 8)
    server.wait_for_log("Batching hpt:1: max_batch_size=8 batch_timeout_micros=20000", timeout=5)


def test_batched_cnn_answers_match_unbatched_grpc(server, stub):
    def call(model, x):
        request = predict_pb2.PredictRequest()
        request.model_spec.name = model
        request.inputs["input_image"].CopyFrom(tf.make_tensor_proto(x))
        return tf.make_ndarray(stub.Predict(request, timeout=60).outputs["y_pred"])

    assert_cnn_answers_match_unbatched(call, (1, 2, 1, 3, 1, 4), seed=4)


def test_a_request_larger_than_splittable_limits_is_split(server):
    body = [[float(i)] for i in range(37)]
    r = predict(server, "hpt_split", body)
    assert r.status_code == 200
    assert r.json()["predictions"] == [[0.5 * i + 2] for i in range(37)]


def test_a_request_larger_than_max_batch_size_is_invalid_argument(server, stub):
    r = predict(server, "hpt", [[1.0]] * 9)
    assert r.status_code == 400
    assert r.json() == {"error": "Task size 9 is larger than maximum input batch size 8"}
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "hpt"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.ones((9, 1), np.float32)))
    with pytest.raises(grpc.RpcError) as err:
        stub.Predict(request, timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_a_scalar_input_cannot_be_batched(server):
    r = server.post("/v1/models/hpt:predict", json={"inputs": 3.0})
    assert r.status_code == 400
    assert r.json() == {"error": "Batching Run() input tensors must have at least one dimension"}


# --------------------------------------------------------------------------- queues and deadlines


def test_a_full_queue_answers_503_at_once(server, stub):
    """`slow` holds one batch of one request; a second waits; the rest are refused."""
    holder = stub.Predict.future(slow_request("slow", HUGE_N), timeout=3)
    try:
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            replies = [pool.submit(predict, server, "slow", [1]) for _ in range(4)]
            first = next(concurrent.futures.as_completed(replies)).result()
            assert not holder.done()  # answered while the held batch is still running
            assert first.status_code == 503, first.text
            assert first.json()["error"] == (
                "The batch scheduling queue to which this task was submitted is full; currently 1 "
                "batches enqueued and max_enqueued_batches is 1")
            # The one that got the queued place runs once the holder's batch ends.
            codes = sorted(r.result().status_code for r in replies)
        assert 200 in codes and 503 in codes
    finally:
        with pytest.raises(grpc.RpcError) as err:
            holder.result()
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


def test_a_queued_request_fails_at_its_deadline_not_after_the_batch_ahead(server, stub):
    before = tasks_admitted(server)
    holder = stub.Predict.future(slow_request("slow_fair", HUGE_N), timeout=4)
    try:
        wait_admitted(server, before + 1)  # the holder has the batch thread (or is next)
        with pytest.raises(grpc.RpcError) as err:
            stub.Predict(slow_request("slow_fair", 1), timeout=0.5)
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert not holder.done()
    finally:
        with pytest.raises(grpc.RpcError):
            holder.result()


def test_two_models_share_the_batch_thread_fairly(server, stub):
    """While `slow_fair` runs a long batch with two more queued, a request for another
    model runs next (round-robin across queues), before the queued `slow_fair` ones."""
    finished: list[str] = []
    lock = threading.Lock()

    def track(name):
        def done(_future):
            with lock:
                finished.append(name)
        return done

    before = tasks_admitted(server)
    holder = stub.Predict.future(slow_request("slow_fair", HUGE_N), timeout=3)
    holder.add_done_callback(track("holder"))
    queued = []
    for i in range(2):
        f = stub.Predict.future(slow_request("slow_fair", 1), timeout=60)
        f.add_done_callback(track(f"queued{i}"))
        queued.append(f)
    wait_admitted(server, before + 3)
    other = predict_pb2.PredictRequest()
    other.model_spec.name = "hpt"
    other.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([[1.0]], np.float32)))
    fast = stub.Predict.future(other, timeout=60)
    fast.add_done_callback(track("other model"))
    assert tf.make_ndarray(fast.result().outputs["y"]).tolist() == [[2.5]]
    for f in queued:
        assert tf.make_ndarray(f.result().outputs["echo"]).tolist() == [2]
    with pytest.raises(grpc.RpcError):
        holder.result()
    assert finished.index("other model") < finished.index("queued0")
    assert finished.index("other model") < finished.index("queued1")


def test_batching_metrics_are_exported(server):
    predict(server, "hpt", [[1.0], [2.0], [3.0]])
    text = server.get(METRICS_PATH).text
    assert ":tensorflow:serving:batching_session:input_batch_size" in text
    assert 'queuing_latency_count{thread_pool_name="test_batch_threads"}' in text


# --------------------------------------------------------------------------- other servers


def test_bad_allowed_batch_sizes_fail_the_load_with_tf_message(model_zoo, tmp_path):
    params = tmp_path / "batching.txt"
    params.write_text("max_batch_size { value: 8 } allowed_batch_sizes: 4")
    server = ServerProcess("--model_name=hpt", f"--model_base_path={model_zoo / 'half_plus_two'}",
                           "--enable_batching", f"--batching_parameters_file={params}",
                           "--max_num_load_retries=0", grpc=False).launch()
    assert server.wait_exit(120) == 255
    assert ("Last entry in allowed_batch_sizes must match max_batch_size; last entry was 4; expected 8"
            in server.output)
    assert "Failed to start server" in server.output



def test_seed_000_environment_variables_turn_batching_on(model_zoo):
    env = {"TF_ENABLE_BATCHING": "1", "TF_BATCH_TIMEOUT_MICROS": "10000"}
    with ServerProcess("--model_name=hpt", f"--model_base_path={model_zoo / 'half_plus_two'}",
                       grpc=False, env=env) as server:
        server.wait_for_log("Batching hpt:1: max_batch_size=1000 batch_timeout_micros=10000", timeout=5)
        r = predict(server, "hpt", [[1.0], [2.0]])
        assert r.json() == {"predictions": [[2.5], [3.0]]}


# --------------------------------------------------------------------------- adaptive mode

ADAPTIVE_MODELS = {
    # a long timeout: in fixed mode every lone request would wait a whole second
    "hpt": ("half_plus_two", "max_batch_size { value: 8 } batch_timeout_micros { value: 1000000 } "
                             "allowed_batch_sizes: 2 allowed_batch_sizes: 4 allowed_batch_sizes: 8 "
                             "max_enqueued_batches { value: 1000 }"),
    "hpt_split": MODELS["hpt_split"],
    "hpt_plain": MODELS["hpt_plain"],
    "mnist": ("mnist_cnn", "max_batch_size { value: 64 } batch_timeout_micros { value: 1000000 }"),
    "mnist_plain": MODELS["mnist_plain"],
}


@pytest.fixture(scope="module")
def adaptive_server(model_zoo, tmp_path_factory):
    root = tmp_path_factory.mktemp("adaptive")
    entries = []
    for name, (source, params) in ADAPTIVE_MODELS.items():
        path = copy_model(model_zoo / source, root / name, params)
        entries.append(f'config {{ name: "{name}" base_path: "{path}" model_platform: "tensorflow" }}')
    config = root / "models.config"
    config.write_text("model_config_list {\n" + "\n".join(entries) + "\n}\n")
    monitoring = root / "monitoring.txt"
    monitoring.write_text(f'prometheus_config {{ enable: true path: "{METRICS_PATH}" }}')
    with ServerProcess(
        f"--model_config_file={config}", "--enable_batching", "--enable_per_model_batching_parameters",
        "--batching_mode=adaptive", f"--monitoring_config_file={monitoring}",
        "--file_system_poll_wait_seconds=0",
    ) as proc:
        yield proc


def test_adaptive_answers_equal_unbatched_for_mixed_sizes(adaptive_server):
    server = adaptive_server
    assert_rest_answers_equal_unbatched(server, [1, 3, 2, 5, 1, 4, 8, 2] * 3, 8)
    server.wait_for_log("Batching hpt:1: max_batch_size=8 batch_timeout_micros=1000000", timeout=5)
    server.wait_for_log("mode=adaptive", timeout=5)


def test_adaptive_cnn_answers_match_unbatched(adaptive_server):
    def call(model, x):
        r = predict(adaptive_server, model, x.tolist())
        assert r.status_code == 200, r.text
        return np.asarray(r.json()["predictions"], np.float32)

    assert_cnn_answers_match_unbatched(call, (1, 2, 1, 3, 1, 4, 7, 1, 2), seed=5)


def test_adaptive_lone_requests_do_not_wait_for_the_timeout(adaptive_server):
    # The timeout is one second: ten sequential requests in fixed mode would take ten.
    started = time.monotonic()
    for i in range(10):
        r = predict(adaptive_server, "hpt", [[float(i)]])
        assert r.json() == {"predictions": [[i / 2 + 2]]}
    assert time.monotonic() - started < 5.0


def test_adaptive_metrics_are_exported(adaptive_server):
    predict(adaptive_server, "mnist", np.zeros((2, 28, 28, 1)).tolist())
    families = {f.name: f for f in text_string_to_metric_families(adaptive_server.get(METRICS_PATH).text)}
    fixed_cost = {s.labels["model"]: s.value for s in families["pyserving_batch_cost_fixed_seconds"].samples}
    assert fixed_cost["mnist"] > 0  # learned from the warmed batch sizes and the requests
    assert "pyserving_batch_queue_delay_seconds" in families
    rows = {s.labels["model"]: s.value for s in families["pyserving_batch_rows"].samples
            if s.name == "pyserving_batch_rows_total"}
    assert rows["mnist"] >= 2
