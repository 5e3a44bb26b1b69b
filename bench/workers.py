"""The `--workers` benchmark: does a second worker process turn the second core into
throughput, and what does it cost in memory and start-up time?

    python bench/workers.py                                   # ~3 minutes
    python bench/workers.py --seconds 3 --json /tmp/workers.json   # a quick look

One run, every figure a ratio measured side by side, on bench/run.py's MNIST CNN with
server-side batching as in bench/run.py's two batching servers (max_batch_size 64, one batch
thread per worker, batch_timeout_micros 2000 and 10000; ``--batching`` can pick one):

- A: ``--workers=1``, the server pinned to CPU 0 (``taskset -c 0``).
- B: ``--workers=2``, the server on CPUs 0 and 1.

Both timeouts, because they can rank A and B differently: each of B's workers sees about
half of the 64 clients, so its batches (max_batch_size 64) cannot fill and close on the
timeout instead, which at 10 ms bounds a worker's rate.

For each: 64-client REST throughput (wrk, one thread, after a 1 s warm-up) and 64-client
gRPC throughput (`bench/loadgen.py`: 4 processes of 16 callers, 1 s warm-up), both through
bench/run.py's own helpers; the resident memory (RSS and PSS) of every process of the server,
idle with the model loaded and at its peak after the load; the time from launch to the
server's "Server ready" line (printed once every model is AVAILABLE; with several workers
the supervisor prints it once all of them have loaded). Start-up is also measured for
``--workers=1`` on both CPUs, so that the start-up ratio compares worker counts on the same
cores. Every launch is a start-up sample of its configuration (A, B, or 1 worker on both
CPUs), whatever its batching timeout. With ``--reps`` above 1, the configurations alternate
order and figures are medians.

The client: bench/run.py pins every client to CPU 1 and the servers to CPU 0. This machine
has two cores and B gives both to the server, so no core is left for the client alone; it
stays on CPU 1 in both configurations, so that only the server changes between A and B. In
B it therefore competes with a worker for CPU 1: the CPU it uses is counted (sampled from
/proc over each run's measured window) and reported beside the server's and the rest of the
machine's (any other load disturbs a run on two cores), with how B's server CPU splits
between the workers (the kernel spreads connections over the listening sockets by a hash:
loadgen.py's 4 gRPC connections need not split 2/2).

The worker processes are the server's descendants that hold a listening socket on the REST
port (found by parent pid in /proc/*/stat, and socket inodes in /proc/net/tcp*); with none
(``--workers`` not in effect) the server is one process and is reported as one worker.

Needs what bench/run.py needs: Linux, ``taskset``, ``wrk`` (without it REST load comes from
`bench/loadgen.py`). The clients connect over 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path
from typing import Any, Callable

# bench/ is not a package: run.py is imported as this script's sibling (sys.path[0]).
from run import (
    BATCHING_SERVERS,
    CLIENT_CPU,
    PY,
    REPO,
    SERVER_CPU,
    SHOWN,
    Server,
    batching_parameters,
    fmt,
    free_port,
    http_request,
    log,
    machine,
    pinned,
    prepare,
    rss_mib,
    run_loadgen,
    run_wrk,
)

# What the server prints on stderr when every model of the initial configuration is
# AVAILABLE (pyserving.model_server.READY_MESSAGE starts with it); matched as text so that
# this process does not import pyserving.
READY = "Server ready"
CLIENTS = 64
PREDICT_PATH = "/v1/models/mnist:predict"
THROUGHPUT_TARGET = 1.7  # B / A
STARTUP_TARGET = 1.5  # 2 workers / 1 worker, same cores
BOTH_CPUS = f"{SERVER_CPU},{CLIENT_CPU}"


@dataclass(frozen=True)
class Kind:
    workers: int
    cpus: str
    load: bool  # throughput and memory under load, or start-up only
    label: str


KINDS = {
    "A": Kind(1, SERVER_CPU, True, f"A: 1 worker, CPU {SERVER_CPU}"),
    "B": Kind(2, BOTH_CPUS, True, f"B: 2 workers, CPUs {BOTH_CPUS}"),
    "start1": Kind(1, BOTH_CPUS, False, f"1 worker, CPUs {BOTH_CPUS}"),
}


@dataclass(frozen=True)
class Config:
    kind: str  # a key of KINDS
    batching: str  # a key of bench/run.py's BATCHING_SERVERS

    @property
    def key(self) -> str:
        return f"{self.kind}/{self.batching}"

# ---------------------------------------------------------------------------- processes


def _stat(pid: int) -> list[str]:
    """/proc/<pid>/stat from field 3 (state) on: the command name may hold spaces."""
    with open(f"/proc/{pid}/stat") as f:
        text = f.read()
    return text[text.rindex(")") + 2:].split()


def parents() -> dict[int, int]:
    """pid -> parent pid of every process. /proc/<pid>/task/*/children needs
    CONFIG_PROC_CHILDREN, which this VM's kernel lacks, and psutil is not a dependency:
    every process's parent is read from /proc/*/stat instead."""
    parent: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parent[int(entry)] = int(_stat(int(entry))[1])
            except (OSError, ValueError, IndexError):
                pass  # exited meanwhile
    return parent


def descendants(pid: int, parent: dict[int, int] | None = None) -> list[int]:
    """Every process below `pid`."""
    if parent is None:
        parent = parents()
    found: list[int] = []
    frontier = [pid]
    while frontier:
        here = frontier.pop()
        children = [c for c, p in parent.items() if p == here]
        found += children
        frontier += children
    return sorted(found)


def listening_inodes(port: int) -> set[str]:
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                inodes.add(fields[9])
    return inodes


def holds_socket(pid: int, inodes: set[str]) -> bool:
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:[") and link[8:-1] in inodes:
                return True
    except OSError:
        pass
    return False


@dataclass
class Group:
    """The processes of one server."""
    supervisor: int | None  # None: the server is one process, listed as the worker
    workers: list[int]
    others: list[int] = field(default_factory=list)  # descendants serving no port (helpers)
    started: dict[int, str] = field(default_factory=dict)  # pid -> start time, against pid reuse

    @property
    def pids(self) -> list[int]:
        return ([self.supervisor] if self.supervisor is not None else []) + self.workers + self.others


def find_group(pid: int, rest_port: int) -> Group:
    below = descendants(pid)
    if not below:
        group = Group(None, [pid])
    else:
        inodes = listening_inodes(rest_port)
        serving = [p for p in below if holds_socket(p, inodes)]
        workers = serving or below  # no listener seen: cannot tell, count them all
        group = Group(pid, workers, [p for p in below if p not in workers])
    for p in group.pids:
        try:
            group.started[p] = _stat(p)[19]
        except (OSError, IndexError):
            pass
    return group


def reap(group: Group) -> list[int]:
    """Kill what is left of a stopped server's processes (a worker its supervisor did not
    take down would keep the ports); the pids the benchmark found, if still the same
    processes."""
    killed = []
    for p in group.pids:
        try:
            if _stat(p)[19] == group.started.get(p):
                os.kill(p, signal.SIGKILL)
                killed.append(p)
        except (OSError, IndexError):
            pass
    return killed


def memory_mib(pid: int) -> dict[str, float]:
    """RSS, PSS (shared pages divided among the processes sharing them: the fairer figure
    for processes that share libraries) and peak RSS."""
    try:
        rss, peak = rss_mib(pid)
    except OSError:
        return {"rss": float("nan"), "pss": float("nan"), "peak_rss": float("nan")}
    pss = float("nan")
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    pss = int(line.split()[1]) / 1024
                    break
    except OSError:
        pass
    return {"rss": rss, "pss": pss, "peak_rss": peak}


def group_memory(group: Group) -> dict[str, Any]:
    return {
        "supervisor": memory_mib(group.supervisor) if group.supervisor is not None else None,
        "workers": [memory_mib(p) for p in group.workers],
        "others": [memory_mib(p) for p in group.others],
    }


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy (every CPU, every process), from /proc/stat."""
    with open("/proc/stat") as f:
        fields = f.readline().split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    try:
        fields = _stat(pid)
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------------- server


