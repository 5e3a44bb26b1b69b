"""Operability against real server processes: Prometheus metrics, health, drain, deadlines,
backpressure.

Servers (the two shared ones are launched together, then awaited):
- `metrics_server`: models `m` (half_plus_two) and `slow`, TF Serving's own
  monitoring_config.txt; metrics, deadline and plain health tests read it;
- `bounded_server`: `--max_in_flight_requests_per_model=2`, `--access_log`, models `life`
  (a folder the tests change) and `slow`, and a monitoring config without `enable`; the
  backpressure test and the health-through-a-model's-life test use it;
- the drain test starts (and stops) its own.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
import requests
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import (
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

import modelgen
from support import READY, ServerProcess

METRICS_PATH = "/monitoring/prometheus/metrics"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

# --------------------------------------------------------------------------- helpers


def model_config(tmp: Path, **models: Path) -> Path:
    path = tmp / "models.config"
    entries = "\n".join(
        f'  config {{ name: "{name}" base_path: "{base}" model_platform: "tensorflow" }}'
        for name, base in models.items()
    )
    path.write_text(f"model_config_list {{\n{entries}\n}}\n")
    return path


def half_plus_two_request(model: str, xs: list[float]) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.inputs["x"].CopyFrom(tensor_pb2.TensorProto(
        dtype=types_pb2.DT_FLOAT, float_val=xs,
        tensor_shape=tensor_shape_pb2.TensorShapeProto(dim=[{"size": len(xs)}, {"size": 1}]),
    ))
    return request


def slow_request(n: int, model: str = "slow") -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.inputs["n"].CopyFrom(tensor_pb2.TensorProto(dtype=types_pb2.DT_INT64, int64_val=[n]))
    return request


class Scrape:
    """One parsed scrape of the metrics page; `get(name, **labels)` by exported name."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                self.values[(s.name, tuple(sorted(s.labels.items())))] = s.value

    def get(self, name: str, **labels: str) -> float:
        key = tuple(sorted(labels.items()))
        # the parser reports counter samples as `<name>_total` whatever the page says
        return self.values.get((name, key), self.values.get((name + "_total", key), 0.0))


def scrape(server: ServerProcess) -> Scrape:
    r = server.get(METRICS_PATH)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return Scrape(r.text)


