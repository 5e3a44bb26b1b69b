"""The benchmark, in one command: pyserving against the in-process limit and a
naive Flask server, for seed 004's 156k-parameter MNIST CNN and for half_plus_two.

    python bench/run.py                 # ~16 minutes; writes bench/RESULTS.md
    python bench/run.py --reps 1 --duration 2 --out /tmp/RESULTS.md   # a quick look

What it does, in one run so that every number is a ratio measured side by side:

1. Generates the models with `tests/modelgen.py` (random weights; the work per image is
   what matters) and the request payloads: one MNIST-like image (28x28x1 float32, about a
   fifth of the pixels lit, values k/255) as TF Serving row JSON written the way the seeds
   write it (``json.dumps({"instances": img.tolist()})``) and as a gRPC `PredictRequest`
   (``tensor_content``, what ``tf.make_tensor_proto`` sends); the same for 10,000 images
   (seed 004's experiment); ``[[1.0]]`` for half_plus_two.
2. In-process limit (`bench/inprocess.py`): the same signature called directly, pinned to
   the server's core: 1 image, batches of 32, 64 and 10,000, before the servers start, and
   again (all but 10,000) in every repetition among the load runs; ratios use the medians.
3. Starts three servers at once, each pinned to CPU 0 (clients run on CPU 1): pyserving
   with batching off, pyserving with batching on twice (`BATCHING_SERVERS`: max_batch_size
   64, one batch thread, batch_timeout_micros 2000 and 10000), and `bench/flask_server.py`. Records the
   time from launch to AVAILABLE and the resident memory (idle, and peak at the end).
4. Runs every scenario ``--reps`` times, interleaved (rep 1 of everything, then rep 2...),
   and reports medians: sequential single-image latency (wrk with 1 connection for REST,
   one synchronous gRPC client), closed-loop throughput and p50/p99 at 16 and 64 clients
   (wrk for REST, `bench/loadgen.py` processes for gRPC), one 10,000-image request over
   REST and gRPC; the Open Inference Protocol (V2) the same way for MNIST (REST JSON, REST
   with binary tensor data, gRPC raw contents; sequential and 64 clients, batching off and
   2 ms) and its 10,000-image request with binary data. For concurrency runs it also reads the server's per-thread CPU time from
   /proc, i.e. CPU microseconds per request on the event-loop thread versus the TensorFlow
   threads.
   The floor under the latency and throughput targets: `bench/floor_server.py` (the same
   HTTP and gRPC stacks answering at once, with no request path behind them) measured like
   the servers, TensorFlow's own run inside the server during the sequential runs (the
   server's `runtime_latency`, from its Prometheus endpoint), and the in-process 1-image
   call after an idle gap; the report says what each target leaves for pyserving's code.
5. With py-spy installed (``pip install py-spy``), samples the 10 ms batching server under 64
   REST and 64 gRPC clients (``--gil``: only the thread holding the GIL) and lists the top
   functions.
6. Writes the results with date, machine and commit. A hand-written ``## Analysis``
   section already in the output file is kept.

Needs: Linux, ``taskset`` (util-linux), ``wrk`` (``apt-get install wrk``; without it REST
load comes from `bench/loadgen.py`'s Python HTTP client, which is slower and noted in the
output), the dev extras (Flask). Everything listens on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import math
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
PY = sys.executable
SERVER_CPU = "0"
CLIENT_CPU = "1"
MNIST_INPUT = "input_image"

# The batching servers: one core for the server, so one batch thread. Two timeouts, both
# within TF Serving's CPU advice (0-10 ms): with 0 the batch thread takes each request as it
# arrives (batches of 1-2 here, because the event loop, not the model, is the bottleneck) and
# throughput is about half; 10 ms (seed 000's TF_BATCH_TIMEOUT_MICROS=10000) gives the most
# throughput at 64 clients, but a batch that cannot fill (16 clients, sequential) waits the
# whole timeout; 2 ms is the compromise.
BATCHING_SERVERS = {"batching": 2000, "batching10": 10000}
# Calls per round of a 10,000-image scenario: the first after other load, then back to back.
BIG_CALLS = 3
SHOWN = {"pyserving": "pyserving", "batching": "pyserving+batching 2 ms",
         "batching10": "pyserving+batching 10 ms", "flask": "Flask"}


# The Open Inference Protocol's (V2) routes for the MNIST model
V2_PATH = "/v2/models/mnist/infer"
V2_METHOD = "/inference.GRPCInferenceService/ModelInfer"
V2_ROUTES = {"v2json": "V2 REST JSON", "v2bin": "V2 REST binary", "v2grpc": "V2 gRPC"}


def batching_parameters(timeout_micros: int) -> str:
    return (f"max_batch_size {{ value: 64 }}\nbatch_timeout_micros {{ value: {timeout_micros} }}\n"
            "max_enqueued_batches { value: 1000 }\nnum_batch_threads { value: 1 }\n")

# ---------------------------------------------------------------------------- helpers


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pinned(cpu: str, cmd: list[str]) -> list[str]:
    return ["taskset", "-c", cpu, *cmd] if shutil.which("taskset") and os.cpu_count() and os.cpu_count() > 1 else cmd


def machine() -> dict[str, str]:
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kb = int(next(line for line in f if line.startswith("MemTotal")).split()[1])
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":(exclude)bench/RESULTS.md"], cwd=REPO,  # the file being rewritten
                               capture_output=True, text=True).stdout.strip()
        if dirty:
            commit += " + uncommitted changes"
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    def version(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "absent"
    return {
        "date": dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "ram": f"{mem_kb / 1024 / 1024:.1f} GiB",
        "commit": commit,
        "python": platform.python_version(),
        "tensorflow": version("tensorflow"),
        "grpcio": version("grpcio"),
        "uvicorn": version("uvicorn"),
        "flask": version("flask"),
        "kernel": platform.release(),
    }


def rss_mib(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) in MiB."""
    values = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS", "VmHWM")):
                values[line.split(":")[0]] = int(line.split()[1]) / 1024
    return values.get("VmRSS", 0.0), values.get("VmHWM", 0.0)


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds per thread group: 'loop' (the main thread) and 'other' (the rest of the
    process, counting threads that have exited since, like Flask's per-request threads)."""
    tick = os.sysconf("SC_CLK_TCK")

    def seconds(path: str) -> float:
        with open(path) as f:
            text = f.read()
        fields = text[text.rindex(")") + 2:].split()
        return (int(fields[11]) + int(fields[12])) / tick

    loop = seconds(f"/proc/{pid}/task/{pid}/stat")
    return {"loop": loop, "other": seconds(f"/proc/{pid}/stat") - loop}


# ---------------------------------------------------------------------------- servers


@dataclass
class Server:
    name: str
    cmd: list[str]
    models: list[str]
    rest_port: int
    grpc_port: int | None
    log_path: Path
    proc: subprocess.Popen | None = None
    start_seconds: float = float("nan")
    rss_idle: float = float("nan")

    def start(self, timeout: float = 180) -> None:
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
        env.pop("TF_ENABLE_BATCHING", None)
        self._log = open(self.log_path, "w")
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(pinned(SERVER_CPU, self.cmd), stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=env, cwd=REPO)
        deadline = time.monotonic() + timeout
        pending = list(self.models)
        while pending:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited; see {self.log_path}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} not AVAILABLE within {timeout}s; see {self.log_path}")
            if self.available(pending[0]):
                pending.pop(0)
                continue
            time.sleep(0.02)
        self.start_seconds = time.perf_counter() - t0
        time.sleep(1.0)  # let startup work (gc.freeze, first polls) finish before measuring memory
        self.rss_idle = rss_mib(self.proc.pid)[0]

    def available(self, model: str) -> bool:
        try:
            status, body = http_request("GET", self.rest_port, f"/v1/models/{model}", timeout=2)
        except OSError:
            return False
        return status == 200 and b'"AVAILABLE"' in body

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