@dataclass
class WorkersServer(Server):
    """bench/run.py's Server on a chosen set of CPUs, ready when it prints READY (a REST
    poll could reach a worker that has loaded while another has not). The log is watched
    for one more second, so that READY lines printed by workers as well as by their
    supervisor show up in `ready_lines` rather than going unnoticed."""
    cpus: str = SERVER_CPU
    ready_lines: list[float] = field(default_factory=list)  # seconds from launch to each READY line

    def start(self, timeout: float = 180) -> None:
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
        env.pop("TF_ENABLE_BATCHING", None)
        self._log = open(self.log_path, "w")
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(pinned(self.cpus, self.cmd), stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=env, cwd=REPO)
        deadline = t0 + timeout
        settled: float | None = None
        while settled is None or time.perf_counter() < settled:
            count = self.log_path.read_text(errors="replace").count(READY)
            now = time.perf_counter()
            self.ready_lines += [now - t0] * (count - len(self.ready_lines))
            if self.ready_lines and settled is None:
                settled = now + 1.0  # also lets start-up work (gc.freeze, first polls) end before memory is read
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited; see {self.log_path}")
            if now > deadline and not self.ready_lines:
                raise RuntimeError(f"{self.name}: no {READY!r} within {timeout}s; see {self.log_path}")
            time.sleep(0.01)
        self.start_seconds = self.ready_lines[0]
        for model in self.models:
            status, body = http_request("GET", self.rest_port, f"/v1/models/{model}", timeout=10)
            if status != 200 or b'"AVAILABLE"' not in body:
                raise RuntimeError(f"{self.name} printed {READY!r} but {model} answers {status}: {body[:200]!r}")


