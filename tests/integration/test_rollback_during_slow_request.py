"""Rolling back a new version while a slow request still holds the version it replaced.

The sequence: `m` serves version 1; a slow predict takes a handle on version 1; version 2
is copied in, becomes AVAILABLE, and version 1 goes UNLOADING, waiting for that request;
version 2 is removed before the request ends, so version 1 is wanted again while it is
still unloading. The server once froze for good there: its event loop spun (100 % CPU),
answering nothing. Now the slow request must get its answer from version 1, version 1
must come back and version 2 end, and the server must keep answering and go idle.

The slow request is a REST predict of 10 M floats (seconds of JSON work), or a gRPC Regress
of 4 M tf.Examples: a gRPC Predict is decoded and run at C speed and holds its version for
~0.4 s at 30 M floats, ~2 s at the 60 M floats a request may carry, too short for a version
to be copied in, load and be removed meanwhile. Each runs with and without a CPU burner.
"""

from __future__ import annotations

import http.client
import threading
import time
from pathlib import Path
from typing import Any, Callable

import grpc
import pytest
import requests
from tensorflow_serving.apis import prediction_service_pb2_grpc

import lifecycle_fuzz as fuzz
import modelgen
from support import ServerProcess

REST_FLOATS = 10_000_000
GRPC_EXAMPLES = 4_000_000
# Far above the request's work even on a machine busy with other processes: the test is
# about which version answers and that the server never freezes, not about speed.
DEADLINE_SECONDS = 300.0


@pytest.fixture(scope="module")
def versions(tmp_path_factory) -> Path:
    store = tmp_path_factory.mktemp("versions")
    for v in (1, 2):
        modelgen.make_half_plus_two(store, v, intercept=fuzz.intercept(v))
    return store


@pytest.fixture(params=[False, True], ids=["no-burner", "cpu-burner"])
def slow(request) -> Any:
    """How much slower everything runs: 1, or 2 with a busy process on every core."""
    if not request.param:
        yield 1.0
        return
    burner = fuzz.BurnerGroup(seconds=600)
    try:
        yield 2.0
    finally:
        burner.stop()


@pytest.fixture
def served(tmp_path, versions, slow) -> Any:
    base = tmp_path / "m"
    base.mkdir()
    fuzz.install_atomic(versions / "1", base / "1")
    monitoring = tmp_path / "monitoring.config"
    monitoring.write_text(f'prometheus_config {{ enable: true path: "{fuzz.METRICS_PATH}" }}\n')
    server = ServerProcess(
        "--model_name=m", f"--model_base_path={base}", "--file_system_poll_wait_seconds=1",
        "--max_num_load_retries=0", f"--rest_api_timeout_in_ms={int(DEADLINE_SECONDS * 1000)}",
        f"--monitoring_config_file={monitoring}", env=fuzz.server_env(),
    )
    try:
        server.start(timeout=180)
        yield server, base
    finally:
        fuzz.stop_server(server)


def _metric_sum(server: ServerProcess, name: str, **labels: str) -> float | None:
    # A generous timeout: while it decodes the big request the server may answer late (its
    # decoding holds the GIL for seconds); `_watch` is what tells a late answer from a freeze.
    values = [v for ls, v in fuzz.metric_values(server.url, name, timeout=60)
              if all(ls.get(k) == want for k, want in labels.items())]
    return sum(values) if values else None


