"""Versions coming and going, config reloads, startup failures and shutdown: each test
runs its own server process, since each changes what the server sees."""

from __future__ import annotations

import os
import re
import shutil
import signal
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

import modelgen
from support import READY, ServerProcess, run_to_exit

FAST_RETRIES = ("--max_num_load_retries=1", "--load_retry_interval_micros=10000")


def _install(src: Path, dst: Path) -> None:
    """Copy a version folder in atomically, as the reference advises (temp name + rename)."""
    tmp = dst.parent / f".tmp-{dst.name}"
    shutil.copytree(src, tmp)
    os.rename(tmp, dst)


@pytest.fixture(scope="module")
def versions(tmp_path_factory):
    """half_plus_two versions 1, 2 (intercept 3) and a broken 3, kept aside to copy in."""
    store = tmp_path_factory.mktemp("versions")
    modelgen.make_half_plus_two(store / "a", 1, intercept=2.0)
    modelgen.make_half_plus_two(store / "b", 2, intercept=3.0)
    modelgen.make_broken_version(store / "c", 3)
    return {1: store / "a" / "1", 2: store / "b" / "2", 3: store / "c" / "3"}


def test_hot_swap_rollback_and_broken_version_never_fail_a_request(tmp_path, versions):
    base = tmp_path / "m"
    base.mkdir()
    _install(versions[1], base / "1")
    with ServerProcess("--model_name=m", f"--model_base_path={base}", *FAST_RETRIES, grpc=False) as server:
        failures, answers, stop = [], set(), threading.Event()

        def client():
            session = requests.Session()
            while not stop.is_set():
                r = session.post(server.url + "/v1/models/m:predict", json={"instances": [[2.0]]}, timeout=30)
                if r.status_code != 200:
                    failures.append((r.status_code, r.text))
                else:
                    answers.add(r.json()["predictions"][0][0])

        threads = [threading.Thread(target=client) for _ in range(2)]
        for t in threads:
            t.start()
        try:
            mark = len(server.lines)
            _install(versions[2], base / "2")
            mark = server.wait_for_log("{name: m version: 1} is END", start=mark)
            status = server.get("/v1/models/m").json()["model_version_status"]
            assert [(v["version"], v["state"]) for v in status] == [("2", "AVAILABLE"), ("1", "END")]
            assert server.post("/v1/models/m:predict", json={"instances": [[2.0]]}).json() == {"predictions": [[4.0]]}

            shutil.rmtree(base / "2")  # roll back
            mark = server.wait_for_log("{name: m version: 2} is END", start=mark)
            assert server.post("/v1/models/m:predict", json={"instances": [[2.0]]}).json() == {"predictions": [[3.0]]}

            _install(versions[3], base / "3")  # broken: must not displace version 1
            mark = server.wait_for_log("{name: m version: 3} is END with error", start=mark)
            status = {v["version"]: v for v in server.get("/v1/models/m").json()["model_version_status"]}
            assert status["3"]["state"] == "END" and status["3"]["status"]["error_code"] != "OK"
            assert status["3"]["status"]["error_message"]
            assert status["1"]["state"] == "AVAILABLE"
        finally:
            stop.set()
            for t in threads:
                t.join()
        assert failures == []
        assert answers == {3.0, 4.0}


def test_emptying_the_folder_unloads(tmp_path, versions):
    base = tmp_path / "m"
    base.mkdir()
    _install(versions[1], base / "1")
    with ServerProcess("--model_name=m", f"--model_base_path={base}", grpc=False) as server:
        mark = len(server.lines)
        shutil.rmtree(base / "1")
        server.wait_for_log("{name: m version: 1} is END", start=mark)
        r = server.post("/v1/models/m:predict", json={"instances": [1.0]})
        assert (r.status_code, r.json()) == (404, {"error": "Servable not found for request: Latest(m)"})