# ---------------------------------------------------------------------------- measuring


class CpuSampler:
    """CPU seconds, sampled every `interval` while a load run goes on, of each of the
    server's processes, of the client (this benchmark's other descendants: wrk, or
    loadgen.py and its processes) and of the whole machine, so that CPU use can be read over
    the client's measured window alone, without its start-up and warm-up. What the machine
    spent beyond the server and the client is everything else (this benchmark's own process
    too): on a shared machine, the sign that another load disturbed a run."""

    def __init__(self, server: list[int], interval: float = 0.1):
        self.server = server
        self.interval = interval
        # (time, server pid -> s, client s, machine s)
        self.samples: list[tuple[float, dict[int, float], float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        clients: list[int] = []
        scanned = -1.0
        while not self._stop.wait(self.interval):
            now = time.perf_counter()
            if now - scanned > 0.5:  # the client's processes appear in its first second; a scan costs ms
                tree = parents()
                server = set(self.server) | {p for s in self.server for p in descendants(s, tree)}
                clients = [p for p in descendants(os.getpid(), tree) if p not in server]
                scanned = now
            used = [cpu_seconds(p) for p in clients]
            self.samples.append((now, {p: cpu_seconds(p) for p in self.server},
                                 sum(u for u in used if u == u), machine_busy_seconds()))

    def __enter__(self) -> "CpuSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def between(self, t0: float, t1: float) -> tuple[float, dict[int, float], float, float] | None:
        """(seconds, server pid -> CPU seconds, client CPU seconds, machine CPU seconds)
        between the first sample at or after t0 and the last at or before t1."""
        inside = [s for s in self.samples if t0 <= s[0] <= t1]
        if len(inside) < 2:
            return None
        (a, server_a, client_a, machine_a), (b, server_b, client_b, machine_b) = inside[0], inside[-1]
        return (b - a, {p: server_b[p] - server_a[p] for p in server_a}, client_b - client_a,
                machine_b - machine_a)


def measure(load: Callable[[], dict[str, float]], group: Group, seconds: float) -> dict[str, Any]:
    """One load run, plus the CPU the server's processes and the client used in its
    measured window, in cores. Both clients measure the last `seconds` before they exit
    (wrk has no warm-up of its own; loadgen.py warms up first), so the window is that,
    less 0.3 s at each end for start-up and teardown."""
    with CpuSampler(group.pids) as sampler:
        sample: dict[str, Any] = dict(load())
        end = time.perf_counter()
    window = sampler.between(end - seconds + 0.3, end - 0.3)
    if window is None:
        return sample
    wall, server, client, machine_busy = window
    workers = [server[p] for p in group.workers]
    sample["client_cores"] = client / wall
    sample["server_cores"] = sum(server.values()) / wall
    sample["other_cores"] = (machine_busy - client - sum(server.values())) / wall
    sample["worker_cpu_shares"] = [w / sum(workers) if sum(workers) > 0 else float("nan") for w in workers]
    return sample


def run_config(cfg: Config, rep: int, work: Path, payload: dict[str, Path], seconds: float,
               use_wrk: bool, config_file: Path) -> dict[str, Any]:
    kind = KINDS[cfg.kind]
    rest, grpc_port = free_port(), free_port()
    cmd = [PY, "-m", "pyserving", f"--port={grpc_port}", f"--rest_api_port={rest}",
           f"--model_config_file={config_file}", "--file_system_poll_wait_seconds=0",
           "--enable_batching", f"--batching_parameters_file={work / f'{cfg.batching}.txt'}",
           f"--workers={kind.workers}"]
    server = WorkersServer(cfg.key, cmd, ["mnist"], rest, grpc_port,
                           work / f"{cfg.kind}-{cfg.batching}-rep{rep + 1}.log", cpus=kind.cpus)
    log(f"rep {rep + 1}: starting {kind.label}, {SHOWN[cfg.batching]}")
    group: Group | None = None
    try:
        server.start()
        assert server.proc is not None
        group = find_group(server.proc.pid, rest)
        result: dict[str, Any] = {
            "start_s": server.start_seconds, "ready_lines_s": server.ready_lines,
            "supervisor_pid": group.supervisor, "worker_pids": group.workers, "other_pids": group.others,
            "memory_idle": group_memory(group),
        }
        log(f"  ready after {server.start_seconds:.2f} s; "
            + (f"supervisor {group.supervisor}, " if group.supervisor is not None else "one process, ")
            + f"workers {group.workers}" + (f", others {group.others}" if group.others else ""))
        if not kind.load:
            return result
        status, answer = http_request("POST", rest, PREDICT_PATH, payload["mnist_json"].read_bytes(), timeout=60)
        if status != 200:
            raise RuntimeError(f"{cfg.key}: the MNIST predict answered {status}: {answer[:200]!r}")
        if use_wrk:
            run_wrk(rest, PREDICT_PATH, payload["mnist_json"], CLIENTS, 1)  # warm-up, as bench/run.py
            result["rest"] = measure(lambda: run_wrk(rest, PREDICT_PATH, payload["mnist_json"], CLIENTS, seconds),
                                     group, seconds)
        else:
            result["rest"] = measure(lambda: run_loadgen("http", rest, payload["mnist_json"], CLIENTS, seconds,
                                                         PREDICT_PATH), group, seconds)
        log(f"  REST: {result['rest']['rps']:,.0f} req/s")
        result["grpc"] = measure(lambda: run_loadgen("grpc", grpc_port, payload["mnist_bin"], CLIENTS, seconds),
                                 group, seconds)
        log(f"  gRPC: {result['grpc']['rps']:,.0f} req/s")
        result["memory_after"] = group_memory(group)
        return result
    finally:
        if group is None and server.proc is not None and server.proc.poll() is None:
            group = find_group(server.proc.pid, rest)  # a failed start: still take down all it started
        server.stop()
        if group is not None:
            left = reap(group)
            if left:
                log(f"  {cfg.key}: processes {left} outlived the server's SIGTERM; killed")


# ---------------------------------------------------------------------------- report


def med(values: list[float]) -> float:
    values = [v for v in values if v == v]
    return statistics.median(values) if values else float("nan")


def memory_summary(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians of `group_memory` results; per-worker figures by position."""
    n = min(len(r["workers"]) for r in samples)
    metrics = ("rss", "pss", "peak_rss")
    supervised = [r for r in samples if r["supervisor"]]
    mem: dict[str, Any] = {
        "workers": [{m: med([r["workers"][i][m] for r in samples]) for m in metrics} for i in range(n)],
        "supervisor": {m: med([r["supervisor"][m] for r in supervised]) for m in metrics} if supervised else None,
        "others": {m: med([sum(o[m] for o in r["others"]) for r in samples]) for m in metrics},
    }
    for m in metrics:
        mem[f"workers_{m}"] = med([sum(w[m] for w in r["workers"]) for r in samples])
        mem[f"total_{m}"] = med([sum(w[m] for w in r["workers"]) + (r["supervisor"][m] if r["supervisor"] else 0)
                                 + sum(o[m] for o in r["others"]) for r in samples])
    return mem


def summarize(runs: dict[str, list[dict[str, Any]]], configs: list[Config]) -> dict[str, Any]:
    """Throughput per configuration; start-up and memory per kind (A, B, 1 worker on both
    CPUs), over all its launches whatever their batching timeout. Medians."""
    throughput: dict[str, Any] = {}
    for cfg in configs:
        samples = runs[cfg.key]
        for route in ("rest", "grpc"):
            if all(route in r for r in samples):
                t: dict[str, Any] = {m: med([r[route].get(m, float("nan")) for r in samples])
                                     for m in ("rps", "p50_ms", "p99_ms", "client_cores", "server_cores",
                                               "other_cores")}
                t["errors"] = sum(r[route].get("errors", 0) for r in samples)
                t["worker_cpu_shares"] = [r[route].get("worker_cpu_shares", []) for r in samples]
                throughput[f"{cfg.key}/{route}"] = t
    kinds: dict[str, Any] = {}
    for name in KINDS:
        launches = [r for cfg in configs if cfg.kind == name for r in runs[cfg.key]]
        if not launches:
            continue
        k: dict[str, Any] = {
            "launches": len(launches),
            "start_s": med([r["start_s"] for r in launches]),
            "start_s_all": [r["start_s"] for r in launches],
            "workers_found": max(len(r["worker_pids"]) for r in launches),
            "supervisor": any(r["supervisor_pid"] is not None for r in launches),
            "ready_lines_s": max((r["ready_lines_s"] for r in launches), key=len),
        }
        for when in ("memory_idle", "memory_after"):
            if all(when in r for r in launches):
                k[when] = memory_summary([r[when] for r in launches])
        kinds[name] = k
    return {"throughput": throughput, "kinds": kinds}


def compute_ratios(summary: dict[str, Any], batchings: list[str]) -> dict[str, float]:
    t, k = summary["throughput"], summary["kinds"]
    a, b = k["A"], k["B"]
    ratios: dict[str, float] = {}
    for route in ("rest", "grpc"):
        for batching in batchings:
            ratios[f"{batching}/{route}_rps"] = t[f"B/{batching}/{route}"]["rps"] / t[f"A/{batching}/{route}"]["rps"]
        # each configuration at its best timeout: what a deployment would pick
        best = {kind: max((t[f"{kind}/{x}/{route}"]["rps"] for x in batchings), key=lambda v: v if v == v else -1)
                for kind in ("A", "B")}
        ratios[f"best/{route}_rps"] = best["B"] / best["A"]
    ratios["startup"] = b["start_s"] / k["start1"]["start_s"]
    ratios["startup_vs_A"] = b["start_s"] / a["start_s"]
    ratios["rss_idle"] = b["memory_idle"]["total_rss"] / a["memory_idle"]["total_rss"]
    ratios["rss_idle_per_worker"] = (b["memory_idle"]["workers_rss"] / len(b["memory_idle"]["workers"])
                                     / a["memory_idle"]["total_rss"])
    ratios["pss_idle"] = b["memory_idle"]["total_pss"] / a["memory_idle"]["total_pss"]
    ratios["peak_rss"] = b["memory_after"]["total_peak_rss"] / a["memory_after"]["total_peak_rss"]
    return ratios


def verdict(ok: bool, single: bool) -> str:
    result = "met" if ok else "**missed**"
    return f"{result} (B ran as one process)" if single else result


def report(info: dict[str, str], server_code: str, args: argparse.Namespace, use_wrk: bool, batchings: list[str],
           summary: dict[str, Any], ratios: dict[str, float], elapsed: float) -> str:
    t, k = summary["throughput"], summary["kinds"]
    a, b, s1 = k["A"], k["B"], k["start1"]
    single = b["workers_found"] < 2
    lines: list[str] = []
    add = lines.append
    add("# pyserving `--workers` benchmark")
    add("")
    add(f"Generated by `python bench/workers.py --seconds {args.seconds:g} --reps {args.reps}"
        + (f" --batching {','.join(batchings)}" if args.batching else "") + f"` in {elapsed / 60:.1f} minutes.")
    add("")
    add(f"- Date: {info['date']}")
    add(f"- Commit: {info['commit']}; server code: {server_code}")
    add(f"- Machine: {info['nproc']} CPUs ({info['cpu']}), {info['ram']} RAM, Linux {info['kernel']}; "
        f"Python {info['python']}, TensorFlow {info['tensorflow']}, grpcio {info['grpcio']}, uvicorn {info['uvicorn']}")
    add("- Model: bench/run.py's MNIST CNN, one image per request; `--enable_batching` with max_batch_size 64, "
        "num_batch_threads 1 (per worker), batch_timeout_micros "
        + " and ".join(str(BATCHING_SERVERS[x]) for x in batchings)
        + " (bench/run.py's " + " and ".join(f"`{SHOWN[x]}`" for x in batchings) + ").")
    def processes(kind: dict[str, Any]) -> str:
        return f"a supervisor and {kind['workers_found']} workers" if kind["supervisor"] else "one process"

    add(f"- Server: A = `--workers=1` pinned to CPU {SERVER_CPU}; B = `--workers=2` on CPUs {BOTH_CPUS} "
        f"(`taskset`). Processes found: A {processes(a)}; B {processes(b)}.")
    add(f"- Client: pinned to CPU {CLIENT_CPU} in both configurations, as bench/run.py pins its clients; in B "
        f"it shares CPU {CLIENT_CPU} with the server; the CPU it used in each run's measured window (sampled from "
        "/proc) is in the table, with the rest of the machine's (`other`: this script, and any other load on "
        "the machine, which disturbs the run). REST: "
        + (f"wrk (1 thread, {CLIENTS} connections, 1 s warm-up)" if use_wrk
           else f"bench/loadgen.py's HTTP client ({CLIENTS} connections; wrk not found)")
        + f"; gRPC: bench/loadgen.py (4 processes, {CLIENTS} callers, 1 s warm-up; one connection per process, which "
        "the kernel spreads over the workers' listening sockets by a hash, so B's worker CPU split is shown). "
        f"{args.seconds:g} s per load run; medians of {args.reps} repetition(s), configurations in alternating "
        "order.")
    if single:
        add("")
        add("**B ran as a single process: `--workers=2` was not in effect in this server code.** The ratios "
            "below compare one process on one core with one process on two cores.")
    add("")
    add(f"## Throughput, {CLIENTS} clients")
    add("")
    add(f"| Batching | Route | A req/s | B req/s | B / A | target >= {THROUGHPUT_TARGET}x | p50 / p99 ms, A | "
        "p50 / p99 ms, B | CPU cores server / client / other, A | CPU cores server / client / other, B | "
        "B's worker CPU split | errors A / B |")
    add("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for route, shown in (("rest", "REST"), ("grpc", "gRPC")):
        for batching in batchings:
            ra, rb = t[f"A/{batching}/{route}"], t[f"B/{batching}/{route}"]
            ratio = ratios[f"{batching}/{route}_rps"]
            shares = "; ".join("/".join(f"{x * 100:.0f}%" for x in rep) for rep in rb["worker_cpu_shares"])
            add(f"| {BATCHING_SERVERS[batching] / 1000:g} ms | {shown} | {fmt(ra['rps'])} | {fmt(rb['rps'])} | "
                f"**{ratio:.2f}x** | {verdict(ratio >= THROUGHPUT_TARGET, single)} | "
                f"{fmt(ra['p50_ms'])} / {fmt(ra['p99_ms'])} | {fmt(rb['p50_ms'])} / {fmt(rb['p99_ms'])} | "
                f"{fmt(ra['server_cores'])} / {fmt(ra['client_cores'])} / {fmt(ra['other_cores'])} | "
                f"{fmt(rb['server_cores'])} / {fmt(rb['client_cores'])} / {fmt(rb['other_cores'])} | {shares} | "
                f"{ra['errors']} / {rb['errors']} |")
        if len(batchings) > 1:
            ratio = ratios[f"best/{route}_rps"]
            add(f"| best of each | {shown} | | | **{ratio:.2f}x** | {verdict(ratio >= THROUGHPUT_TARGET, single)} "
                "| | | | | | |")
    add("")
    add("## Memory (MiB)")
    add("")
    add("Idle with the model loaded, and after the load runs (RSS then, and its peak); medians over each "
        "configuration's launches. PSS divides each shared page among the processes mapping it, on the whole "
        "machine: another TensorFlow process from the same installation lowers it.")
    add("")
    add("| Server | Process | RSS idle | PSS idle | RSS after load | peak RSS |")
    add("|---|---|---|---|---|---|")
    for name, kind in (("A", a), ("B", b)):
        idle, after = kind["memory_idle"], kind["memory_after"]
        rows: list[tuple[str, dict[str, float], dict[str, float]]] = []
        if idle["supervisor"] is not None:
            rows.append(("supervisor", idle["supervisor"], after["supervisor"]))
        for i, (wi, wa) in enumerate(zip(idle["workers"], after["workers"])):
            rows.append((f"worker {i + 1}" if kind["supervisor"] else "the server (one process)", wi, wa))
        if kind["supervisor"] and idle["others"]["rss"] > 0:
            rows.append(("other descendants", idle["others"], after["others"]))
        for process, i_, a_ in rows:
            add(f"| {name} | {process} | {i_['rss']:.0f} | {i_['pss']:.0f} | {a_['rss']:.0f} | {a_['peak_rss']:.0f} |")
        if kind["supervisor"]:
            add(f"| {name} | workers, sum | {idle['workers_rss']:.0f} | {idle['workers_pss']:.0f} | "
                f"{after['workers_rss']:.0f} | {after['workers_peak_rss']:.0f} |")
            add(f"| {name} | all processes | {idle['total_rss']:.0f} | {idle['total_pss']:.0f} | "
                f"{after['total_rss']:.0f} | {after['total_peak_rss']:.0f} |")
    add("")
    add(f"B / A, all processes: RSS idle {ratios['rss_idle']:.2f}x, PSS idle {ratios['pss_idle']:.2f}x, "
        f"peak RSS {ratios['peak_rss']:.2f}x (per-process peaks, summed). One B worker's idle RSS / A's: "
        f"{ratios['rss_idle_per_worker']:.2f}x.")
    add("")
    add('## Start-up: launch to "Server ready"')
    add("")
    add("| Server | seconds (median) | launches | / 1 worker on the same CPUs | target |")
    add("|---|---|---|---|---|")
    add(f"| {KINDS['A'].label} | {a['start_s']:.2f} | {a['launches']} | | |")
    add(f"| {KINDS['start1'].label} | {s1['start_s']:.2f} | {s1['launches']} | 1x | |")
    add(f"| {KINDS['B'].label} | {b['start_s']:.2f} | {b['launches']} | **{ratios['startup']:.2f}x** | "
        f"<= {STARTUP_TARGET}x: {verdict(ratios['startup'] <= STARTUP_TARGET, single)} |")
    for name, kind in k.items():
        lines_s = kind["ready_lines_s"]
        if len(lines_s) > 1:
            add("")
            add(f"{KINDS[name].label}: a log has {len(lines_s)} {READY!r} lines within 1 s of the first (at "
                + ", ".join(f"{x:.2f}" for x in lines_s) + " s); start-up is taken at the first.")
    return "\n".join(lines) + "\n"


def no_nan(value: Any) -> Any:
    """NaN (a figure not measured) as null: strict JSON has no NaN."""
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: no_nan(v) for k, v in value.items()}
    if isinstance(value, list):
        return [no_nan(v) for v in value]
    return value


def server_code() -> str:
    """Where `python -m pyserving` finds pyserving (PYTHONPATH or the venv's editable
    install may point at another checkout than this script's), with that checkout's commit."""
    spec = find_spec("pyserving")
    if spec is None or spec.origin is None:
        return "pyserving not importable"
    package = Path(spec.origin).resolve().parent
    where = f"{package.relative_to(REPO)}, this checkout" if package.is_relative_to(REPO) else str(package)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=package, capture_output=True, text=True)
    if commit.returncode != 0:
        return where
    changed = subprocess.run(["git", "status", "--porcelain", "--", "."], cwd=package, capture_output=True,
                             text=True).stdout.strip()
    return f"{where} (commit {commit.stdout.strip()}" + (" + uncommitted changes)" if changed else ")")


# ---------------------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10.0, help="seconds per load run")
    ap.add_argument("--reps", type=int, default=1, help="repetitions of every configuration (median)")
    ap.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    ap.add_argument("--batching", default=None,
                    help="bench/run.py's batching servers to use, comma-separated: "
                    + ", ".join(f"{k} ({v} µs)" for k, v in BATCHING_SERVERS.items()) + "; default all")
    ap.add_argument("--workdir", type=Path, default=None, help="keep the model, payloads and server logs here")
    args = ap.parse_args()
    batchings = args.batching.split(",") if args.batching else list(BATCHING_SERVERS)
    if unknown := [x for x in batchings if x not in BATCHING_SERVERS]:
        ap.error(f"--batching: unknown {', '.join(unknown)}")
    started = time.perf_counter()
    if (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {int(CLIENT_CPU)})  # the orchestrator is a client too
    use_wrk = shutil.which("wrk") is not None
    if not use_wrk:
        log("wrk not found (apt-get install wrk): REST load comes from bench/loadgen.py instead")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="pyserving-workers-"))
    work.mkdir(parents=True, exist_ok=True)
    info = machine()
    code = server_code()
    payload = prepare(work)
    for name in ("mnist_10k_json", "mnist_10k_bin"):  # bench/run.py's big requests: not used here
        payload.pop(name).unlink(missing_ok=True)
    config_file = work / "models.config"
    config_file.write_text(
        "model_config_list {\n"
        f'  config {{ name: "mnist" base_path: "{work / "models" / "mnist"}" model_platform: "tensorflow" }}\n}}\n')
    for batching in batchings:
        (work / f"{batching}.txt").write_text(batching_parameters(BATCHING_SERVERS[batching]))
    configs = [Config(kind, batching) for batching in batchings for kind in KINDS]
    runs: dict[str, list[dict[str, Any]]] = {c.key: [] for c in configs}
    for rep in range(args.reps):
        # Reversed on odd repetitions, so that no configuration always runs first (this VM
        # drifts over minutes).
        for cfg in configs if rep % 2 == 0 else configs[::-1]:
            runs[cfg.key].append(run_config(cfg, rep, work, payload, args.seconds, use_wrk, config_file))
    summary = summarize(runs, configs)
    ratios = compute_ratios(summary, batchings)
    elapsed = time.perf_counter() - started
    print(report(info, code, args, use_wrk, batchings, summary, ratios, elapsed), end="")
    if args.json is not None:
        args.json.write_text(json.dumps(no_nan({
            "machine": info, "server_code": code,
            "settings": {"seconds": args.seconds, "reps": args.reps, "clients": CLIENTS,
                         "batch_timeout_micros": {x: BATCHING_SERVERS[x] for x in batchings},
                         "rest_client": "wrk" if use_wrk else "loadgen", "client_cpus": CLIENT_CPU,
                         "kinds": {name: {"workers": k.workers, "cpus": k.cpus, "load": k.load}
                                   for name, k in KINDS.items()}},
            "b_single_process": summary["kinds"]["B"]["workers_found"] < 2,
            "targets": {"throughput_b_over_a": THROUGHPUT_TARGET, "startup_2_over_1": STARTUP_TARGET},
            "ratios": ratios, "summary": summary, "runs": runs, "elapsed_s": elapsed,
        }), indent=1, allow_nan=False) + "\n")
        log(f"wrote {args.json}")
    log(f"server logs in {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