def _poll(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    """A bounded poll for a state the server has no log line for. A look that times out (the
    server busy with the big request) is a "not yet"; `_watch` is what catches a freeze."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = condition()
        except requests.RequestException:
            result = None
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.05)


def _wait_holding(server: ServerProcess, sent: Callable[[], bool], floats: int, slow: float) -> None:
    """Until the slow request holds version 1."""
    if _metric_sum(server, "pyserving_servable_handles_in_use") is not None:
        _poll(lambda: (_metric_sum(server, "pyserving_servable_handles_in_use", version="1") or 0) >= 1,
              60 * slow, "the slow request holding version 1")
        return
    # A server without that metric: the request is in flight (its body parsed after that).
    _poll(lambda: sent() and (_metric_sum(server, "pyserving_in_flight_requests") or 0) >= 1, 60 * slow,
          "the slow request in flight")
    time.sleep(fuzz.parse_allowance(floats, slow))


def _watch(server: ServerProcess, done: Callable[[], bool], freeze_seconds: float, timeout: float) -> float:
    """Until `done()`, the server must answer its status: a stall of a few seconds while it
    works on a big request is tolerated, `freeze_seconds` without any answer is not.
    Returns the longest stall."""
    assert server.proc is not None
    end = time.monotonic() + timeout
    stalled_since: float | None = None
    longest = 0.0
    while not done():
        start = time.monotonic()
        try:
            requests.get(server.url + "/v1/models/m", timeout=1)
            if stalled_since is not None:
                longest = max(longest, time.monotonic() - stalled_since)
            stalled_since = None
        except requests.RequestException:
            stalled_since = stalled_since or start
            if time.monotonic() - stalled_since > freeze_seconds:
                notes = "\n".join(fuzz.diagnose(server.proc))
                pytest.fail(f"the server answered nothing for {time.monotonic() - stalled_since:.0f} s "
                            f"while the slow request ran:\n{notes}\n{server.output_unlocked()[-4000:]}")
        if time.monotonic() > end:
            pytest.fail(f"the slow request got no answer within {timeout:.0f} s")
        time.sleep(0.2)  # the next look at the server
    return longest


def _states(server: ServerProcess) -> dict[int, str]:
    r = requests.get(server.url + "/v1/models/m", timeout=10)
    assert r.status_code == 200, r.text
    return {int(s["version"]): s["state"] for s in r.json()["model_version_status"]}


def _start_rest(server: ServerProcess) -> tuple[dict[str, Any], Callable[[], bool]]:
    body = fuzz.rest_body(REST_FLOATS)
    out: dict[str, Any] = {}

    def run() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=DEADLINE_SECONDS + 3)
        try:
            conn.request("POST", "/v1/models/m:predict", body=body, headers={"Content-Type": "application/json"})
            out["sent"] = time.monotonic()
            response = conn.getresponse()
            out["status"], out["body"] = response.status, response.read()
        except Exception as exc:  # noqa: BLE001 - asserted on below
            out["error"] = exc
        finally:
            out["end"] = time.monotonic()
            conn.close()

    threading.Thread(target=run, daemon=True).start()
    return out, lambda: "sent" in out


def _rest_result(out: dict[str, Any]) -> tuple[int, float]:
    assert "error" not in out, f"the slow REST predict failed: {out['error']!r}"
    assert out["status"] == 200, out["body"][:300]
    m = fuzz.FIRST_PREDICTION.search(out["body"][:200])
    assert m, out["body"][:200]
    return fuzz.version_of(float(m.group(1))), out["end"] - out["sent"]


@pytest.mark.parametrize("api", ["rest", "grpc"])
def test_rollback_while_a_slow_request_holds_the_old_version(api, served, versions, slow):
    server, base = served
    channel = grpc.insecure_channel(server.grpc_target, options=[
        ("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)])
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    try:
        if api == "rest":
            out, sent = _start_rest(server)
            done: Callable[[], bool] = lambda: "end" in out  # noqa: E731
            floats = REST_FLOATS
        else:
            future = stub.Regress.future(fuzz.grpc_regress_request(GRPC_EXAMPLES), timeout=DEADLINE_SECONDS)
            started = time.monotonic()
            done, sent, floats = future.done, lambda: True, 0
        _wait_holding(server, sent, floats, slow)

        mark = len(server.lines)
        fuzz.install_atomic(versions / "2", base / "2")
        server.wait_for_log("{name: m version: 2} is AVAILABLE", 30 * slow, start=mark)
        server.wait_for_log("{name: m version: 1} is UNLOADING", 30 * slow, start=mark)
        if done():
            pytest.fail("precondition: the slow request ended before version 2 was removed; "
                        "it must hold version 1 longer (a bigger request)")
        fuzz.remove_version(base / "2")  # the rollback, while version 1 is still unloading

        stall = _watch(server, done, freeze_seconds=30 * slow, timeout=DEADLINE_SECONDS + 3)
        if api == "rest":
            version, elapsed = _rest_result(out)
        else:
            response = future.result(timeout=0)
            elapsed = time.monotonic() - started
            version = response.model_spec.version.value
            assert len(response.result.regressions) == GRPC_EXAMPLES
            assert fuzz.version_of(response.result.regressions[0].value) == version
        assert version == 1, "the slow request pinned version 1 before version 2 existed"
        assert elapsed <= DEADLINE_SECONDS + 1

        # Version 1 back, version 2 gone, nothing in transit.
        _poll(lambda: _states(server) == {1: "AVAILABLE", 2: "END"}, 15 * slow,
              f"version 1 AVAILABLE and version 2 END (now {_states(server)})")
        r = requests.post(server.url + "/v1/models/m:predict", data=fuzz.SMALL_BODY, timeout=60)
        assert r.json() == {"predictions": [10.5, 11.0]}, r.text
        small = stub.Predict(fuzz.grpc_predict_request(2), timeout=60)
        assert small.model_spec.version.value == 1 and list(small.outputs["y"].float_val) == [10.5, 11.0]

        # Idle: no handle left, and the process does (almost) nothing.
        if _metric_sum(server, "pyserving_servable_handles_in_use") is not None:
            _poll(lambda: _metric_sum(server, "pyserving_servable_handles_in_use") == 0, 10 * slow,
                  "no handle in use once idle")
        assert server.proc is not None
        before, start = fuzz.cpu_seconds(server.proc.pid), time.monotonic()
        time.sleep(2.0)  # the measurement window
        used = (fuzz.cpu_seconds(server.proc.pid) - before) / (time.monotonic() - start)
        assert used < 0.10, f"idle, the server used {used:.0%} of a core"
        assert _states(server)[1] == "AVAILABLE"
        print(f"{api}: slow request {elapsed:.1f} s, longest status stall {stall:.1f} s")
    finally:
        channel.close()