class FloorServer(Server):
    """`bench/floor_server.py`: pyserving's HTTP and gRPC stacks with nothing behind them,
    answering with the real server's own answers to the MNIST requests."""

    def start(self) -> None:  # type: ignore[override]  # ready when it prints `ready`
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(pinned(SERVER_CPU, self.cmd), stdout=subprocess.PIPE, stderr=self._log,
                                     stdin=subprocess.DEVNULL, text=True, cwd=REPO,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError(f"{self.name} did not start; see {self.log_path}")


def start_floor(work: Path, server: Server, payload: dict[str, Path], name: str = "floor",
                extra: tuple[str, ...] = ()) -> FloorServer:
    status, answer = http_request("POST", server.rest_port, "/v1/models/mnist:predict",
                                  payload["mnist_json"].read_bytes())
    if status != 200:
        raise RuntimeError(f"the MNIST predict answered {status}: {answer[:200]!r}")
    (work / "floor_answer.json").write_bytes(answer)
    subprocess.run([PY, "-c", GRPC_ANSWER, str(server.grpc_port), str(payload["mnist_bin"]),
                    str(work / "floor_answer.pb")], check=True, capture_output=True)
    rest, grpc_port = free_port(), free_port()
    floor = FloorServer(name, [PY, str(BENCH / "floor_server.py"), f"--rest_api_port={rest}", f"--port={grpc_port}",
                               f"--answer={work / 'floor_answer.json'}", f"--grpc_answer={work / 'floor_answer.pb'}",
                               *extra],
                        [], rest, grpc_port, work / f"{name}.log")
    log("starting the floor server (the HTTP and gRPC stacks alone)")
    floor.start()
    return floor


GRPC_ANSWER = r"""
import sys, grpc
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
port, request, out = sys.argv[1:]
with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    answer = stub.Predict(predict_pb2.PredictRequest.FromString(open(request, "rb").read()), timeout=30)
open(out, "wb").write(answer.SerializeToString())
"""

METRICS_PATH = "/monitoring/prometheus/metrics"
_RUNTIME = re.compile(r"^:tensorflow:serving:runtime_latency_(sum|count)\{([^}]*)\} (\S+)$", re.M)


def runtime_totals(port: int, model: str) -> tuple[float, float]:
    """(sum µs, count) of the server's `runtime_latency` for `model`: TensorFlow's run alone."""
    _, text = http_request("GET", port, METRICS_PATH, timeout=30)
    totals = {"sum": 0.0, "count": 0.0}
    for kind, labels, value in _RUNTIME.findall(text.decode()):
        if f'model_name="{model}"' in labels:
            totals[kind] += float(value)
    return totals["sum"], totals["count"]


def with_runtime(run: Callable[[], dict[str, float]], port: int, model: str) -> Callable[[], dict[str, float]]:
    """`run`, plus `tf_run_ms`: the mean of TensorFlow's own runs inside the server meanwhile."""
    def measured() -> dict[str, float]:
        s0, n0 = runtime_totals(port, model)
        sample = run()
        s1, n1 = runtime_totals(port, model)
        if n1 > n0:
            sample["tf_run_ms"] = (s1 - s0) / (n1 - n0) / 1e3
        return sample
    return measured


def http_request(method: str, port: int, path: str, body: bytes | None = None,
                 timeout: float = 600, header_length: int | None = None) -> tuple[int, bytes]:
    """`header_length`: the body is a V2 request with binary data after that many bytes of JSON."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        if header_length is not None:
            headers = {"Content-Type": "application/octet-stream",
                       "Inference-Header-Content-Length": str(header_length)}
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


# ---------------------------------------------------------------------------- load


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _wrk_ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    return float(m.group(1)) * _UNITS[m.group(2)] if m else float("nan")


def header_length(body: Path) -> int | None:
    """The JSON length of a V2 binary-data body (beside it in `<body>.hlen`), else None."""
    hlen = body.with_name(body.name + ".hlen")
    return int(hlen.read_text()) if hlen.exists() else None


def run_wrk(port: int, path: str, body: Path, conns: int, duration: float, *, scheme: str = "http",
            headers: tuple[str, ...] = ()) -> dict[str, float]:
    seconds = max(1, round(duration))  # wrk takes whole seconds
    cmd = ["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--latency", "--timeout", "60s",
           *(arg for h in headers for arg in ("-H", h)),
           "-s", str(BENCH / "post.lua"), f"{scheme}://127.0.0.1:{port}{path}"]
    env = {**os.environ, "BODY_FILE": str(body)}
    hlen = header_length(body)
    if hlen is not None:
        env["INFERENCE_HEADER_LENGTH"] = str(hlen)
    done = subprocess.run(pinned(CLIENT_CPU, cmd), capture_output=True, text=True, env=env)
    out = done.stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if rps is None:
        raise RuntimeError(f"wrk failed: {out[-1000:]} {done.stderr[-1000:]}")
    result = {"rps": float(rps.group(1))}
    for q, key in (("50", "p50_ms"), ("99", "p99_ms")):
        m = re.search(rf"^\s+{q}%\s+(\S+)", out, re.M)
        result[key] = _wrk_ms(m.group(1)) if m else float("nan")
    errors = 0
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if m:
        errors += int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        errors += sum(int(g) for g in m.groups())
    result["errors"] = errors
    result["duration"] = seconds
    return result


def run_loadgen(protocol: str, port: int, body: Path, conns: int, duration: float, path: str = "/",
                method: str | None = None, extra: tuple[str, ...] = ()) -> dict[str, float]:
    procs = 1 if conns == 1 else 4
    cmd = [PY, str(BENCH / "loadgen.py"), protocol, "--target", f"127.0.0.1:{port}", "--path", path,
           "--body", str(body), "--concurrency", str(conns), "--procs", str(procs),
           "--duration", str(duration), "--warmup", "1"]
    if method is not None:
        cmd += ["--method", method]
    hlen = header_length(body)
    if hlen is not None:
        cmd += ["--header", "Content-Type: application/octet-stream", "--header",
                f"Inference-Header-Content-Length: {hlen}"]
    if conns == 1 and protocol == "grpc":
        cmd.append("--sequential")
    cmd += extra
    out = subprocess.run(pinned(CLIENT_CPU, cmd), capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"loadgen failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout)


def grpc_frame(body: Path) -> Path:
    """The serialized request as one gRPC message on the wire (uncompressed flag, length)."""
    data = body.read_bytes()
    framed = body.with_name(body.name + ".grpc")
    framed.write_bytes(b"\x00" + len(data).to_bytes(4, "big") + data)
    return framed


def run_h2load(port: int, body: Path, conns: int, duration: float) -> dict[str, float]:
    """gRPC Predict calls from h2load (nghttp2's C load generator) after a 1 s warm-up:
    the server's latency without a Python client's own ~0.35 ms per call (wrk's role for
    REST). h2load does not read gRPC trailers, so one call through grpcio checks first
    that this body gets a PredictResponse (the same bytes always get the same answer)."""
    import grpc  # noqa: PLC0415

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        reply = channel.unary_unary("/tensorflow.serving.PredictionService/Predict")(body.read_bytes(), timeout=60)
    seconds = max(1, round(duration))
    with tempfile.NamedTemporaryFile("r", suffix=".log") as log:
        cmd = ["h2load", "-D", str(seconds), "--warm-up-time=1", f"-c{conns}", "-m1", "-d", str(grpc_frame(body)),
               "-H", "content-type: application/grpc", "-H", "te: trailers", f"--log-file={log.name}",
               f"http://127.0.0.1:{port}/tensorflow.serving.PredictionService/Predict"]
        done = subprocess.run(pinned(CLIENT_CPU, cmd), capture_output=True, text=True)
        rows = [line.split("\t") for line in log.read().splitlines() if line.strip()]
    if done.returncode != 0 or not rows:
        raise RuntimeError(f"h2load failed: {done.stdout[-1000:]} {done.stderr[-1000:]}")
    latencies = sorted(int(r[2]) / 1e3 for r in rows)
    n = len(latencies)
    return {"rps": n / seconds, "p50_ms": latencies[n // 2], "p99_ms": latencies[min(n - 1, int(n * 0.99))],
            "errors": sum(r[1] != "200" for r in rows) + (not reply), "duration": seconds}


def big_rest(port: int, path: str, body: bytes, header_length: int | None = None) -> dict[str, float]:
    t0 = time.perf_counter()
    status, reply = http_request("POST", port, path, body, header_length=header_length)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "errors": 0 if status == 200 and len(reply) > 1000 else 1}


def big_grpc(port: int, body: bytes) -> dict[str, float]:
    import grpc  # noqa: PLC0415

    options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
    with grpc.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
        call = channel.unary_unary("/tensorflow.serving.PredictionService/Predict")
        grpc.channel_ready_future(channel).result(timeout=30)
        t0 = time.perf_counter()
        reply = call(body, timeout=600)
        seconds = time.perf_counter() - t0
    return {"seconds": seconds, "errors": 0 if len(reply) > 1000 else 1}


# ---------------------------------------------------------------------------- scenarios


@dataclass
class Scenario:
    key: str  # e.g. "mnist/pyserving/rest/64"
    run: Callable[[], dict[str, float]]
    server: Server | None = None
    warm: Callable[[], object] | None = None  # run before each measured run, not measured
    samples: list[dict[str, float]] = field(default_factory=list)

    def median(self, metric: str) -> float:
        values = [s[metric] for s in self.samples if metric in s and s[metric] == s[metric]]
        return statistics.median(values) if values else float("nan")


def build_scenarios(servers: dict[str, Server], payload: dict[str, Path], duration: float,
                    use_wrk: bool, use_h2load: bool, inproc_10k: Callable[[], dict[str, float]],
                    work: Path, floor: Server | None = None) -> list[Scenario]:
    scenarios: list[Scenario] = []

    def rest(server: Server, model: str, body: Path, conns: int) -> Callable[[], dict[str, float]]:
        path = f"/v1/models/{model}:predict"
        if use_wrk:
            return lambda: run_wrk(server.rest_port, path, body, conns, duration)
        return lambda: run_loadgen("http", server.rest_port, body, conns, duration, path)

    def rest_v2(server: Server, body: Path, conns: int) -> Callable[[], dict[str, float]]:
        if use_wrk:
            return lambda: run_wrk(server.rest_port, V2_PATH, body, conns, duration)
        return lambda: run_loadgen("http", server.rest_port, body, conns, duration, V2_PATH)

    def rest_warm(server: Server, model: str, body: Path, conns: int,
                  path: str | None = None) -> Callable[[], object] | None:
        """wrk for 1 s before a measured wrk run (loadgen.py warms each connection itself).
        wrk counts, for every response slower than the mean interval, the responses it would
        have sent meanwhile (coordinated-omission correction): unwarmed, a server's 57 ms
        first call made a 3 s sequential run's p99 ~25 ms."""
        path = path or f"/v1/models/{model}:predict"
        return (lambda: run_wrk(server.rest_port, path, body, conns, 1)) if use_wrk else None

    def grpc_(server: Server, body: Path, conns: int) -> Callable[[], dict[str, float]]:
        return lambda: run_loadgen("grpc", server.grpc_port, body, conns, duration)

    for model, levels in (("mnist", (1, 16, 64)), ("half_plus_two", (1, 64))):
        one_json, one_bin = payload[f"{model}_json"], payload[f"{model}_bin"]
        scenarios.append(Scenario(f"{model}/inprocess/limit", limit_scenario(work, model)))
        for name in ("pyserving", "batching", "batching10"):
            server = servers[name]
            for conns in levels:
                if name == "batching10" and (model != "mnist" or conns == 1):
                    continue  # the 10 ms server: MNIST under load only
                # sequential runs also read TensorFlow's own time inside the server (`tf_run_ms`)
                seq = (lambda r, s=server: with_runtime(r, s.rest_port, model)) if conns == 1 else (lambda r: r)
                scenarios.append(Scenario(f"{model}/{name}/rest/{conns}", seq(rest(server, model, one_json, conns)),
                                          server, rest_warm(server, model, one_json, conns)))
                scenarios.append(Scenario(f"{model}/{name}/grpc/{conns}", grpc_(server, one_bin, conns), server))
                if conns == 1 and use_h2load:
                    scenarios.append(Scenario(f"{model}/{name}/h2load/1", seq(lambda s=server, b=one_bin: run_h2load(
                        s.grpc_port, b, 1, duration)), server))
        if model == "mnist":
            # The floor: the same HTTP and gRPC stacks answering at once (`bench/floor_server.py`),
            # and the in-process call after an idle gap, as a sequential client's calls come.
            scenarios.append(Scenario("mnist/inprocess/gap", gap_limit_scenario(work)))
            if floor is not None:
                for conns in (1, 64):
                    scenarios.append(Scenario(f"mnist/floor/rest/{conns}", rest(floor, model, one_json, conns), floor,
                                              rest_warm(floor, model, one_json, conns)))
                scenarios.append(Scenario("mnist/floor/h2load/1" if use_h2load else "mnist/floor/grpc/1",
                                          (lambda: run_h2load(floor.grpc_port, one_bin, 1, duration)) if use_h2load
                                          else grpc_(floor, one_bin, 1), floor))
        if model == "mnist":
            # The Open Inference Protocol (V2): the same image as JSON, binary data and gRPC
            for name in ("pyserving", "batching"):
                server = servers[name]
                for conns in levels[::2]:
                    for proto, body in (("v2json", payload["mnist_v2_json"]), ("v2bin", payload["mnist_v2_bin"])):
                        scenarios.append(Scenario(f"mnist/{name}/{proto}/{conns}",
                                                  rest_v2(server, body, conns), server,
                                                  rest_warm(server, model, body, conns, V2_PATH)))
                    scenarios.append(Scenario(f"mnist/{name}/v2grpc/{conns}", lambda s=server, c=conns: run_loadgen(
                        "grpc", s.grpc_port, payload["mnist_v2_grpc"], c, duration, method=V2_METHOD), server))
        for conns in levels:
            scenarios.append(Scenario(f"{model}/flask/rest/{conns}", rest(servers["flask"], model, one_json, conns),
                                      servers["flask"], rest_warm(servers["flask"], model, one_json, conns)))
    big_json = payload["mnist_10k_json"].read_bytes()
    big_bin = payload["mnist_10k_bin"].read_bytes()

    def rounds(run: Callable[[], dict[str, float]], calls: int) -> Callable[[], dict[str, float]]:
        """A 10,000-image scenario's round: `calls` calls; `first_s` is the first (it comes
        after minutes of other load, and pays for memory the VM has to fault in again),
        `next_s` the median of the ones right after it (measured like the in-process limit,
        back to back). The very first call of a scenario is not measured (TF sizes its
        buffers)."""
        state = {"warm": False}

        def call() -> dict[str, float]:
            if not state["warm"]:
                run()
                state["warm"] = True
            samples = [run() for _ in range(calls)]
            out = {"first_s": samples[0]["seconds"], "errors": sum(x["errors"] for x in samples)}
            if calls > 1:
                out["next_s"] = statistics.median(x["seconds"] for x in samples[1:])
            return out
        return call

    # The same call in-process at the same moment of the run, so the ratios compare like
    # with like (`bench/inprocess.py --serve`).
    scenarios.append(Scenario("mnist/inprocess/10k", rounds(inproc_10k, BIG_CALLS)))
    scenarios.append(Scenario("mnist/pyserving/rest/10k", rounds(lambda: big_rest(
        servers["pyserving"].rest_port, "/v1/models/mnist:predict", big_json), BIG_CALLS)))
    scenarios.append(Scenario("mnist/pyserving/grpc/10k", rounds(
        lambda: big_grpc(servers["pyserving"].grpc_port, big_bin), BIG_CALLS)))
    big_v2 = payload["mnist_10k_v2_bin"].read_bytes()
    big_v2_hlen = header_length(payload["mnist_10k_v2_bin"])
    scenarios.append(Scenario("mnist/pyserving/v2bin/10k", rounds(lambda: big_rest(
        servers["pyserving"].rest_port, V2_PATH, big_v2, big_v2_hlen), BIG_CALLS)))
    scenarios.append(Scenario("mnist/flask/rest/10k", rounds(lambda: big_rest(
        servers["flask"].rest_port, "/v1/models/mnist:predict", big_json), 1)))  # (10-16 s each)
    return scenarios


def round_order(scenarios: list[Scenario], rep: int) -> list[Scenario]:
    """The scenarios of repetition `rep`: on odd ones, gRPC's 10,000-image calls come before
    REST's, so neither route's first call always meets a TensorFlow the other has just
    warmed (both still come right after the in-process calls)."""
    order = list(scenarios)
    keys = [s.key for s in order]
    if rep % 2 and "mnist/pyserving/rest/10k" in keys and "mnist/pyserving/grpc/10k" in keys:
        i, j = keys.index("mnist/pyserving/rest/10k"), keys.index("mnist/pyserving/grpc/10k")
        order[i], order[j] = order[j], order[i]
    return order


def run_scenario(scenario: Scenario) -> None:
    """Run once; for load runs also record the server's CPU seconds per request by thread
    group (the window is the load run: the server is idle before and after it)."""
    pid = scenario.server.proc.pid if scenario.server is not None and scenario.server.proc else None
    if scenario.warm is not None:
        scenario.warm()
    before = thread_cpu(pid) if pid else None
    sample = scenario.run()
    if pid and before is not None and sample.get("rps") and sample.get("duration"):
        after = thread_cpu(pid)
        requests = sample["rps"] * sample["duration"]
        for group in after:
            sample[f"cpu_us_{group}"] = (after[group] - before[group]) / requests * 1e6
    scenario.samples.append(sample)


# ---------------------------------------------------------------------------- preparation


PREPARE = r"""
import json, sys
from pathlib import Path
import numpy as np
sys.path.insert(0, str(Path(sys.argv[2]) / "tests"))
sys.path.insert(0, str(Path(sys.argv[2]) / "src"))
import modelgen
from pyserving.protos.inference_protos import ModelInferRequest
from tensorflow_serving.apis import predict_pb2
from tensorflow.core.framework import types_pb2

work = Path(sys.argv[1])
modelgen.make_mnist_cnn(work / "models" / "mnist", 1)
modelgen.make_half_plus_two(work / "models" / "half_plus_two", 1)
rng = np.random.default_rng(2024)

def images(n):
    lit = rng.random((n, 28, 28, 1)) < 0.2
    return (rng.integers(1, 256, (n, 28, 28, 1)) * lit / 255.0).astype(np.float32)

def grpc_request(model, alias, x):
    r = predict_pb2.PredictRequest()
    r.model_spec.name = model
    r.model_spec.signature_name = "serving_default"
    t = r.inputs[alias]
    t.dtype = types_pb2.DT_FLOAT
    for d in x.shape:
        t.tensor_shape.dim.add(size=d)
    t.tensor_content = np.ascontiguousarray(x, np.float32).tobytes()
    return r.SerializeToString()

one = images(1)
(work / "mnist_json").write_text(json.dumps({"instances": one.tolist()}))
(work / "mnist_bin").write_bytes(grpc_request("mnist", "input_image", one))
big = sys.argv[3] == "1"
if big:
    many = images(10000)
    (work / "mnist_10k_json").write_text(json.dumps({"instances": many.tolist()}))
    (work / "mnist_10k_bin").write_bytes(grpc_request("mnist", "input_image", many))

# The same images over the Open Inference Protocol (V2): JSON, binary data (every output
# binary too, as tritonclient asks by default), gRPC raw_input_contents.
def v2_binary(name, x):
    header = json.dumps({"parameters": {"binary_data_output": True}, "inputs": [
        {"name": "input_image", "shape": list(x.shape), "datatype": "FP32",
         "parameters": {"binary_data_size": x.nbytes}}]}).encode()
    (work / name).write_bytes(header + x.tobytes())
    (work / (name + ".hlen")).write_text(str(len(header)))

(work / "mnist_v2_json").write_text(json.dumps({"inputs": [
    {"name": "input_image", "shape": list(one.shape), "datatype": "FP32", "data": one.reshape(-1).tolist()}]}))
v2_binary("mnist_v2_bin", one)
if big:
    v2_binary("mnist_10k_v2_bin", many)
r = ModelInferRequest(model_name="mnist")
r.inputs.add(name="input_image", datatype="FP32", shape=one.shape)
r.raw_input_contents.append(one.tobytes())
(work / "mnist_v2_grpc").write_bytes(r.SerializeToString())
x = np.array([[1.0]], np.float32)
(work / "half_plus_two_json").write_text(json.dumps({"instances": x.tolist()}))
(work / "half_plus_two_bin").write_bytes(grpc_request("half_plus_two", "x", x))
"""


def prepare(work: Path, *, big: bool = True) -> dict[str, Path]:
    """The models and payloads; without `big`, no 10,000-image payloads."""
    log("generating models and payloads")
    subprocess.run([PY, "-c", PREPARE, str(work), str(REPO), "1" if big else "0"], check=True,
                   env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, capture_output=True)
    names = ("mnist_json", "mnist_bin", "half_plus_two_json", "half_plus_two_bin", "mnist_v2_json", "mnist_v2_bin",
             "mnist_v2_grpc", *(("mnist_10k_json", "mnist_10k_bin", "mnist_10k_v2_bin") if big else ()))
    return {n: work / n for n in names}


class InProcessCalls:
    """`bench/inprocess.py --serve`: the MNIST signature called in-process on 10,000 rows,
    one call per request, in a process pinned like the servers."""

    def __init__(self, work: Path, rows: int = 10000):
        cmd = pinned(SERVER_CPU, [PY, str(BENCH / "inprocess.py"), str(work / "models" / "mnist" / "1"),
                                  MNIST_INPUT, "28", "28", "1", "--serve", str(rows)])
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        assert self.proc.stdin is not None and self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError("bench/inprocess.py --serve did not start")

    def __call__(self) -> dict[str, float]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()
        return {"seconds": float(self.proc.stdout.readline()), "errors": 0}

    def stop(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=30)


LIMIT_BATCHES = {"mnist": (MNIST_INPUT, ["28", "28", "1"], "1,32,64"),
                 "half_plus_two": ("x", ["1"], "1,64")}


def measure_limit(work: Path, model: str, batches: str, seconds: float, gap_us: float = 0) -> dict[str, Any]:
    """`bench/inprocess.py` on one model, pinned to the server's core: {batch: figures}
    (`gap_us`: each call after that long an idle sleep)."""
    alias, shape, _ = LIMIT_BATCHES[model]
    cmd = pinned(SERVER_CPU, [PY, str(BENCH / "inprocess.py"), str(work / "models" / model / "1"), alias,
                              *shape, "--batches", batches, "--seconds", str(seconds), "--gap-us", str(gap_us)])
    out = subprocess.run(cmd, capture_output=True, text=True, check=True,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def in_process(work: Path) -> dict[str, Any]:
    """The limit measured once before the servers start (also batch 10,000 for MNIST)."""
    log("measuring the in-process limit")
    return {model: measure_limit(work, model, batches + (",10000" if model == "mnist" else ""), 3)
            for model, (_, _, batches) in LIMIT_BATCHES.items()}


def limit_scenario(work: Path, model: str) -> Callable[[], dict[str, float]]:
    """The limit again in every repetition, among the load runs: this VM drifts over a run
    (the 1-image call moved between 0.18 and 0.26 ms from one run to the next), so the
    ratios use the median of all measurements, taken in the same stretch as the servers'."""
    def run() -> dict[str, float]:
        figures = measure_limit(work, model, LIMIT_BATCHES[model][2], 1.5)
        return {f"{b}_{k}": v for b, f in figures.items() for k, v in f.items()}
    return run


GAP_US = 150  # about what a sequential client's answer and next request spend outside the server


def gap_limit_scenario(work: Path) -> Callable[[], dict[str, float]]:
    """The 1-image call, each after an idle sleep of GAP_US (the vCPU and TensorFlow's threads
    idle between a sequential client's requests; back to back they never do)."""
    def run() -> dict[str, float]:
        return {"median_ms": measure_limit(work, "mnist", "1", 1.5, GAP_US)["1"]["median_s"] * 1e3}
    return run


def combined_limit(before: dict[str, Any], scenarios: dict[str, "Scenario"]) -> dict[str, Any]:
    """{model: {batch: {median_s, rows_per_s, n, lo_s, hi_s}}}: per batch size, the median
    of the measurement before the run and those of every repetition."""
    out: dict[str, Any] = {}
    for model, first in before.items():
        samples = scenarios[f"{model}/inprocess/limit"].samples if f"{model}/inprocess/limit" in scenarios else []
        out[model] = {}
        for batch, figures in first.items():
            times = [figures["median_s"]] + [s[f"{batch}_median_s"] for s in samples if f"{batch}_median_s" in s]
            median = statistics.median(times)
            out[model][batch] = {"median_s": median, "rows_per_s": int(batch) / median, "n": len(times),
                                 "lo_s": min(times), "hi_s": max(times)}
    return out


def write_configs(work: Path) -> tuple[Path, Path]:
    """The model config (mnist, half_plus_two) and a monitoring config exporting Prometheus
    metrics (the runtime_latency of sequential runs is read from it)."""
    config = work / "models.config"
    config.write_text(
        "model_config_list {\n"
        f'  config {{ name: "mnist" base_path: "{work / "models" / "mnist"}" model_platform: "tensorflow" }}\n'
        f'  config {{ name: "half_plus_two" base_path: "{work / "models" / "half_plus_two"}" '
        'model_platform: "tensorflow" }\n}\n')
    monitoring = work / "monitoring.config"
    monitoring.write_text(f'prometheus_config {{ enable: true path: "{METRICS_PATH}" }}\n')
    return config, monitoring


def start_servers(work: Path) -> dict[str, Server]:
    config, monitoring = write_configs(work)
    servers: dict[str, Server] = {}
    variants: list[tuple[str, list[str]]] = [("pyserving", [])]
    for name, timeout in BATCHING_SERVERS.items():
        params = work / f"{name}.txt"
        params.write_text(batching_parameters(timeout))
        variants.append((name, ["--enable_batching", f"--batching_parameters_file={params}"]))
    for name, extra in variants:
        rest, grpc_port = free_port(), free_port()
        cmd = [PY, "-m", "pyserving", f"--port={grpc_port}", f"--rest_api_port={rest}",
               f"--model_config_file={config}", "--file_system_poll_wait_seconds=0",
               f"--monitoring_config_file={monitoring}", *extra]
        servers[name] = Server(name, cmd, ["mnist", "half_plus_two"], rest, grpc_port, work / f"{name}.log")
    rest = free_port()
    servers["flask"] = Server("flask", [PY, str(BENCH / "flask_server.py"), "--port", str(rest),
                                        f"mnist={work / 'models' / 'mnist' / '1'}",
                                        f"half_plus_two={work / 'models' / 'half_plus_two' / '1'}"],
                              ["mnist", "half_plus_two"], rest, None, work / "flask.log")
    for server in servers.values():  # one at a time: start-up times are not shared
        log(f"starting {server.name}")
        server.start()
        log(f"{server.name}: AVAILABLE after {server.start_seconds:.2f} s, RSS {server.rss_idle:.0f} MiB")
    return servers


def profile(servers: dict[str, Server], payload: dict[str, Path], use_wrk: bool, work: Path) -> str:
    spy = shutil.which("py-spy") or str(Path(PY).parent / "py-spy")
    if not Path(spy).exists():
        return "(py-spy not installed: `pip install py-spy` to include a profile)"
    server = servers["batching10"]
    sections = []
    for label, load in (
        ("REST, 64 clients", lambda d: run_wrk(server.rest_port, "/v1/models/mnist:predict", payload["mnist_json"], 64, d)
            if use_wrk else run_loadgen("http", server.rest_port, payload["mnist_json"], 64, d, "/v1/models/mnist:predict")),
        ("gRPC, 64 clients", lambda d: run_loadgen("grpc", server.grpc_port, payload["mnist_bin"], 64, d)),
    ):
        raw = work / f"profile-{len(sections)}.txt"
        spy_proc = subprocess.Popen(
            pinned(CLIENT_CPU, [spy, "record", "-p", str(server.proc.pid), "-d", "6", "-r", "250", "-f", "raw",
                                "-o", str(raw), "--nonblocking", "--gil"]),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        load(7)
        spy_proc.wait(60)
        sections.append(f"{label} (MNIST, {SHOWN['batching10']}; share of samples holding the GIL):\n"
                        + summarize_profile(raw))
    return "\n\n".join(sections)


def summarize_profile(raw: Path, top: int = 12) -> str:
    leaf: dict[str, int] = {}
    total = 0
    if not raw.exists():
        return "  (no samples)"
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = stack.split(";")
        n = int(count)
        total += n
        frame = frames[-1] or "(no Python frame: a native thread holding the GIL)"
        frame = re.sub(r"\s*\(/[^)]*site-packages/", " (", frame)
        frame = re.sub(r"\s*\(/\S*/src/pyserving/", " (pyserving/", frame)
        leaf[frame] = leaf.get(frame, 0) + n
    rows = sorted(leaf.items(), key=lambda kv: -kv[1])[:top]
    return "\n".join(f"  {n / total * 100:5.1f}%  {frame[:110]}" for frame, n in rows) if total else "  (no samples)"


# ---------------------------------------------------------------------------- report


def fmt(value: float, digits: int = 2) -> str:
    if value != value:  # NaN
        return "–"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def write_report(out: Path, info: dict[str, str], args: argparse.Namespace, use_wrk: bool, use_h2load: bool,
                 inproc: dict[str, Any],
                 servers: dict[str, Server], scenarios: dict[str, Scenario], rss_peak: dict[str, float],
                 profile_text: str, elapsed: float) -> None:
    def med(key: str, metric: str) -> float:
        s = scenarios.get(key)
        return s.median(metric) if s else float("nan")

    def cpu_per_request(key: str, group: str) -> float:
        return med(key, f"cpu_us_{group}")

    mn = inproc["mnist"]
    one_ms = mn["1"]["median_s"] * 1e3
    b64 = mn["64"]["rows_per_s"]
    big_s = mn["10000"]["median_s"]
    lines: list[str] = []
    add = lines.append
    add("# pyserving benchmark results")
    add("")
    add(f"Generated by `python bench/run.py --reps {args.reps} --duration {args.duration}` "
        f"in {elapsed / 60:.1f} minutes.")
    add("")
    add(f"- Date: {info['date']}")
    add(f"- Commit: {info['commit']}")
    add(f"- Machine: {info['nproc']} CPUs ({info['cpu']}), {info['ram']} RAM, Linux {info['kernel']}")
    add(f"- Software: Python {info['python']}, TensorFlow {info['tensorflow']}, grpcio {info['grpcio']}, "
        f"uvicorn {info['uvicorn']}, Flask {info['flask']}")
    add(f"- Pinning: every server on CPU {SERVER_CPU}, every client on CPU {CLIENT_CPU} (`taskset`); "
        f"the in-process limit is measured on CPU {SERVER_CPU} too.")
    add(f"- Load: REST by {'wrk (1 thread)' if use_wrk else 'bench/loadgen.py (Python HTTP client; wrk not found)'}, "
        "gRPC by `bench/loadgen.py` (4 processes of asyncio clients; 1 synchronous client for sequential)"
        + (", and sequential gRPC also by h2load (nghttp2's C client; the Python client's own time per call "
           "is ~0.35 ms)" if use_h2load else "") + ". "
        f"Each load run lasts {args.duration:g} s; figures are medians of {args.reps} interleaved repetitions "
        "(every scenario once, then again...).")
    add("- Servers: `pyserving` = batching off; `pyserving+batching 2 ms` / `10 ms` = `--enable_batching` with "
        "max_batch_size 64, num_batch_threads 1, batch_timeout_micros 2000 / 10000 (the 10 ms server runs the MNIST "
        "load tests only); `Flask` = `bench/flask_server.py` (Flask's threaded server, `json`, the SavedModel's "
        "signature function per request).")
    add("- Payloads: one MNIST-like image as the seeds send it (`json.dumps({\"instances\": img.tolist()})`, "
        f"{payload_sizes.get('mnist_json', 0) / 1e3:.1f} kB; gRPC `tensor_content`); "
        f"10,000 such images ({payload_sizes.get('mnist_10k_json', 0) / 1e6:.0f} MB JSON, "
        f"{payload_sizes.get('mnist_10k_bin', 0) / 1e6:.0f} MB protobuf); half_plus_two `[[1.0]]`.")
    add("")
    # --- targets
    rest_seq = med("mnist/pyserving/rest/1", "p50_ms")
    grpc_seq_key = "mnist/pyserving/h2load/1" if use_h2load else "mnist/pyserving/grpc/1"
    grpc_seq = med(grpc_seq_key, "p50_ms")
    grpc_seq_py = med("mnist/pyserving/grpc/1", "p50_ms")
    best = max(((med(f"mnist/{n}/{p}/64", "rps"), f"{SHOWN[n]}, {'REST' if p == 'rest' else 'gRPC'}")
                for n in BATCHING_SERVERS for p in ("rest", "grpc")), key=lambda x: x[0] if x[0] == x[0] else -1)
    batch64, batch64_where = best
    flask64 = med("mnist/flask/rest/64", "rps")
    # 10,000 images: each round's first call (after minutes of other load) and the calls
    # right after it, each against the in-process call timed the same way at the same moment.
    big = {k: (med(f"mnist/{k}/10k", "first_s"), med(f"mnist/{k}/10k", "next_s"))
           for k in ("inprocess", "pyserving/rest", "pyserving/grpc", "pyserving/v2bin")}
    in_first, in_next = big["inprocess"]
    rest_first, rest_next = big["pyserving/rest"]
    grpc_first, grpc_next = big["pyserving/grpc"]
    v2_first, v2_next = big["pyserving/v2bin"]
    flask_big = med("mnist/flask/rest/10k", "first_s")
    ours_rss = max(s.rss_idle for name, s in servers.items() if name != "flask")
    flask_rss = servers["flask"].rss_idle
    avail = servers["pyserving"].start_seconds

    def verdict(ok: bool, miss: str) -> str:
        return "met" if ok else f"**missed** ({miss})"

    add("## Targets (MNIST CNN)")
    add("")
    add("| Target | Measured | Result |")
    add("|---|---|---|")
    add(f"| REST sequential p50 <= 2x in-process 1-image call ({one_ms:.3f} ms) | {rest_seq:.3f} ms = "
        f"{rest_seq / one_ms:.1f}x | {verdict(rest_seq <= 2 * one_ms, f'{rest_seq / (2 * one_ms):.1f}x over')} |")
    by = (f"h2load; Python client {grpc_seq_py:.3f} ms = {grpc_seq_py / one_ms:.1f}x" if use_h2load
          else "Python client")
    add(f"| gRPC sequential p50 <= 2x in-process | {grpc_seq:.3f} ms = {grpc_seq / one_ms:.1f}x ({by}) | "
        f"{verdict(grpc_seq <= 2 * one_ms, f'{grpc_seq / (2 * one_ms):.1f}x over')} |")
    add(f"| 64 clients with batching >= 25% of in-process batch-64 ({b64:,.0f} images/s) | {batch64:,.0f} req/s = "
        f"{batch64 / b64 * 100:.1f}% ({batch64_where}) | "
        f"{verdict(batch64 >= 0.25 * b64, f'{0.25 * b64 / batch64:.1f}x short')} |")
    add(f"| 64 clients with batching >= 5x Flask ({flask64:,.0f} req/s) | {batch64 / flask64:.1f}x | "
        f"{verdict(batch64 >= 5 * flask64, f'{5 * flask64 / batch64:.1f}x short')} |")
    for route, limit, first, nxt in (("REST", 2.0, rest_first, rest_next), ("gRPC", 1.3, grpc_first, grpc_next),
                                     ("V2 REST, binary data", 1.1, v2_first, v2_next)):
        worst = max(first / in_first, nxt / in_next)
        add(f"| 10,000 images over {route} <= {limit:g}x in-process (first of a round / next, in-process "
            f"{in_first:.2f} / {in_next:.2f} s) | {first:.2f} s = {first / in_first:.2f}x / "
            f"{nxt:.2f} s = {nxt / in_next:.2f}x | {verdict(worst <= limit, f'{worst / limit:.2f}x over')} |")
    add(f"| RSS with the models loaded <= Flask's ({flask_rss:.0f} MiB) | {ours_rss:.0f} MiB | "
        f"{verdict(ours_rss <= flask_rss, f'+{ours_rss - flask_rss:.0f} MiB')} |")
    add(f"| AVAILABLE within 3 s of launch | {avail:.2f} s | {verdict(avail <= 3.0, f'+{avail - 3:.2f} s')} |")
    add("")
    floor_section(add, med, one_ms, b64, use_h2load, grpc_seq_key)
    # --- detail tables
    for model, label, levels in (("mnist", "MNIST CNN (156,234 parameters), one image per request", (1, 16, 64)),
                                 ("half_plus_two", "half_plus_two, one value per request", (1, 64))):
        inp = inproc[model]
        single = inp["1"]["median_s"] * 1e3
        add(f"## {label}")
        add("")
        add(f"In-process limit: 1 row {single:.3f} ms per call ({inp['1']['rows_per_s']:,.0f}/s); "
            + ", ".join(f"batch of {b}: {inp[b]['rows_per_s']:,.0f} rows/s" for b in inp if b != "1") + ". "
            + (f"Medians of {inp['1']['n']} measurements, one before the servers start and one in every "
               f"repetition (1 row: {inp['1']['lo_s'] * 1e3:.3f}-{inp['1']['hi_s'] * 1e3:.3f} ms"
               + (f"; batch of 64: {64 / inp['64']['hi_s']:,.0f}-{64 / inp['64']['lo_s']:,.0f} rows/s"
                  if "64" in inp else "") + ")." if inp["1"]["n"] > 1 else ""))
        add("")
        add("| Scenario | Server | req/s | p50 ms | p99 ms | p50 / in-process | req/s vs Flask | errors | "
            "CPU µs/req loop / other |")
        add("|---|---|---|---|---|---|---|---|---|")
        for conns in levels:
            flask_rps = med(f"{model}/flask/rest/{conns}", "rps")
            for proto in ("rest", "grpc", "h2load", *V2_ROUTES):
                for name, shown in SHOWN.items():
                    key = f"{model}/{name}/{proto}/{conns}"
                    if key not in scenarios:
                        continue
                    rps, p50, p99 = med(key, "rps"), med(key, "p50_ms"), med(key, "p99_ms")
                    errors = sum(s.get("errors", 0) for s in scenarios[key].samples)
                    what = "sequential" if conns == 1 else f"{conns} clients"
                    if conns == 1 and use_h2load and proto in ("grpc", "h2load"):
                        what += ", h2load" if proto == "h2load" else ", Python client"
                    route = V2_ROUTES.get(proto) or ("REST" if proto == "rest" else "gRPC")
                    cpu = (f"{fmt(cpu_per_request(key, 'loop'), 0)} / {fmt(cpu_per_request(key, 'other'), 0)}"
                           if conns > 1 else "")
                    add(f"| {route} {what} | {shown} | {fmt(rps)} | {fmt(p50, 3)} | "
                        f"{fmt(p99, 3)} | {fmt(p50 / single, 1)}x | "
                        f"{fmt(rps / flask_rps, 1) + 'x' if name != 'flask' else ''} | {errors} | {cpu} |")
        add("")
    add("## Seed 004's experiment: one request with 10,000 MNIST images")
    add("")
    add(f"Every round (repetition) makes {BIG_CALLS} calls of each route: the first comes after minutes "
        "of other load, when this VM has to fault memory in again, the others follow it back to back. "
        "The in-process call (`bench/inprocess.py --serve`, pinned like the servers) is timed the same "
        "way right before the servers' calls, so each ratio compares like with like; REST's and "
        "gRPC's calls alternate which comes first from round to round. In-process "
        f"limit measured alone before the run: {big_s:.3f} s. Medians over the rounds; Flask "
        "gets one call per round.")
    add("")
    add("| Route | Server | first of a round (s) | / in-process | next, back to back (s) | / in-process |")
    add("|---|---|---|---|---|---|")
    add(f"| in-process call | (limit) | {in_first:.3f} | 1x | {in_next:.3f} | 1x |")
    add(f"| REST (row JSON) | pyserving | {rest_first:.3f} | {rest_first / in_first:.2f}x | {rest_next:.3f} | "
        f"{rest_next / in_next:.2f}x |")
    add(f"| gRPC (tensor_content) | pyserving | {grpc_first:.3f} | {grpc_first / in_first:.2f}x | {grpc_next:.3f} | "
        f"{grpc_next / in_next:.2f}x |")
    add(f"| V2 REST (binary data) | pyserving | {v2_first:.3f} | {v2_first / in_first:.2f}x | {v2_next:.3f} | "
        f"{v2_next / in_next:.2f}x |")
    add(f"| REST (row JSON) | Flask | {flask_big:.3f} | {flask_big / in_first:.2f}x |  |  |")
    add("")
    add(f"REST / gRPC time: {rest_next / grpc_next:.1f}x back to back (seed 004 measured 17.7x for TF Serving, "
        "client-side JSON encoding included; here both bodies are built before timing).")
    add("")
    v2_section(add, med)
    add("## Memory and start-up")
    add("")
    add("| Server | launch -> AVAILABLE (s) | RSS idle, models loaded (MiB) | peak RSS after the run (MiB) |")
    add("|---|---|---|---|")
    for name, shown in SHOWN.items():
        server = servers[name]
        add(f"| {shown} | {server.start_seconds:.2f} | {server.rss_idle:.0f} | {rss_peak.get(name, float('nan')):.0f} |")
    add("")
    add("## Profile")
    add("")
    add("```")
    add(profile_text)
    add("```")
    add("")
    analysis = ""
    if out.exists():
        previous = out.read_text()
        if "\n## Analysis" in previous:
            analysis = previous[previous.index("\n## Analysis") + 1:]
    lines.append(analysis.rstrip() if analysis else "## Analysis\n\n(to be written after a run)")
    out.write_text("\n".join(lines) + "\n")


def v2_section(add: Callable[[str], None], med: Callable[[str, str], float]) -> None:
    """The Open Inference Protocol's single-image rows against TF Serving's API on the same
    server (target: within 10%)."""
    add("## Open Inference Protocol (V2) against TF Serving's API (V1), one MNIST image")
    add("")
    add("Sequential p50 (lower is better) and 64-client req/s (higher is better) of each V2 route over the "
        "V1 route it stands in for (REST row JSON, gRPC `tensor_content`); within 10% is the target.")
    add("")
    add("| Server | V2 route | vs V1 | sequential p50 ms V2 / V1 | ratio | 64 clients req/s V2 / V1 | ratio |")
    add("|---|---|---|---|---|---|---|")
    for name in ("pyserving", "batching"):
        for proto, shown in V2_ROUTES.items():
            v1 = "grpc" if proto == "v2grpc" else "rest"
            p50, p50_v1 = med(f"mnist/{name}/{proto}/1", "p50_ms"), med(f"mnist/{name}/{v1}/1", "p50_ms")
            rps, rps_v1 = med(f"mnist/{name}/{proto}/64", "rps"), med(f"mnist/{name}/{v1}/64", "rps")
            add(f"| {SHOWN[name]} | {shown} | {'gRPC' if v1 == 'grpc' else 'REST'} | {fmt(p50, 3)} / {fmt(p50_v1, 3)} | "
                f"{fmt(p50 / p50_v1)}x | {fmt(rps)} / {fmt(rps_v1)} | {fmt(rps / rps_v1)}x |")
    add("")


def floor_section(add: Callable[[str], None], med: Callable[[str, str], float], one_ms: float, b64: float,
                  use_h2load: bool, grpc_seq_key: str) -> None:
    """What the sequential and 64-client targets leave for pyserving's own code, once the
    HTTP/gRPC stack alone (`bench/floor_server.py`, measured the same way) and TensorFlow's
    own run are paid for."""
    floor_grpc_key = "mnist/floor/h2load/1" if use_h2load else "mnist/floor/grpc/1"
    if math.isnan(med("mnist/floor/rest/1", "p50_ms")):
        return  # no floor server in this run
    gap_ms = med("mnist/inprocess/gap", "median_ms")
    add("## The floor under the latency and throughput targets")
    add("")
    add("`bench/floor_server.py` runs pyserving's HTTP and gRPC stacks (uvicorn with pyserving's "
        "protocol on uvloop, `grpc.aio`) in one process pinned like the servers, answering every "
        "MNIST request at once with the real server's answer: no routing, JSON, metrics, thread hop "
        "or model. It is measured like the servers. TensorFlow's run inside the server is the mean "
        "of the server's own `runtime_latency` over the sequential run; the in-process 1-image call "
        f"after an idle sleep of {GAP_US} µs (as a sequential client's requests reach a server) took "
        f"{gap_ms:.3f} ms, against {one_ms:.3f} ms back to back.")
    add("")
    add("| Sequential p50 | target: 2x in-process | the stack alone | TensorFlow's run in the server | "
        "stack + TensorFlow | left for pyserving's code | pyserving | pyserving's code now |")
    add("|---|---|---|---|---|---|---|---|")
    for route, floor_key, key in (("REST (wrk)", "mnist/floor/rest/1", "mnist/pyserving/rest/1"),
                                  ("gRPC (h2load)" if use_h2load else "gRPC (Python client)", floor_grpc_key,
                                   grpc_seq_key)):
        stack, tf_ms, ours = med(floor_key, "p50_ms"), med(key, "tf_run_ms"), med(key, "p50_ms")
        target = 2 * one_ms
        add(f"| {route} | {target:.3f} ms | {stack:.3f} ms | {tf_ms:.3f} ms | {stack + tf_ms:.3f} ms = "
            f"{(stack + tf_ms) / one_ms:.1f}x | {(target - stack - tf_ms) * 1e3:.0f} µs | {ours:.3f} ms | "
            f"{(ours - stack - tf_ms) * 1e3:.0f} µs |")
    add("")
    budget = 1e6 / (0.25 * b64)
    stack_cpu = med("mnist/floor/rest/64", "cpu_us_loop") + med("mnist/floor/rest/64", "cpu_us_other")
    tf_us = 1e6 / b64
    ours = med("mnist/batching10/rest/64", "cpu_us_loop") + med("mnist/batching10/rest/64", "cpu_us_other")
    add("| 64 REST clients, one core | target: 25% of in-process batch-64 | the stack alone | "
        "TensorFlow per image (in-process batch of 64) | stack + TensorFlow | left for pyserving's code | "
        "pyserving+batching 10 ms | pyserving's code now |")
    add("|---|---|---|---|---|---|---|---|")
    add(f"| CPU µs per request | {budget:.0f} ({0.25 * b64:,.0f} req/s) | {stack_cpu:.0f} "
        f"({med('mnist/floor/rest/64', 'rps'):,.0f} req/s) | {tf_us:.0f} | {stack_cpu + tf_us:.0f} | "
        f"{budget - stack_cpu - tf_us:.0f} | {ours:.0f} ({med('mnist/batching10/rest/64', 'rps'):,.0f} req/s) | "
        f"{ours - stack_cpu - tf_us:.0f} |")
    add("")


payload_sizes: dict[str, int] = {}


# ---------------------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=4, help="interleaved repetitions of every scenario (median)")
    ap.add_argument("--duration", type=float, default=3.0, help="seconds per load run")
    ap.add_argument("--out", type=Path, default=BENCH / "RESULTS.md")
    ap.add_argument("--workdir", type=Path, default=None, help="keep models, payloads and logs here")
    ap.add_argument("--no-profile", action="store_true")
    args = ap.parse_args()
    started = time.perf_counter()
    if os.cpu_count() and os.cpu_count() > 1:
        os.sched_setaffinity(0, {int(CLIENT_CPU)})  # the orchestrator is a client too
    use_wrk = shutil.which("wrk") is not None
    if not use_wrk:
        log("wrk not found (apt-get install wrk): REST load comes from bench/loadgen.py instead")
    use_h2load = shutil.which("h2load") is not None
    if not use_h2load:
        log("h2load not found (apt-get install nghttp2-client): gRPC sequential latency only from a Python client")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="pyserving-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    info = machine()
    payload = prepare(work)
    payload_sizes.update({k: v.stat().st_size for k, v in payload.items()})
    inproc = in_process(work)
    servers: dict[str, Server] = {}
    inproc_calls: InProcessCalls | None = None
    floor: Server | None = None
    try:
        servers = start_servers(work)
        inproc_calls = InProcessCalls(work)
        floor = start_floor(work, servers["pyserving"], payload)
        scenarios = build_scenarios(servers, payload, args.duration, use_wrk, use_h2load, inproc_calls, work, floor)
        for rep in range(args.reps):
            for scenario in round_order(scenarios, rep):
                log(f"rep {rep + 1}/{args.reps}: {scenario.key}")
                run_scenario(scenario)
                sample = scenario.samples[-1]
                log("  " + ", ".join(f"{k}={v:.4g}" for k, v in sample.items() if isinstance(v, (int, float))))
        rss_peak = {name: rss_mib(s.proc.pid)[1] for name, s in servers.items()}
        profile_text = "(skipped)" if args.no_profile else profile(servers, payload, use_wrk, work)
    finally:
        for server in [*servers.values(), *([floor] if floor is not None else [])]:
            server.stop()
        if inproc_calls is not None:
            inproc_calls.stop()
    by_key = {s.key: s for s in scenarios}
    write_report(args.out, info, args, use_wrk, use_h2load, combined_limit(inproc, by_key), servers, by_key, rss_peak,
                 profile_text, time.perf_counter() - started)
    log(f"wrote {args.out} (work files in {work})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
