"""`--workers=N`: worker processes on the same ports under a supervisor that owns the lifecycle.

One pool of two workers serves most tests in file order (they build on each other: a swap,
a reload, a killed worker, the drain at the end). Requests go out on new connections, so
the kernel spreads them over the workers; the access log's `[worker N]` says who answered.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import threading
import time
from collections import Counter
from pathlib import Path

import grpc
import pytest
import requests
import tensorflow as tf
from prometheus_client.parser import text_string_to_metric_families
from tensorflow_serving.apis import model_service_pb2_grpc, predict_pb2, prediction_service_pb2_grpc
from tensorflow_serving.config import model_server_config_pb2

import modelgen
from integration.test_warmup_tflite import predict_record, write_warmup
from support import ServerProcess, child_pids

METRICS = "/monitoring/prometheus/metrics"
WORKER = re.compile(r"\[worker (\d)\] POST /v1/models/(\w+):predict 200")


def _install(src: Path, dst: Path) -> None:
    tmp = dst.parent / f".tmp-{dst.name}"
    shutil.copytree(src, tmp)
    os.rename(tmp, dst)


def _config(entries: dict[str, Path]) -> str:
    return "model_config_list {\n" + "".join(
        f'  config {{ name: "{name}" base_path: "{path}" model_platform: "tensorflow" }}\n'
        for name, path in entries.items()) + "}\n"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Versions kept aside to copy in: 1 (y = x/2 + 2), 2 (+3), 3 (+2, slow to load: its
    warmup record is replayed many times)."""
    root = tmp_path_factory.mktemp("store")
    modelgen.make_half_plus_two(root / "a", 1, intercept=2.0)
    modelgen.make_half_plus_two(root / "b", 2, intercept=3.0)
    modelgen.make_half_plus_two(root / "c", 3, intercept=2.0)
    write_warmup(root / "c" / "3", [predict_record(x=[[1.0]])])
    return {1: root / "a" / "1", 2: root / "b" / "2", 3: root / "c" / "3"}


@pytest.fixture(scope="module")
def pool(store, tmp_path_factory):
    d = tmp_path_factory.mktemp("pool")
    (d / "m").mkdir()
    (d / "n").mkdir()
    _install(store[1], d / "m" / "1")
    _install(store[1], d / "n" / "1")
    (d / "models.config").write_text(_config({"m": d / "m"}))
    (d / "monitoring.config").write_text('prometheus_config { enable: true path: "%s" }' % METRICS)
    server = ServerProcess(
        "--workers=2", f"--model_config_file={d / 'models.config'}", f"--monitoring_config_file={d / 'monitoring.config'}",
        "--file_system_poll_wait_seconds=1", "--access_log", f"--grpc_socket_path={d / 'grpc.sock'}",
        "--num_request_iterations_for_warmup=20000", "--model_config_file_poll_wait_seconds=1")
    server.dir = d
    with server:
        yield server


def predict(server: ServerProcess, model: str = "m", x: float = 2.0) -> requests.Response:
    """On a new connection each time, so that any worker may answer."""
    return requests.post(f"{server.url}/v1/models/{model}:predict", json={"instances": [[x]]}, timeout=60,
                         headers={"Connection": "close"})


def workers_that_answered(server: ServerProcess, start: int, model: str = "m") -> Counter:
    return Counter(m[1] for _, line in server.lines_with_times(start) if (m := WORKER.search(line)) and m[2] == model)


def metrics(server: ServerProcess) -> dict[tuple[str, tuple], float]:
    text = requests.get(server.url + METRICS, timeout=30, headers={"Connection": "close"}).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def worker_pid(server: ServerProcess, index: int, start: int = 0) -> int:
    lines = [line for _, line in server.lines_with_times(start) if f"Started worker {index} (pid " in line]
    return int(lines[-1].split("(pid ")[1].split(")")[0])


class Load:
    """Client threads predicting on new connections until stopped; failures recorded."""

    def __init__(self, server: ServerProcess, threads: int = 2) -> None:
        self.server, self.failures, self.answers, self.ok = server, [], Counter(), 0
        self.failed_at: list[float] = []  # when each broken connection was seen
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run) for _ in range(threads)]

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                r = predict(self.server)
            except requests.RequestException as exc:
                self.failures.append(repr(exc))
                self.failed_at.append(time.monotonic())
                continue
            if r.status_code != 200:
                self.failures.append((r.status_code, r.text))
            else:
                self.ok += 1
                self.answers[r.json()["predictions"][0][0]] += 1

    def __enter__(self) -> "Load":
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()


