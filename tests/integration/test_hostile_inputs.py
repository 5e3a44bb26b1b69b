"""Hostile and malformed input against a real server process: each case must get a clean
error in TF Serving's shape (or be ignored), never a 500, a traceback, unbounded state or a
write outside the server's own directories.

One shared server (`server`): model `m` (half_plus_two), TF Serving's monitoring config,
`--access_log`, the profiler on (TF Serving's default) writing under a test directory.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import stat
import time
from pathlib import Path

import grpc
import pytest
import requests
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families
from tensorflow_serving.apis import (
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

import modelgen
from support import ServerProcess

METRICS_PATH = "/monitoring/prometheus/metrics"


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("hostile")


@pytest.fixture(scope="module")
def server(root, testdata):
    modelgen.make_half_plus_two(root / "models" / "m", 1)
    with ServerProcess(
        "--model_name=m", f"--model_base_path={root / 'models' / 'm'}",
        f"--monitoring_config_file={testdata / 'monitoring_config.txt'}", "--access_log",
        f"--profiler_dir={root / 'profiles'}",
    ) as s:
        yield s


def raw_http(server: ServerProcess, request: bytes) -> bytes:
    """Send `request` as is (no client-side encoding) and read until the server closes."""
    with socket.create_connection(("127.0.0.1", server.rest_port), timeout=30) as conn:
        conn.sendall(request)
        chunks = []
        while data := conn.recv(65536):
            chunks.append(data)
    return b"".join(chunks)


def metric(server: ServerProcess, name: str, **labels: str) -> float | None:
    """One sample of the Prometheus page (None when absent)."""
    text = server.get(METRICS_PATH).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return None


def wait_until(condition, timeout: float = 30.0) -> None:
    """Re-check a server-side condition (each check is a request) until it holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.01)


def series(server: ServerProcess) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
    """Every (sample name, labels) on the Prometheus page."""
    text = server.get(METRICS_PATH).text
    return {(s.name, tuple(sorted(s.labels.items())))
            for family in text_string_to_metric_families(text) for s in family.samples}


# --------------------------------------------------------------------------- metrics


def test_requests_for_unknown_model_names_do_not_grow_the_metrics_page(server):
    def unknown_names(count: int) -> list[str]:
        return [f"nope-{secrets.token_hex(8)}" for _ in range(count)]

    def ask_for(names: list[str], long_name: str) -> None:
        with grpc.insecure_channel(server.grpc_target) as channel:
            predict = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict
            for name in [*names, long_name]:
                with pytest.raises(grpc.RpcError) as caught:
                    predict(predict_pb2.PredictRequest(model_spec={"name": name}), timeout=30)
                assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        for name in [*names, long_name[:50_000]]:  # httptools takes URLs up to 64 KiB
            assert server.post(f"/v1/models/{name}:predict", data='{"instances": [1.0]}').status_code == 404
            assert server.get(f"/v1/models/{name}").status_code == 404

    ask_for(unknown_names(3), "y" * 1_000_000)  # the series for unknown names exist from here
    assert server.post("/v1/models/m:predict", data='{"instances": [1.0]}').status_code == 200
    before = series(server)
    ask_for(unknown_names(100), "x" * 5_000_000)
    after = series(server)
    assert after == before, sorted(after - before)[:5]
    assert all(value in ("m", "_unknown") for _, labels in after for key, value in labels
               if key in ("model", "model_name")), sorted(after)
    grown = metric(server, ":tensorflow:serving:request_count_total", model_name="_unknown", status="NOT_FOUND")
    assert grown is not None and grown >= 3 * 101  # gRPC Predict, REST predict and status


# --------------------------------------------------------------------------- REST


