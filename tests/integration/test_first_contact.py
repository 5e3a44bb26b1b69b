"""What someone new meets first: a mistyped flag stops the server with one clear line and
status 2, a start-up failure exits 255, the start-up log says what is served where and
carries none of TensorFlow's CUDA noise on a CPU machine, and the access log closes every
request it opens."""

from __future__ import annotations

import subprocess
import sys

import pytest
import requests

import modelgen
from pyserving.platforms.tensorflow.runtime import START_UP_NOISE
from support import REPO, ServerProcess


def _run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pyserving", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=str(REPO), stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("args, message", [
    (["--rest_port=8501", "--model_name=m", "--model_base_path=/models/m"],
     "unknown flag --rest_port (did you mean --rest_api_port?)"),
    (["--modelname=m"], "unknown flag --modelname (did you mean --model_name?)"),
    (["--port=8500", "serve"], "unknown argument 'serve': flags are written --name=value"),
    (["--port=eighty"], "Illegal value 'eighty' specified for flag 'port'"),
])
def test_a_command_line_mistake_exits_2_with_one_line(args, message):
    result = _run(*args, timeout=60)
    assert result.returncode == 2, result.stderr
    first, *rest = result.stderr.splitlines()
    assert first.startswith(message)
    assert rest == ["Run with --help for the list of flags."]
    assert result.stdout == ""


def test_a_start_up_failure_exits_255(tmp_path):
    config = tmp_path / "models.config"
    config.write_text("model_config_list { config { name: 'm' base_path: ")  # cut short
    result = _run(f"--model_config_file={config}", "--port=0", "--rest_api_port=0", "--grpc_socket_path=")
    assert result.returncode == 255, result.stderr[-2000:]


@pytest.fixture(scope="module")
def plain_server(tmp_path_factory):
    """Started as a user would: the default log level, no TF_CPP_MIN_LOG_LEVEL of ours."""
    root = tmp_path_factory.mktemp("first-contact")
    modelgen.make_half_plus_two(root / "m", 1)
    server = ServerProcess("--model_name=m", f"--model_base_path={root / 'm'}", "--access_log")
    server.env.pop("TF_CPP_MIN_LOG_LEVEL")
    with server.start():
        yield server


def test_start_up_log_has_no_tensorflow_noise(plain_server):
    head = plain_server.output
    noise = [line for line in head.splitlines() if START_UP_NOISE.search(line)]
    assert noise == []
    assert "E0000" not in head and "cuInit" not in head


def test_start_up_log_says_what_is_served_where(plain_server):
    lines = [line for line in plain_server.output.splitlines() if "] Serving " in line]
    assert len(lines) == 1
    assert lines[0].endswith(
        f"Serving gRPC on 0.0.0.0:{plain_server.grpc_port}, REST on 0.0.0.0:{plain_server.rest_port}; "
        "off: Prometheus metrics (see --monitoring_config_file)")


@pytest.mark.parametrize("method, path, status", [
    ("GET", "/healthz", 200),
    ("GET", "/readyz", 200),
    ("GET", "/nowhere", 404),
    ("OPTIONS", "/v1/models/m:predict", 400),  # no Origin header
    ("POST", "/v1/models/m:predict", 200),
])
def test_access_log_closes_every_request(plain_server, method, path, status):
    mark = len(plain_server.lines)
    body = b'{"instances": [1.0]}' if method == "POST" else None
    r = requests.request(method, plain_server.url + path, data=body, timeout=30)
    assert r.status_code == status
    plain_server.wait_for_log(f"{method} {path} started", start=mark)
    plain_server.wait_for_log(f"{method} {path} {status}", start=mark)