def test_requests_spread_over_the_workers_and_every_worker_answers_the_same(pool):
    assert len(child_pids(pool.proc.pid)) == 2
    mark = len(pool.lines)
    for _ in range(40):
        assert predict(pool).json() == {"predictions": [[3.0]]}
    assert set(workers_that_answered(pool, mark)) == {"0", "1"}
    statuses = {requests.get(pool.url + "/v1/models/m", timeout=10, headers={"Connection": "close"}).text
                for _ in range(20)}
    assert len(statuses) == 1
    assert '"state": "AVAILABLE"' in statuses.pop()
    assert {requests.get(pool.url + "/readyz", timeout=10, headers={"Connection": "close"}).status_code
            for _ in range(10)} == {200}
    assert "Server ready" in pool.output and "2 worker processes" in pool.output


def test_metrics_are_summed_over_the_workers(pool):
    key = (":tensorflow:serving:request_count_total", (("model_name", "m"), ("status", "OK")))
    before = metrics(pool)
    mark = len(pool.lines)
    for _ in range(30):
        assert predict(pool).status_code == 200
    assert set(workers_that_answered(pool, mark)) == {"0", "1"}
    pages = [metrics(pool) for _ in range(6)]
    assert {page[key] for page in pages} == {before[key] + 30}
    page = pages[0]
    assert page[("pyserving_model_version_state", (("model", "m"), ("version", "1")))] == 30
    for worker in ("0", "1"):
        assert page[("pyserving_in_flight_requests", (("model", "m"), ("worker", worker)))] == 0
        assert page[("pyserving_worker_resident_memory_bytes", (("worker", worker),))] > 50e6
    assert page[("pyserving_workers", (("state", "serving"),))] == 2


def test_hot_swap_and_rollback_under_load_fail_no_request(pool, store):
    base = pool.dir / "m"
    with Load(pool) as load:
        mark = len(pool.lines)
        _install(store[2], base / "2")
        mark = pool.wait_for_log("{name: m version: 1} is END (every worker)", start=mark)
        status = requests.get(pool.url + "/v1/models/m", timeout=10).json()["model_version_status"]
        assert [(v["version"], v["state"]) for v in status] == [("2", "AVAILABLE"), ("1", "END")]
        assert predict(pool).json() == {"predictions": [[4.0]]}
        shutil.rmtree(base / "2")  # roll back
        pool.wait_for_log("{name: m version: 2} is END (every worker)", start=mark)
        assert predict(pool).json() == {"predictions": [[3.0]]}
    assert load.failures == []
    assert set(load.answers) == {3.0, 4.0}


def test_grpc_reload_reaches_every_worker(pool):
    request = model_server_config_pb2.ModelServerConfig()
    for name in ("m", "n"):
        config = request.model_config_list.config.add()
        config.name, config.base_path, config.model_platform = name, str(pool.dir / name), "tensorflow"
    from tensorflow_serving.apis import model_management_pb2

    with grpc.insecure_channel(pool.grpc_target) as channel:
        response = model_service_pb2_grpc.ModelServiceStub(channel).HandleReloadConfigRequest(
            model_management_pb2.ReloadConfigRequest(config=request), timeout=60)
    assert response.status.error_code == 0, response
    mark = len(pool.lines)
    for _ in range(30):
        assert predict(pool, "n").json() == {"predictions": [[3.0]]}
    assert set(workers_that_answered(pool, mark, "n")) == {"0", "1"}
    status = requests.get(pool.url + "/v1/models/n", timeout=10).json()["model_version_status"]
    assert [(v["version"], v["state"]) for v in status] == [("1", "AVAILABLE")]