def test_version_policy_all_and_specific(tmp_path, versions):
    base = tmp_path / "m"
    base.mkdir()
    _install(versions[1], base / "1")
    _install(versions[2], base / "2")
    config = tmp_path / "models.config"
    config.write_text(f"""model_config_list {{
      config {{ name: "all" base_path: "{base}" model_platform: "tensorflow" model_version_policy {{ all {{}} }} }}
      config {{ name: "one" base_path: "{base}" model_platform: "tensorflow"
                model_version_policy {{ specific {{ versions: 1 }} }} }}
    }}""")
    with ServerProcess(f"--model_config_file={config}", grpc=False) as server:
        assert [v["version"] for v in server.get("/v1/models/all").json()["model_version_status"]] == ["2", "1"]
        assert [v["version"] for v in server.get("/v1/models/one").json()["model_version_status"]] == ["1"]
        assert server.post("/v1/models/one:predict", json={"instances": [2.0]}).json() == {"predictions": [3.0]}


def test_config_file_reload_adds_removes_and_relabels(tmp_path, versions, testdata):
    base = tmp_path / "m"
    base.mkdir()
    _install(versions[1], base / "1")
    _install(versions[2], base / "2")
    config = tmp_path / "models.config"

    def write(models: str) -> None:
        tmp = tmp_path / "tmp.config"
        tmp.write_text(f"model_config_list {{ {models} }}")
        os.replace(tmp, config)

    a = f'config {{ name: "a" base_path: "{base}" model_platform: "tensorflow" model_version_policy {{ all {{}} }} version_labels {{ key: "stable" value: 1 }} }}'
    a2 = a.replace('value: 1', 'value: 2')
    b = f'config {{ name: "b" base_path: "{testdata}/saved_model_half_plus_three" model_platform: "tensorflow" }}'
    write(a)
    with ServerProcess(f"--model_config_file={config}", "--model_config_file_poll_wait_seconds=1", grpc=False) as server:
        assert server.post("/v1/models/a/labels/stable:predict", json={"instances": [2.0]}).json() == {"predictions": [3.0]}
        mark = len(server.lines)
        write(a2 + b)
        mark = server.wait_for_log("Model config reloaded", start=mark)
        server.wait_for_log("version: 123} is AVAILABLE", start=mark)
        assert server.post("/v1/models/b:predict", json={"inputs": [1.0]}).json() == {"outputs": [3.5]}
        assert server.post("/v1/models/a/labels/stable:predict", json={"instances": [2.0]}).json() == {"predictions": [4.0]}

        write("config { this is not valid")  # malformed: keep serving the old config
        mark = server.wait_for_log("not applied", start=mark)
        assert server.post("/v1/models/b:predict", json={"inputs": [1.0]}).status_code == 200

        config.write_text("")  # emptied (a truncating editor): keep serving, as TF Serving does
        mark = server.wait_for_log("only legal to transition from one ModelConfigList to another", start=mark)
        assert server.post("/v1/models/b:predict", json={"inputs": [1.0]}).status_code == 200
        assert server.post("/v1/models/a/labels/stable:predict", json={"instances": [2.0]}).status_code == 200

        write(b)  # a removed
        mark = server.wait_for_log("Model config reloaded", start=mark)
        server.wait_for_log("{name: a version: 2} is END", start=mark)
        r = server.post("/v1/models/a:predict", json={"instances": [2.0]})
        assert r.status_code == 404
        assert server.post("/v1/models/b:predict", json={"inputs": [1.0]}).status_code == 200


def test_missing_base_path_while_serving_is_reported_and_isolated(tmp_path, versions, testdata):
    base = tmp_path / "m"
    base.mkdir()
    _install(versions[1], base / "1")
    config = tmp_path / "models.config"
    config.write_text(f"""model_config_list {{
      config {{ name: "moving" base_path: "{base}" model_platform: "tensorflow" }}
      config {{ name: "steady" base_path: "{testdata}/saved_model_half_plus_three" model_platform: "tensorflow" }}
    }}""")
    with ServerProcess(f"--model_config_file={config}", grpc=False) as server:
        mark = len(server.lines)
        os.rename(base, tmp_path / "elsewhere")
        server.wait_for_log("Could not find base path", start=mark)
        (status,) = server.get("/v1/models/moving").json()["model_version_status"]
        assert status["state"] == "AVAILABLE"  # still serving what it had
        assert status["status"]["error_code"] == "NOT_FOUND"
        assert "Could not find base path" in status["status"]["error_message"]
        assert server.post("/v1/models/moving:predict", json={"instances": [2.0]}).status_code == 200
        assert server.post("/v1/models/steady:predict", json={"inputs": [1.0]}).json() == {"outputs": [3.5]}