def test_not_found_page_escapes_the_requested_path(server):
    path = b"/<script>alert('x')</script>&\"q"
    response = raw_http(server, b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 404 "), response
    assert b"<script>" not in body
    assert body == (b"<html><head><title>404 Not Found</title></head><body><h1>Not Found</h1>"
                    b"<p>The requested URL /&lt;script&gt;alert(&#039;x&#039;)&lt;/script&gt;&amp;&quot;q "
                    b"was not found on this server.</p></body></html>")


HUGE = "1" + "0" * 100_000  # a 100,001-digit number


@pytest.mark.parametrize("body", [
    '{"instances": [%s]}' % HUGE,
    '{"instances": [[1.0], [%s]]}' % HUGE,
    '{"inputs": [%s]}' % HUGE,
    '{"inputs": {"x": [-%s]}}' % HUGE,
    '{"instances": [%s]}' % ("1.0, " * 100_000 + HUGE),  # a big body: the raw-array path
])
def test_a_huge_number_in_the_body_answers_400(server, body):
    r = server.post("/v1/models/m:predict", data=body)
    assert r.status_code == 400, r.text[:300]
    error = r.json()["error"]
    assert error.startswith("JSON Parse error: Number too big to be stored in double. at offset: "), error


# 5,001 digits: past Python's int() limit (4,300) and within httptools' URL limit (64 KiB;
# a longer URL gets uvicorn's plain-text 400 before any of our code runs).
@pytest.mark.parametrize("version", ["1" + "0" * 5_000, "9223372036854775808", "0" * 10_000 + "99999999999999999999"])
def test_a_huge_version_in_the_url_answers_400(server, version):
    for method, verb in (("GET", ""), ("POST", ":predict")):
        r = requests.request(method, f"{server.url}/v1/models/m/versions/{version}{verb}",
                             data='{"instances": [1.0]}', timeout=30)
        assert r.status_code == 400, r.text[:300]
        assert r.json() == {"error": f"Failed to convert version: {version} to numeric."}


def test_a_version_with_leading_zeros_is_that_version(server):
    r = server.post("/v1/models/m/versions/" + "0" * 10_000 + "1:predict", data='{"instances": [1.0]}')
    assert r.status_code == 200, r.text[:300]
    assert r.json() == {"predictions": [2.5]}


def test_pipelining_client_that_closes_early_is_a_plain_disconnect(server):
    """Three requests in one write, then close without reading: the server's answers to
    the second and third find the connection gone, which is no server error."""
    start = len(server.lines)
    body = b'{"instances": [1.0]}'
    request = (b"POST /v1/models/m:predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    for _ in range(10):
        with socket.create_connection(("127.0.0.1", server.rest_port), timeout=30) as conn:
            conn.sendall(request * 3)
    wait_until(lambda: metric(server, "pyserving_in_flight_requests", model="m") == 0)
    # The access log line of a later request: every line logged before it has been read.
    assert server.get("/v1/models/m/versions/1").status_code == 200
    server.wait_for_log("GET /v1/models/m/versions/1 200", start=start)
    output = "\n".join(server.lines[start:])
    assert "Traceback" not in output and " E " not in output, output


# --------------------------------------------------------------------------- gRPC

NOT_A_MESSAGE = b"\xff\xff\xff"  # field 31 with wire type 7: no message parses from it


@pytest.mark.parametrize("path, request_type", [
    ("/tensorflow.serving.PredictionService/Predict", "tensorflow.serving.PredictRequest"),
    ("/tensorflow.serving.PredictionService/Classify", "tensorflow.serving.ClassificationRequest"),
    ("/tensorflow.serving.PredictionService/Regress", "tensorflow.serving.RegressionRequest"),
    ("/tensorflow.serving.PredictionService/MultiInference", "tensorflow.serving.MultiInferenceRequest"),
    ("/tensorflow.serving.PredictionService/GetModelMetadata", "tensorflow.serving.GetModelMetadataRequest"),
    ("/tensorflow.serving.ModelService/GetModelStatus", "tensorflow.serving.GetModelStatusRequest"),
    ("/tensorflow.serving.ModelService/HandleReloadConfigRequest", "tensorflow.serving.ReloadConfigRequest"),
    ("/grpc.health.v1.Health/Check", "grpc.health.v1.HealthCheckRequest"),
])
def test_grpc_request_that_does_not_parse_answers_invalid_argument(server, path, request_type):
    start = len(server.lines)
    with grpc.insecure_channel(server.grpc_target) as channel:
        with pytest.raises(grpc.RpcError) as caught:
            channel.unary_unary(path)(NOT_A_MESSAGE, timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    assert caught.value.details().startswith(f"Failed to parse the request as {request_type}: "), \
        caught.value.details()
    assert "Traceback" not in "\n".join(server.lines[start:])


def test_grpc_streaming_request_that_does_not_parse_answers_invalid_argument(server):
    with grpc.insecure_channel(server.grpc_target) as channel:
        with pytest.raises(grpc.RpcError) as caught:
            list(channel.unary_stream("/grpc.health.v1.Health/Watch")(NOT_A_MESSAGE, timeout=30))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()


def test_grpc_requests_that_parse_are_served_as_before(server):
    with grpc.insecure_channel(server.grpc_target) as channel:
        status = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(
            get_model_status_pb2.GetModelStatusRequest(model_spec={"name": "m"}), timeout=30)
        assert [v.version for v in status.model_version_status] == [1]
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=30)
        assert health.status == health_pb2.HealthCheckResponse.SERVING


# --------------------------------------------------------------------------- profiler


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append(n & 0x7F | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def _field(number: int, value: int | str | bytes) -> bytes:
    if isinstance(value, int):
        return _varint(number << 3) + _varint(value)
    data = value.encode() if isinstance(value, str) else value
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def profile_request(session_id: str, host_name: str, repository_root: str, duration_ms: int = 100) -> bytes:
    """A `tensorflow.ProfileRequest` as TF's client sends it (written by hand: no pip package
    ships the message)."""
    options = _field(9, duration_ms)  # ProfileOptions.duration_ms
    return (_field(1, duration_ms) + _field(4, options) + _field(5, repository_root)
            + _field(6, session_id) + _field(7, host_name))


def profile(server: ServerProcess, request: bytes) -> grpc.RpcError | None:
    with grpc.insecure_channel(server.grpc_target) as channel:
        try:
            channel.unary_unary("/tensorflow.ProfilerService/Profile")(request, timeout=60)
        except grpc.RpcError as err:
            return err
    return None


LOOPBACK = {"0100007F", "00000000000000000000000001000000"}  # /proc/net/tcp{,6} spelling


def listening_sockets(pid: int) -> set[tuple[str, int]]:
    """(address as /proc/net spells it, port) of every TCP socket `pid` listens on."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[len("socket:["):-1])
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and fields[9] in inodes:  # TCP_LISTEN
                    address, port = fields[1].split(":")
                    found.add((address, int(port, 16)))
    return found


@pytest.mark.parametrize("session_id, host_name", [
    ("../escape", "h"), ("..", "h"), ("a/b", "h"), ("a\\b", "h"), ("/tmp/abs", "h"), ("a\0b", "h"),
    ("ok", "../escape"), ("ok", "a/b"), ("ok", "x" * 300),
])
def test_profiler_refuses_names_that_would_leave_its_directory(server, root, session_id, host_name):
    err = profile(server, profile_request(session_id, host_name, str(root / "elsewhere" / "plugins")))
    assert err is not None and err.code() == grpc.StatusCode.INVALID_ARGUMENT, err
    assert "must be a plain name" in err.details()
    written = [p for p in root.rglob("*") if p.parts[len(root.parts)] not in ("models", "profiles")]
    assert written == [] and not list((root / "profiles").rglob("*.xplane.pb"))


def test_profiler_writes_only_under_its_directory_and_opens_no_port(server, root):
    listening = listening_sockets(server.proc.pid)
    assert profile(server, profile_request("run1", "worker:1", str(root / "elsewhere" / "plugins"))) is None
    trace = root / "profiles" / "run1" / "worker_1.xplane.pb"
    assert trace.is_file(), list(root.rglob("*"))
    assert stat.S_IMODE(trace.stat().st_mode) == 0o600
    assert stat.S_IMODE(trace.parent.stat().st_mode) == 0o700
    assert not (root / "elsewhere").exists()
    assert sorted(p.relative_to(root / "profiles") for p in (root / "profiles").rglob("*")) == \
        [Path("run1"), Path("run1/worker_1.xplane.pb")]  # no staging left behind
    new = {(address, port) for address, port in listening_sockets(server.proc.pid) - listening
           if address not in LOOPBACK}
    assert not new, f"the profiler opened {new}"


def test_profiler_refuses_a_duration_beyond_its_limit(server, root):
    err = profile(server, profile_request("long", "h", "", duration_ms=10**9))
    assert err is not None and err.code() == grpc.StatusCode.INVALID_ARGUMENT, err
    assert "--profiler_max_duration_seconds" in err.details()
    assert not (root / "profiles" / "long").exists()