def test_an_edited_config_file_reaches_every_worker(pool):
    mark = len(pool.lines)
    (pool.dir / "models.config").write_text(_config({"m": pool.dir / "m", "n": pool.dir / "n", "o": pool.dir / "n"}))
    pool.wait_for_log("{name: o version: 1} is AVAILABLE (every worker)", start=mark)
    mark = len(pool.lines)
    for _ in range(30):
        assert predict(pool, "o").json() == {"predictions": [[3.0]]}
    assert set(workers_that_answered(pool, mark, "o")) == {"0", "1"}


def test_unix_socket_is_served_by_worker_zero_and_the_profiler_by_any(pool):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "m"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto([[2.0]]))
    with grpc.insecure_channel(f"unix:{pool.dir / 'grpc.sock'}") as channel:
        response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=30)
    assert list(response.outputs["y"].float_val) == [3.0]
    assert "[worker 0] Running gRPC ModelServer at UNIX socket" in pool.output
    assert "[worker 1] Running gRPC ModelServer at UNIX socket" not in pool.output
    from pyserving.protos.profiler_protos import ProfileRequest

    profile = ProfileRequest(session_id="w", host_name="h", duration_ms=10)
    with grpc.insecure_channel(pool.grpc_target) as channel:
        channel.unary_unary("/tensorflow.ProfilerService/Profile")(profile.SerializeToString(), timeout=60)
    assert re.search(r"\[worker \d\] .*Profiles are written to ", pool.output)


def test_a_worker_killed_while_loading_comes_back_and_the_others_keep_serving(pool, store):
    mark = len(pool.lines)
    killed = worker_pid(pool, 1)
    ready_codes: list[int] = []
    with Load(pool) as load:
        _install(store[3], pool.dir / "m" / "3")  # its warmup makes the load take seconds
        pool.wait_for_log("[worker 1] Servable {name: m version: 3} is LOADING", start=mark)
        os.kill(killed, signal.SIGKILL)
        killed_at, ok_at_kill = time.monotonic(), load.ok
        back = pool.wait_for_log("Worker 1 (pid", start=pool.wait_for_log("Started worker 1 (pid", start=mark))
        while "is serving" not in pool.lines[back]:
            back = pool.wait_for_log("Worker 1 (pid", start=back + 1)
            ready_codes.append(requests.get(pool.url + "/readyz", timeout=10).status_code)
        pool.wait_for_log("{name: m version: 3} is AVAILABLE (every worker)", start=mark)
        served_meanwhile = load.ok - ok_at_kill
    assert worker_pid(pool, 1, mark) != killed
    assert served_meanwhile >= 5
    assert set(ready_codes) <= {200}
    # Only the connections the killed worker held fail (those it had accepted, and those
    # waiting in its listener's queue, which goes with it), as broken connections, at once:
    # new ones go to the other worker.
    assert all("Connection" in str(f) for f in load.failures), load.failures
    assert all(t - killed_at < 1.0 for t in load.failed_at), (load.failed_at, killed_at)
    assert "Worker 1 (pid %d) exited with signal SIGKILL" % killed in pool.output
    page = metrics(pool)
    assert page[("pyserving_worker_restarts_total", (("reason", "exit"),))] == 1
    status = requests.get(pool.url + "/v1/models/m", timeout=10).json()["model_version_status"]
    assert status[0]["version"] == "3" and status[0]["state"] == "AVAILABLE"
    mark = len(pool.lines)
    for _ in range(30):
        assert predict(pool).status_code == 200
    assert set(workers_that_answered(pool, mark)) == {"0", "1"}


class BigRequests:
    """`count` predicts of 200,000 rows (each runs for a while), returned once the server
    has accepted every one of them; `statuses()` waits for their HTTP statuses."""

    def __init__(self, server: ServerProcess, count: int) -> None:
        self._url = f"{server.url}/v1/models/m:predict"
        self._body = {"instances": [[float(x)] for x in range(200_000)]}
        self._statuses: list[int | None] = [None] * count
        self._threads = [threading.Thread(target=self._call, args=(i,)) for i in range(count)]
        mark = len(server.lines)
        for t in self._threads:
            t.start()
        for _ in range(count):
            mark = server.wait_for_log("POST /v1/models/m:predict started", start=mark) + 1

    def _call(self, i: int) -> None:
        self._statuses[i] = requests.post(self._url, json=self._body, timeout=120,
                                          headers={"Connection": "close"}).status_code

    def statuses(self) -> list[int | None]:
        for t in self._threads:
            t.join()
        return self._statuses