# -- startup ---------------------------------------------------------------------------------

def test_malformed_config_file_exits_at_once(testdata):
    code, out = run_to_exit(f"--model_config_file={testdata / 'bad_model_config.txt'}")
    assert code != 0
    assert "Error parsing text-format tensorflow.serving.ModelServerConfig" in out


@pytest.mark.parametrize("case", ["missing", "empty", "broken"])
def test_initial_model_that_cannot_load_fails_startup(tmp_path, case):
    base = tmp_path / "m"
    if case == "empty":
        base.mkdir()
    elif case == "broken":
        modelgen.make_broken_version(base, 1)
    code, out = run_to_exit("--model_name=m", f"--model_base_path={base}", *FAST_RETRIES)
    assert code != 0
    assert "Failed to start server" in out
    if case == "missing":
        assert "Could not find base path" in out
    if case == "empty":
        assert "No versions of servable m found under base path" in out


def test_tf_servings_bad_export_fails_startup(each_testdata):
    code, out = run_to_exit("--model_name=bad", f"--model_base_path={each_testdata / 'bad_half_plus_two'}",
                             *FAST_RETRIES)
    assert code != 0 and "Failed to start server" in out
    assert "Could not find SavedModel .pb or .pbtxt" in out


def test_port_opens_before_load_and_requests_wait(model_zoo):
    server = ServerProcess("--model_name=mnist", f"--model_base_path={model_zoo / 'mnist_cnn'}", grpc=False).launch()
    try:
        server.wait_for_log("Exporting HTTP/REST API at:localhost")
        with ThreadPoolExecutor(2) as pool:
            early = pool.submit(requests.post, server.url + "/v1/models/mnist:predict",
                                json={"instances": [[[[0.0]] * 28] * 28]}, timeout=60)
            unknown = pool.submit(requests.post, server.url + "/v1/models/other:predict",
                                  json={"instances": [1.0]}, timeout=60)
            assert unknown.result().status_code == 404
            r = early.result()
            assert r.status_code == 200, r.text
            assert len(r.json()["predictions"][0]) == 10
        server.wait_for_log(READY)
    finally:
        assert server.stop() == 0


def test_rest_timeout_answers_504(tmp_path):
    modelgen.make_slow_model(tmp_path / "slow", 1)
    with ServerProcess("--model_name=slow", f"--model_base_path={tmp_path / 'slow'}",
                       "--rest_api_timeout_in_ms=300", grpc=False) as server:
        r = server.post("/v1/models/slow:predict", json={"inputs": {"n": 10**10}})
        assert r.status_code == 504, r.text
        assert "error" in r.json()
        r = server.post("/v1/models/slow:predict", json={"inputs": {"n": 10}})
        assert r.json() == {"outputs": 10.0}


def test_sigterm_finishes_requests_in_flight_and_exits_0(tmp_path):
    modelgen.make_slow_model(tmp_path / "slow", 1)
    # Timeouts far above the work: on a busy machine four of these run for tens of seconds,
    # and the test is about finishing them, not about their speed.
    server = ServerProcess("--model_name=slow", f"--model_base_path={tmp_path / 'slow'}", "--access_log",
                           "--rest_api_timeout_in_ms=600000", "--shutdown_grace_seconds=600",
                           grpc=False).start()
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(requests.post, server.url + "/v1/models/slow:predict",
                               json={"inputs": {"n": 1_000_000}}, timeout=600) for _ in range(4)]
        mark = 0
        for _ in futures:  # every request has reached the server
            mark = server.wait_for_log("POST /v1/models/slow:predict started", start=mark) + 1
        server.proc.send_signal(signal.SIGTERM)
        results = [f.result() for f in futures]
    assert [r.status_code for r in results] == [200] * 4
    assert server.wait_exit(60) == 0
    assert "Received SIGTERM" in server.output
    assert re.search(r"waiting for [1-4] request\(s\) in flight", server.output)


