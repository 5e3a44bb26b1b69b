"""Test support: run the real server as a subprocess on free loopback ports.

Readiness is a signal, not a sleep: `ServerProcess.start()` returns once the server has
logged its ready line (every initial model AVAILABLE), and `wait_for_log` blocks on a
condition fed by the thread reading the server's stderr.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import requests

REPO = Path(__file__).resolve().parents[1]
# Optional material next to the repository (or where PYSERVING_SHARED_DIR points): TF Serving's
# own test exports and the seed documents. Tests that need it skip without it; the suite's
# models come from tests/modelgen.py and tests/tfserving_testdata.py (the `testdata` fixture).
SHARED = Path(os.environ.get("PYSERVING_SHARED_DIR", REPO.parent / "shared")).resolve()
TFSERVING_TESTDATA = SHARED / "testdata" / "tfserving"
READY = "Server ready"


def shared_skip_reason(what: str, path: Path) -> str:
    """One line saying what is missing and how to provide it."""
    relative = path.relative_to(SHARED)
    return (f"{what} not found at {path} (optional; PYSERVING_SHARED_DIR names the folder "
            f"holding {relative}, default {REPO.parent / 'shared'})")


def child_pids(pid: int) -> list[int]:
    """Processes whose parent is `pid` (read from /proc/*/stat; not every kernel has
    /proc/<pid>/task/<tid>/children)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # exited meanwhile
            continue
        fields = text[text.rindex(")") + 2:].split()
        if int(fields[1]) == pid:
            children.append(int(stat.parent.name))
    return children


# The servable models of TF Serving's test data tree, as ModelServerConfig entries (a
# str.format template: `{td}` is the tree, braces doubled).
TESTDATA_MODELS = """\
  config {{ name: "default" base_path: "{td}/saved_model_half_plus_two_cpu" model_platform: "tensorflow" }}
  config {{ name: "tf2_cpu" base_path: "{td}/saved_model_half_plus_two_tf2_cpu" model_platform: "tensorflow" }}
  config {{ name: "half_plus_three" base_path: "{td}/saved_model_half_plus_three" model_platform: "tensorflow" }}
  config {{ name: "two_versions" base_path: "{td}/saved_model_half_plus_two_2_versions"
           model_platform: "tensorflow" model_version_policy {{ all {{}} }}
           version_labels {{ key: "stable" value: 123 }} version_labels {{ key: "canary" value: 124 }} }}
  config {{ name: "counter" base_path: "{td}/saved_model_counter" model_platform: "tensorflow" }}
"""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """`python -m pyserving <args>`; REST (and gRPC) on free ports unless given."""

    def __init__(self, *args: str, rest: bool = True, grpc: bool = True, env: dict | None = None,
                 command: list[str] | None = None) -> None:
        self.rest_port = free_port() if rest else 0
        self.grpc_port = free_port() if grpc else 0
        ports = []
        if not any(a.startswith("--rest_api_port") for a in args):
            ports.append(f"--rest_api_port={self.rest_port}")
        if not any(a.startswith("--port=") for a in args):
            ports.append(f"--port={self.grpc_port}")
        self.args = [*ports, *args]
        self.command = command or [sys.executable, "-m", "pyserving"]
        self.env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
        self.proc: subprocess.Popen | None = None
        self.lines: list[str] = []
        self.line_times: list[float] = []  # time.monotonic() each line of `lines` was read
        self._cond = threading.Condition()
        self._closed = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def launch(self) -> "ServerProcess":
        self.proc = subprocess.Popen(
            [*self.command, *self.args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, env=self.env, text=True, cwd=str(REPO),
        )
        threading.Thread(target=self._read, daemon=True).start()
        return self

    def start(self, timeout: float = 120) -> "ServerProcess":
        self.launch()
        self.wait_for_log(READY, timeout)
        return self

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self.line_times.append(time.monotonic())
                self._cond.notify_all()
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def output(self) -> str:
        with self._cond:
            return "\n".join(self.lines)

    def wait_for_log(self, text: str, timeout: float = 60, start: int = 0) -> int:
        """Index of the first line from `start` containing `text`; fails if the process ends."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for i in range(start, len(self.lines)):
                    if text in self.lines[i]:
                        return i
                if self._closed:
                    raise AssertionError(f"server exited before logging {text!r}:\n{self.output_unlocked()}")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"no {text!r} within {timeout}s:\n{self.output_unlocked()}")
                self._cond.wait(remaining)

    def lines_with_times(self, start: int = 0) -> list[tuple[float, str]]:
        """(time read, line) for every line from index `start`, a consistent snapshot."""
        with self._cond:
            return list(zip(self.line_times[start:], self.lines[start:]))

    def output_unlocked(self) -> str:
        return "\n".join(self.lines[-200:])

    def wait_exit(self, timeout: float = 60) -> int:
        assert self.proc is not None
        code = self.proc.wait(timeout)
        with self._cond:
            while not self._closed:
                self._cond.wait(5)
        return code

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.wait_exit(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def peak_rss(self) -> int:
        """The process's peak resident memory so far, in bytes (VmHWM)."""
        assert self.proc is not None
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        raise AssertionError("no VmHWM in /proc/<pid>/status")

    # requests is imported on use: the client's test suite runs this module in a virtual
    # environment that has only the client.
    def get(self, path: str, **kw) -> "requests.Response":
        import requests

        return requests.get(self.url + path, timeout=kw.pop("timeout", 30), **kw)

    def post(self, path: str, **kw) -> "requests.Response":
        import requests

        return requests.post(self.url + path, timeout=kw.pop("timeout", 60), **kw)

    def __enter__(self) -> "ServerProcess":
        return self.start() if self.proc is None else self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.stop()


def run_to_exit(*args: str, env: dict | None = None, timeout: float = 120) -> tuple[int, str]:
    """Start a server expected to end by itself (a failed start): (exit status, output)."""
    server = ServerProcess(*args, grpc=False, env=env).launch()
    try:
        code = server.wait_exit(timeout)
    finally:
        if server.proc.poll() is None:  # a hung server must not outlive its test
            server.proc.kill()
            server.proc.wait()
    return code, server.output


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_certificates(d: Path) -> dict[str, bytes]:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=pyserving-test-ca",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    for who, usage in (("server", "serverAuth"), ("client", "clientAuth")):
        openssl("req", *ec, "-keyout", f"{who}.key", "-out", f"{who}.csr", "-subj", f"/CN={who}", cwd=d)
        (d / f"{who}.ext").write_text(
            f"subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage={usage}\nbasicConstraints=CA:FALSE\n"
        )
        openssl("x509", "-req", "-in", f"{who}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                "-out", f"{who}.pem", "-days", "2", "-extfile", f"{who}.ext", cwd=d)
    return {name: (d / name).read_bytes() for name in
            ("ca.pem", "server.key", "server.pem", "client.key", "client.pem")}


def ssl_config(certs: dict[str, bytes], client_verify: bool) -> str:
    def q(b: bytes) -> str:
        return b.decode().replace("\n", "\\n")

    text = f'server_key: "{q(certs["server.key"])}"\nserver_cert: "{q(certs["server.pem"])}"\n'
    if client_verify:
        text += f'custom_ca: "{q(certs["ca.pem"])}"\nclient_verify: true\n'
    return text


# A metric name in a PromQL expression (dashboards and alert rules).
METRIC = re.compile(r"(:tensorflow:[a-z_:]+|pyserving_[a-z_]+)")


def exported_series() -> set[str]:
    """Every series name the server can export (families, samples, histogram parts)."""
    from prometheus_client.parser import text_string_to_metric_families

    from pyserving.monitoring.exporter import render
    from pyserving.monitoring.metrics import ServingMetrics

    metrics = ServingMetrics()
    metrics.bind_in_flight(lambda: {"m": 0})
    names = set()
    for family in text_string_to_metric_families(render(metrics.registry, metrics.exposition_names).decode()):
        names.add(family.name)
        names.update(s.name for s in family.samples)
        if family.type == "histogram":
            names.update(family.name + suffix for suffix in ("_bucket", "_sum", "_count"))
        if family.type == "counter":
            names.add(family.name + "_total")
    return names