def wait_until(condition, timeout: float = 30.0, what: str = "condition") -> None:
    """Re-check a server-side condition (each check is a request) until it holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def health_status(channel: grpc.Channel, service: str = "") -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status


def wait_health(channel: grpc.Channel, status: int, timeout: float = 30.0) -> None:
    """Follow grpc.health.v1 Watch until it reports `status`."""
    stream = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
    try:
        for update in stream:
            if update.status == status:
                return
    finally:
        stream.cancel()
    raise AssertionError(f"health never reported {status}")


# --------------------------------------------------------------------------- shared servers


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("operability")
    modelgen.make_half_plus_two(root / "m", 1)
    modelgen.make_slow_model(root / "slow", 1)
    modelgen.make_half_plus_two(root / "store" / "life", 2, intercept=3.0)
    modelgen.make_half_plus_two(root / "life", 1)
    return root


@pytest.fixture(scope="module")
def servers(models, testdata, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("operability-config")
    disabled = tmp / "monitoring.config"
    disabled.write_text('prometheus_config { path: "/metrics" }\n')
    (tmp / "a").mkdir()
    (tmp / "b").mkdir()
    metrics_server = ServerProcess(
        f"--model_config_file={model_config(tmp / 'a', m=models / 'm', slow=models / 'slow')}",
        f"--monitoring_config_file={testdata / 'monitoring_config.txt'}",
    ).launch()
    bounded_server = ServerProcess(
        f"--model_config_file={model_config(tmp / 'b', life=models / 'life', slow=models / 'slow')}",
        f"--monitoring_config_file={disabled}", "--max_in_flight_requests_per_model=2", "--access_log",
    ).launch()
    started = [metrics_server, bounded_server]
    try:
        for server in started:
            server.wait_for_log(READY, 120)
        yield {"metrics": metrics_server, "bounded": bounded_server}
    finally:
        for server in started:
            if server.proc.poll() is None:
                assert server.stop() == 0


@pytest.fixture(scope="module")
def metrics_server(servers):
    return servers["metrics"]


@pytest.fixture(scope="module")
def bounded_server(servers):
    return servers["bounded"]


@pytest.fixture
def channel(metrics_server):
    with grpc.insecure_channel(metrics_server.grpc_target) as ch:
        yield ch


# --------------------------------------------------------------------------- Prometheus


def test_metrics_keep_tf_servings_names_and_ours_move_with_requests(metrics_server, channel):
    before = scrape(metrics_server)
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    for _ in range(3):
        r = metrics_server.post("/v1/models/m:predict", json={"instances": [[1.0], [2.0]]})
        assert r.json() == {"predictions": [[2.5], [3.0]]}
    assert metrics_server.get("/v1/models/m").status_code == 200
    assert metrics_server.post("/v1/models/m:predict", json={"instances": [["x"]]}).status_code == 400
    assert metrics_server.post("/v1/models/nope:predict", json={"instances": [1.0]}).status_code == 404
    r = metrics_server.post("/v1/models/m:classify",
                            json={"signature_name": "classify_x_to_y", "examples": [{"x": 1.0}, {"x": 2.0}]})
    assert r.status_code == 200, r.text
    for _ in range(2):
        stub.Predict(half_plus_two_request("m", [1.0]), timeout=30)
    model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(
        get_model_status_pb2.GetModelStatusRequest(model_spec={"name": "m"}), timeout=30)
    after = scrape(metrics_server)

    def delta(name: str, **labels: str) -> float:
        return after.get(name, **labels) - before.get(name, **labels)

    # TF Serving's: REST counts every /v1 request; gRPC Predict/Classify/Regress only.
    assert delta(":tensorflow:serving:request_count", model_name="m", status="OK") == 3 + 1 + 1 + 2
    assert delta(":tensorflow:serving:request_count", model_name="m", status="INVALID_ARGUMENT") == 1
    assert delta(":tensorflow:serving:request_count", model_name="_unknown", status="NOT_FOUND") == 1
    assert delta(":tensorflow:serving:request_latency_count", model_name="m", API="predict", entrypoint="REST") == 3
    assert delta(":tensorflow:serving:request_latency_count", model_name="m", API="", entrypoint="REST") == 1
    assert delta(":tensorflow:serving:request_latency_count", model_name="m", API="Predict", entrypoint="GRPC") == 2
    assert delta(":tensorflow:serving:runtime_latency_count", model_name="m", API="Predict", runtime="TF1") == 5
    assert delta(":tensorflow:serving:runtime_latency_count", model_name="m", API="Classify", runtime="TF1") == 1
    assert delta(":tensorflow:serving:request_example_count_total", model="m") == 2
    assert delta(":tensorflow:serving:request_example_counts_count", model="m") == 1
    # Ours: per version and signature, errors by code, lifecycle, in flight.
    assert delta("pyserving_request_latency_seconds_count", model="m", version="1", signature="serving_default",
                 api="predict", entrypoint="rest") == 3
    assert delta("pyserving_request_latency_seconds_count", model="m", version="1", signature="serving_default",
                 api="predict", entrypoint="grpc") == 2
    assert delta("pyserving_request_latency_seconds_count", model="m", version="1", signature="classify_x_to_y",
                 api="classify", entrypoint="rest") == 1
    assert delta("pyserving_request_latency_seconds_count", model="m", version="", signature="",
                 api="status", entrypoint="grpc") == 1
    assert delta("pyserving_request_errors_total", model="m", code="INVALID_ARGUMENT") == 1
    assert delta("pyserving_request_errors_total", model="_unknown", code="NOT_FOUND") == 1
    assert after.get("pyserving_model_version_state", model="m", version="1") == 30
    assert after.get("pyserving_model_version_state", model="slow", version="1") == 30
    assert after.get("pyserving_model_load_duration_seconds_count", model="m", outcome="success") == 1
    assert after.get("pyserving_in_flight_requests", model="m") == 0


def test_metrics_page_is_tf_servings_text_format(metrics_server):
    text = scrape(metrics_server).text
    assert "# HELP" not in text and "_created" not in text
    assert "# TYPE :tensorflow:serving:request_count counter" in text
    assert ":tensorflow:serving:request_count_total" not in text
    assert '\n:tensorflow:serving:request_count{model_name="m",status="OK"} ' in text
    buckets = [line for line in text.splitlines()
               if line.startswith(':tensorflow:serving:request_latency_bucket{model_name="m",API="predict",')]
    assert len(buckets) == 34  # 33 of TF Serving's 10 x 1.8^i buckets, then +Inf
    assert 'le="10"}' in buckets[0] and 'le="58.32"}' in buckets[3] and 'le="+Inf"}' in buckets[-1]


def test_metrics_path_is_exact_and_answers_any_method(metrics_server):
    assert requests.post(metrics_server.url + METRICS_PATH, timeout=30).status_code == 200
    for path in (METRICS_PATH + "/", METRICS_PATH + "x", "/metrics"):
        r = metrics_server.get(path)
        assert r.status_code == 404 and r.headers["content-type"] == "text/html", path


def test_metrics_are_off_without_enable(bounded_server):
    for path in ("/metrics", METRICS_PATH):
        assert bounded_server.get(path).status_code == 404


# --------------------------------------------------------------------------- health


def test_health_when_every_model_is_available(metrics_server, channel):
    assert metrics_server.get("/healthz").json() == {"status": "alive"}
    r = metrics_server.get("/readyz")
    assert (r.status_code, r.json()) == (200, {"status": "ready"})
    for service in ("", "tensorflow.serving.PredictionService", "ModelService"):
        assert health_status(channel, service) == SERVING


def test_health_through_a_models_life(bounded_server, models):
    life = models / "life"
    with grpc.insecure_channel(bounded_server.grpc_target) as ch:
        assert bounded_server.get("/readyz").status_code == 200
        assert health_status(ch) == SERVING

        mark = len(bounded_server.lines)
        shutil.move(str(life / "1"), str(models / "life-1-aside"))  # the only version goes away
        mark = bounded_server.wait_for_log("{name: life version: 1} is END", start=mark)
        r = bounded_server.get("/readyz")
        assert r.status_code == 503
        assert r.json() == {"error": "Not ready: model(s) without an AVAILABLE version: life"}
        assert bounded_server.get("/healthz").status_code == 200  # alive all the same
        wait_health(ch, NOT_SERVING)

        tmp = life / ".tmp-2"
        shutil.copytree(models / "store" / "life" / "2", tmp)
        os.rename(tmp, life / "2")
        bounded_server.wait_for_log("{name: life version: 2} is AVAILABLE", start=mark)
        assert bounded_server.get("/readyz").status_code == 200
        wait_health(ch, SERVING)
        assert bounded_server.post("/v1/models/life:predict", json={"instances": [1.0]}).json() == \
            {"predictions": [3.5]}


# --------------------------------------------------------------------------- deadlines


def test_grpc_deadline_on_a_slow_run_answers_deadline_exceeded(metrics_server, channel):
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    before = scrape(metrics_server)
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as err:
        stub.Predict(slow_request(10**10), timeout=0.5)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 5

    def recorded() -> bool:
        after = scrape(metrics_server)
        return (after.get("pyserving_request_errors_total", model="slow", code="DEADLINE_EXCEEDED")
                - before.get("pyserving_request_errors_total", model="slow", code="DEADLINE_EXCEEDED") == 1
                and after.get("pyserving_in_flight_requests", model="slow") == 0)

    wait_until(recorded, what="the expired call to be counted and gone")
    # TF cancelled the run: the model answers at once again.
    r = stub.Predict(slow_request(10), timeout=30)
    assert list(r.outputs["count"].float_val) == [10.0]


def test_grpc_request_whose_deadline_passes_in_the_queue_is_not_run(metrics_server, channel):
    """Fill the worker pool (Python's default executor: min(32, CPUs + 4) threads) with
    slow runs, then queue one call with a deadline shorter than the wait: it must never run."""
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    workers = min(32, (os.cpu_count() or 1) + 4)
    busy = workers + 2
    # A second or more per run: every call is admitted while the first runs still hold
    # the pool, even on a loaded machine (the gauge must see all of them at once).
    n = 400_000
    before = scrape(metrics_server)
    futures = [stub.Predict.future(slow_request(n), timeout=120) for _ in range(busy)]
    wait_until(lambda: scrape(metrics_server).get("pyserving_in_flight_requests", model="slow") == busy,
               what=f"{busy} slow calls in flight")
    with pytest.raises(grpc.RpcError) as err:
        stub.Predict(slow_request(n), timeout=0.1)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert [list(f.result().outputs["count"].float_val) for f in futures] == [[float(n)]] * busy

    def settled() -> bool:
        return scrape(metrics_server).get("pyserving_in_flight_requests", model="slow") == 0

    wait_until(settled, what="every slow call to end")
    after = scrape(metrics_server)
    runs = after.get(":tensorflow:serving:runtime_latency_count", model_name="slow", API="Predict", runtime="TF1") \
        - before.get(":tensorflow:serving:runtime_latency_count", model_name="slow", API="Predict", runtime="TF1")
    assert runs == busy  # the expired call never ran
    assert after.get("pyserving_request_errors_total", model="slow", code="DEADLINE_EXCEEDED") \
        - before.get("pyserving_request_errors_total", model="slow", code="DEADLINE_EXCEEDED") == 1


# --------------------------------------------------------------------------- backpressure


def test_saturated_model_answers_429_and_resource_exhausted(bounded_server):
    url = bounded_server.url + "/v1/models/slow:predict"
    with ThreadPoolExecutor(2) as pool, grpc.insecure_channel(bounded_server.grpc_target) as ch:
        mark = len(bounded_server.lines)
        busy = [pool.submit(requests.post, url, json={"inputs": {"n": 1_000_000}}, timeout=120) for _ in range(2)]
        for _ in busy:  # both accepted: the access log line is written as the request is admitted
            mark = bounded_server.wait_for_log("POST /v1/models/slow:predict started", start=mark) + 1

        r = requests.post(url, json={"inputs": {"n": 10}}, timeout=30)
        assert r.status_code == 429
        assert r.headers["retry-after"] == "1"
        assert r.headers["content-type"] == "application/json"
        assert "Too many requests in flight for model slow (limit 2" in r.json()["error"]

        stub = prediction_service_pb2_grpc.PredictionServiceStub(ch)
        with pytest.raises(grpc.RpcError) as err:
            stub.Predict(slow_request(10), timeout=30)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "--max_in_flight_requests_per_model" in err.value.details()

        # The bound is per model: another model still answers, and so does status.
        assert bounded_server.post("/v1/models/life:predict", json={"instances": [1.0]}).status_code == 200
        assert bounded_server.get("/v1/models/slow").status_code == 200
        assert [f.result().json() for f in busy] == [{"outputs": 1_000_000.0}] * 2
    assert requests.post(url, json={"inputs": {"n": 10}}, timeout=30).json() == {"outputs": 10.0}


# --------------------------------------------------------------------------- graceful drain


def test_sigterm_during_a_stream_of_requests_loses_none_and_exits_0(models, tmp_path):
    config = model_config(tmp_path, m=models / "m", slow=models / "slow")
    server = ServerProcess(f"--model_config_file={config}", "--access_log").start()
    failures: list[str] = []
    answered: list[int] = []
    refused: list[str] = []
    stop = threading.Event()

    def rest_client() -> None:
        session = requests.Session()  # keep-alive: requests arrive on open connections during the drain
        while not stop.is_set():
            try:
                r = session.post(server.url + "/v1/models/m:predict", json={"instances": [[2.0]]}, timeout=60)
            except requests.ConnectionError as exc:
                if "Connection refused" in str(exc):  # the listener is closed: never accepted
                    refused.append("refused")
                else:
                    failures.append(f"REST {exc!r}")
                return
            if r.status_code == 200 and r.json() == {"predictions": [[3.0]]}:
                answered.append(1)
            elif r.status_code == 503 and "shutting down" in r.json()["error"] \
                    and r.headers.get("connection") == "close":
                refused.append("503")
                return
            else:
                failures.append(f"REST {r.status_code} {r.headers} {r.text}")
                return

    def grpc_client() -> None:
        with grpc.insecure_channel(server.grpc_target) as ch:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(ch)
            while not stop.is_set():
                try:
                    r = stub.Predict(half_plus_two_request("m", [2.0]), timeout=60)
                except grpc.RpcError as err:
                    if err.code() == grpc.StatusCode.UNAVAILABLE:
                        refused.append("grpc UNAVAILABLE")
                    else:
                        failures.append(f"gRPC {err.code()} {err.details()}")
                    return
                if list(r.outputs["y"].float_val) == [3.0]:
                    answered.append(1)
                else:
                    failures.append(f"gRPC wrong answer {r}")
                    return

    clients = [threading.Thread(target=rest_client) for _ in range(3)] + [threading.Thread(target=grpc_client)]
    try:
        with grpc.insecure_channel(server.grpc_target) as ch, \
                socket.create_connection(("127.0.0.1", server.rest_port), timeout=60) as held:
            # A request accepted before SIGTERM and still uploading its body: it holds the
            # drain open for exactly as long as this test needs, then must still be answered.
            body = b'{"inputs": {"n": 10}}'
            held.sendall(b"POST /v1/models/slow:predict HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n" % len(body) + body[:5])
            mark = server.wait_for_log("POST /v1/models/slow:predict started")
            for t in clients:
                t.start()
            wait_until(lambda: len(answered) >= 20, what="the clients to be answered")
            server.proc.send_signal(signal.SIGTERM)
            server.wait_for_log("Draining:", start=mark)

            # While the slow requests finish: not ready, alive, everything new refused cleanly.
            r = server.get("/readyz")
            assert (r.status_code, r.json()) == (503, {"error": "Not ready: the server is shutting down"})
            assert server.get("/healthz").status_code == 200
            assert health_status(ch) == NOT_SERVING
            r = requests.post(server.url + "/v1/models/m:predict", json={"instances": [[2.0]]}, timeout=30)
            assert r.status_code == 503 and r.headers["connection"] == "close"
            assert r.json() == {"error": "The server is shutting down and accepts no new requests"}
            with pytest.raises(grpc.RpcError) as err:
                prediction_service_pb2_grpc.PredictionServiceStub(ch).Predict(
                    half_plus_two_request("m", [2.0]), timeout=30)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE

            held.sendall(body[5:])
            response = held.makefile("rb").read()  # the server closes the connection after it
            head, _, payload = response.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200"), response
            assert b"connection: close" in head.lower()
            assert json.loads(payload) == {"outputs": 10.0}
        for t in clients:
            t.join(60)
        assert server.wait_exit(60) == 0
    finally:
        stop.set()
        if server.proc.poll() is None:
            server.proc.kill()
    assert failures == []
    assert len(refused) == len(clients)  # every client was eventually turned away cleanly
    assert "Drained: no request in flight" in server.output