def test_sigterm_during_a_load_stuck_on_io_exits_within_the_grace(tmp_path):
    """A variables file that is a FIFO: TensorFlow's read of it never returns. Shutdown
    must not wait for that load (nor the interpreter for its thread)."""
    modelgen.make_half_plus_two(tmp_path / "m", 1)
    variables = tmp_path / "m" / "1" / "variables"
    for data in variables.glob("variables.data-*"):
        data.unlink()
        os.mkfifo(data)
    server = ServerProcess("--model_name=m", f"--model_base_path={tmp_path / 'm'}",
                           "--shutdown_grace_seconds=2", grpc=False).launch()
    try:
        server.wait_for_log("{name: m version: 1} is LOADING")
        server.wait_for_log("Restoring parameters")  # inside TensorFlow's read of the FIFO
        server.proc.send_signal(signal.SIGTERM)
        assert server.wait_exit(20) == 0
        assert "still loading or unloading" in server.output
    finally:
        if server.proc.poll() is None:
            server.proc.kill()


def test_a_load_stuck_on_io_fails_after_the_load_timeout(tmp_path):
    modelgen.make_half_plus_two(tmp_path / "m", 1)
    for data in (tmp_path / "m" / "1" / "variables").glob("variables.data-*"):
        data.unlink()
        os.mkfifo(data)
    code, out = run_to_exit("--model_name=m", f"--model_base_path={tmp_path / 'm'}", "--load_timeout_seconds=1",
                             timeout=30)
    assert code != 0
    assert "Failed to start server" in out and "Loading did not finish within 1 s" in out


def test_sigterm_in_the_middle_of_a_swap_finishes_the_request_and_exits_0(tmp_path):
    """Version 2 arrives while a slow request holds version 1, which starts draining; then
    SIGTERM: the request still gets its answer, both versions unload, exit 0."""
    store = tmp_path / "store"
    modelgen.make_slow_model(store, 1)
    modelgen.make_slow_model(store, 2)
    base = tmp_path / "slow"
    base.mkdir()
    _install(store / "1", base / "1")
    server = ServerProcess("--model_name=slow", f"--model_base_path={base}", "--access_log",
                           grpc=False).start()
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(requests.post, server.url + "/v1/models/slow:predict",
                           json={"inputs": {"n": 1_500_000}}, timeout=120)
        mark = server.wait_for_log("POST /v1/models/slow:predict started")
        _install(store / "2", base / "2")
        server.wait_for_log("{name: slow version: 1} is UNLOADING", start=mark)
        server.proc.send_signal(signal.SIGTERM)
        r = slow.result()
    assert r.status_code == 200 and r.json() == {"outputs": 1_500_000.0}, r.text
    assert server.wait_exit(60) == 0
    out = server.output
    assert "{name: slow version: 1} is END" in out and "{name: slow version: 2} is END" in out


def test_tensorflow_model_server_alias(tmp_path, testdata):
    alias = Path(sys.executable).parent / "tensorflow_model_server"
    if not alias.exists():
        pytest.fail(f"console script {alias} not installed (pip install -e .)")
    base = testdata / "saved_model_half_plus_two_cpu"
    with ServerProcess("--model_name=half_plus_two", f"--model_base_path={base}", grpc=False,
                       command=[str(alias)]) as server:
        r = server.post("/v1/models/half_plus_two:predict", json={"instances": [1.0, 2.0, 5.0]})
        assert r.json() == {"predictions": [2.5, 3.0, 4.5]}


@pytest.mark.parametrize("allow", [False, True])
def test_labels_to_unavailable_versions_need_the_flag(tmp_path, testdata, allow):
    config = tmp_path / "models.config"
    config.write_text(f"""model_config_list {{
      config {{ name: "m" base_path: "{testdata}/saved_model_half_plus_two_2_versions" model_platform: "tensorflow"
               version_labels {{ key: "stable" value: 123 }} version_labels {{ key: "canary" value: 124 }} }}
    }}""")
    args = [f"--model_config_file={config}"] + (["--allow_version_labels_for_unavailable_models"] if allow else [])
    if not allow:
        code, out = run_to_exit(*args)
        assert code != 0
        assert "Request to assign label to version 123 of model m, which is not currently available" in out
        return
    with ServerProcess(*args, grpc=False) as server:
        assert server.post("/v1/models/m/labels/canary:predict", json={"instances": [1.0]}).status_code == 200
        r = server.post("/v1/models/m/labels/stable:predict", json={"instances": [1.0]})
        assert (r.status_code, r.json()) == (404, {"error": "Servable not found for request: Specific(m, 123)"})