def test_sigterm_drains_every_worker_and_exits_zero(pool):
    slow = BigRequests(pool, 4)
    assert pool.stop(signal.SIGTERM, timeout=120) == 0
    assert slow.statuses() == [200] * 4
    out = pool.output
    assert "[worker 0] Server stopped" in out and "[worker 1] Server stopped" in out
    assert out.rstrip().endswith("Server stopped")


def test_sigterm_to_every_process_at_once_still_drains(store, tmp_path):
    """As systemd stops a service (SIGTERM to every process of its group): each worker gets
    SIGTERM twice, from the signal and from its supervisor, and drains once."""
    base = tmp_path / "m"
    base.mkdir()
    _install(store[1], base / "1")
    with ServerProcess("--workers=2", "--model_name=m", f"--model_base_path={base}", "--access_log",
                       grpc=False) as server:
        slow = BigRequests(server, 2)
        assert server.proc is not None
        for pid in [server.proc.pid, *child_pids(server.proc.pid)]:
            os.kill(pid, signal.SIGTERM)
        assert server.wait_exit(120) == 0
        assert slow.statuses() == [200, 200]
        assert server.output.count("Server stopped") == 3  # both workers and the supervisor


def test_a_port_in_use_is_a_startup_error_before_any_worker_starts(tmp_path):
    holder = socket.socket()
    holder.bind(("0.0.0.0", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        server = ServerProcess("--workers=2", f"--rest_api_port={port}", "--model_base_path=/nonexistent").launch()
        assert server.wait_exit(60) == 255
        assert f"cannot listen on port {port}" in server.output
        assert "Started worker" not in server.output
    finally:
        holder.close()


def test_a_model_that_cannot_load_stops_the_start_with_every_worker(tmp_path):
    server = ServerProcess("--workers=2", "--model_name=m", f"--model_base_path={tmp_path / 'none'}").launch()
    assert server.wait_exit(120) == 255
    assert "Failed to start server" in server.output
    assert "Started worker 0" in server.output and "Started worker 1" in server.output
    assert server.proc is not None and not child_pids(server.proc.pid)


def test_workers_are_recycled_after_an_unload_without_failing_a_request(store, tmp_path):
    base = tmp_path / "m"
    base.mkdir()
    _install(store[1], base / "1")
    with ServerProcess("--workers=2", "--model_name=m", f"--model_base_path={base}", "--recycle_workers_on_unload",
                       "--file_system_poll_wait_seconds=1", grpc=False) as server:
        first = {worker_pid(server, 0), worker_pid(server, 1)}
        with Load(server) as load:
            mark = len(server.lines)
            _install(store[2], base / "2")
            for _ in range(2):  # one at a time: the replacement serves, then the old one leaves
                mark = server.wait_for_log("Replacing worker", start=mark)
                mark = server.wait_for_log("is serving", start=mark)
                mark = server.wait_for_log("Server stopped", start=mark) + 1
        assert load.failures == []
        assert load.answers[4.0] > 0
        now = {worker_pid(server, 0), worker_pid(server, 1)}
        assert not (now & first)
        assert predict(server).json() == {"predictions": [[4.0]]}


def test_a_worker_over_its_memory_bound_is_replaced_without_failing_a_request(store, tmp_path):
    base = tmp_path / "m"
    base.mkdir()
    _install(store[1], base / "1")
    (tmp_path / "monitoring.config").write_text('prometheus_config { enable: true path: "%s" }' % METRICS)
    # 1 MiB: every worker is over it, so they are replaced one after the other
    with ServerProcess("--workers=2", "--model_name=m", f"--model_base_path={base}", "--worker_max_rss_mb=1",
                       f"--monitoring_config_file={tmp_path / 'monitoring.config'}", grpc=False) as server:
        with Load(server) as load:
            mark = server.wait_for_log("Replacing worker")
            assert "resident memory" in server.lines[mark]
            mark = server.wait_for_log("is serving", start=mark)
            server.wait_for_log("Server stopped", start=mark)
        assert load.failures == [] and load.ok > 0
        assert metrics(server)[("pyserving_worker_restarts_total", (("reason", "memory"),))] >= 1
