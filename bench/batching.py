"""Adaptive against fixed batching, in one run: latency when idle, throughput when busy,
the request path's cost against the floor, and a load step with open-loop arrivals.

    python bench/batching.py                     # ~6 minutes; updates bench/RESULTS.md
    python bench/batching.py --reps 1 --duration 2 --out /tmp/B.md   # a quick look

Servers (each pinned to CPU 0, clients on CPU 1, as in `bench/run.py`; max_batch_size 64,
one batch thread, max_enqueued_batches 1000, the MNIST CNN and half_plus_two):
``off`` (batching off), ``fixed0`` / ``fixed2`` / ``fixed10`` (TF Serving's rule with
batch_timeout_micros 0, 2000, 10000) and ``adaptive`` (``--batching_mode=adaptive`` with
batch_timeout_micros 10000 as its upper bound), plus `bench/floor_server.py` (the HTTP and
gRPC stacks alone).

Every repetition runs every scenario once, alternating servers (A/B in the same stretch of
a noisy shared VM); the tables give medians over the repetitions with their range.

- Sequential single image: REST (wrk, 1 connection) and gRPC (h2load, 1 connection); off,
  adaptive, fixed2 and the floor. TensorFlow's own run inside the server is read from its
  `runtime_latency` during the sequential REST runs: floor + that run is what the request
  path's own cost is measured against.
- Closed loop, 16 and 64 clients: REST (wrk) and gRPC (`bench/loadgen.py`); the fixed
  servers and adaptive; CPU per request of the whole server process (from /proc).
- Load step (`bench/openloop.py`): 1 -> 64 -> 1 clients, each sending ``--rate`` requests
  per second whatever the answers (open loop); latency from when each request was due;
  p50/p99 per phase; fixed2, fixed10, adaptive.

Writes a ``### Adaptive batching`` section into the ``## Analysis`` part of ``--out`` (kept
by `bench/run.py`), replacing the previous one.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import (  # noqa: E402  (the main benchmark's helpers)
    BENCH, CLIENT_CPU, PY, Server, free_port, log, machine, measure_limit, pinned, prepare,
    run_h2load, run_loadgen, run_wrk, start_floor, thread_cpu, with_runtime, write_configs,
)

FIXED = {"fixed0": 0, "fixed2": 2000, "fixed10": 10000}
ADAPTIVE_TIMEOUT = 10000
SERVERS = ("off", *FIXED, "adaptive")
START, END = "<!-- bench/batching.py: start -->", "<!-- bench/batching.py: end -->"


def start_servers(work: Path) -> dict[str, Server]:
    config, monitoring = write_configs(work)
    servers: dict[str, Server] = {}
    for name in SERVERS:
        extra: list[str] = []
        if name != "off":
            timeout = FIXED.get(name, ADAPTIVE_TIMEOUT)
            params = work / f"{name}.txt"
            params.write_text(f"max_batch_size {{ value: 64 }}\nbatch_timeout_micros {{ value: {timeout} }}\n"
                              "max_enqueued_batches { value: 1000 }\nnum_batch_threads { value: 1 }\n")
            extra = ["--enable_batching", f"--batching_parameters_file={params}"]
            if name == "adaptive":
                extra.append("--batching_mode=adaptive")
        rest, grpc_port = free_port(), free_port()
        cmd = [PY, "-m", "pyserving", f"--port={grpc_port}", f"--rest_api_port={rest}",
               f"--model_config_file={config}", "--file_system_poll_wait_seconds=0",
               f"--monitoring_config_file={monitoring}", *extra]
        servers[name] = Server(name, cmd, ["mnist", "half_plus_two"], rest, grpc_port, work / f"{name}.log")
    for server in servers.values():
        log(f"starting {server.name}")
        server.start()
    return servers


def run_openloop(server: Server, body: Path, phases: str, rate: float, phase_seconds: float) -> dict[str, float]:
    cmd = [PY, str(BENCH / "openloop.py"), "--target", f"127.0.0.1:{server.rest_port}",
           "--path", "/v1/models/mnist:predict", "--body", str(body), "--phases", phases,
           "--rate", str(rate), "--phase-seconds", str(phase_seconds), "--procs", "4"]
    out = subprocess.run(pinned(CLIENT_CPU, cmd), capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"openloop failed: {out.stderr[-2000:]}")
    result: dict[str, float] = {}
    for i, phase in enumerate(json.loads(out.stdout)):
        for key in ("p50_ms", "p99_ms", "rps", "errors"):
            result[f"phase{i}_{key}"] = phase[key]
    return result


def with_cpu(server: Server, run: Callable[[], dict[str, float]]) -> Callable[[], dict[str, float]]:
    """`run`, plus `cpu_us`: the server process's CPU microseconds per answered request."""
    def measured() -> dict[str, float]:
        assert server.proc is not None
        before = thread_cpu(server.proc.pid)
        sample = run()
        after = thread_cpu(server.proc.pid)
        requests = sample["rps"] * sample["duration"]
        if requests:
            sample["cpu_us"] = sum(after[g] - before[g] for g in after) / requests * 1e6
        return sample
    return measured


class Table:
    """Samples per (scenario, server) key."""

    def __init__(self) -> None:
        self.samples: dict[str, list[dict[str, float]]] = {}

    def add(self, key: str, sample: dict[str, float]) -> None:
        self.samples.setdefault(key, []).append(sample)

    def median(self, key: str, metric: str) -> float:
        values = [s[metric] for s in self.samples.get(key, []) if metric in s and s[metric] == s[metric]]
        return statistics.median(values) if values else float("nan")

    def spread(self, key: str, metric: str, fmt: str = "{:.3f}") -> str:
        values = [s[metric] for s in self.samples.get(key, []) if metric in s and s[metric] == s[metric]]
        if not values:
            return "n/a"
        median = fmt.format(statistics.median(values))
        if len(values) == 1:
            return median
        return f"{median} ({fmt.format(min(values))}-{fmt.format(max(values))})"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--duration", type=float, default=2.0, help="seconds per load run")
    ap.add_argument("--rate", type=float, default=40.0, help="load step: requests/s per client")
    ap.add_argument("--phase-seconds", type=float, default=3.0)
    ap.add_argument("--out", type=Path, default=BENCH / "RESULTS.md")
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args(argv)
    if not shutil.which("wrk") or not shutil.which("h2load"):
        raise SystemExit("needs wrk and h2load (apt-get install wrk nghttp2-client)")
    started = time.monotonic()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="pyserving-batching-"))
    work.mkdir(parents=True, exist_ok=True)
    payload = prepare(work, big=False)
    servers = start_servers(work)
    floor = start_floor(work, servers["off"], {**payload})
    table = Table()
    d = args.duration
    mnist_json, mnist_bin = payload["mnist_json"], payload["mnist_bin"]
    hpt_json = payload["half_plus_two_json"]
    path = "/v1/models/mnist:predict"
    try:
        for rep in range(args.reps):
            log(f"repetition {rep + 1} of {args.reps}")
            limit = measure_limit(work, "mnist", "1,64", 1.5)
            table.add("inprocess", {"one_ms": limit["1"]["median_s"] * 1e3,
                                    "b64_us_per_row": limit["64"]["median_s"] / 64 * 1e6})
            order = ["off", "adaptive", "fixed2"] if rep % 2 == 0 else ["fixed2", "adaptive", "off"]
            for name in order + ["floor"]:
                server = floor if name == "floor" else servers[name]
                run_wrk(server.rest_port, path, mnist_json, 1, 1)  # warm (see run.py's rest_warm)
                rest_seq = (lambda s=server: run_wrk(s.rest_port, path, mnist_json, 1, d))
                if name != "floor":
                    rest_seq = with_runtime(rest_seq, server.rest_port, "mnist")
                table.add(f"seq/rest/{name}", rest_seq())
                table.add(f"seq/grpc/{name}", run_h2load(server.grpc_port, mnist_bin, 1, d))
                if name in ("off", "adaptive"):
                    run_wrk(server.rest_port, "/v1/models/half_plus_two:predict", hpt_json, 1, 1)
                    table.add(f"seq/hpt/{name}", run_wrk(server.rest_port, "/v1/models/half_plus_two:predict",
                                                         hpt_json, 1, d))
            run_wrk(floor.rest_port, path, mnist_json, 64, 1)
            table.add("64/rest/floor", with_cpu(floor, lambda: run_wrk(floor.rest_port, path, mnist_json, 64, d))())
            load_order = ["adaptive", *FIXED] if rep % 2 == 0 else [*reversed(FIXED), "adaptive"]
            for conns in (16, 64):
                for name in load_order:
                    server = servers[name]
                    run_wrk(server.rest_port, path, mnist_json, conns, 1)
                    table.add(f"{conns}/rest/{name}", with_cpu(
                        server, lambda s=server, c=conns: run_wrk(s.rest_port, path, mnist_json, c, d))())
                    table.add(f"{conns}/grpc/{name}", run_loadgen("grpc", server.grpc_port, mnist_bin, conns, d))
            for name in (["adaptive", "fixed2", "fixed10"] if rep % 2 == 0 else ["fixed10", "fixed2", "adaptive"]):
                table.add(f"step/{name}", run_openloop(servers[name], mnist_json, "1,64,1", args.rate,
                                                       args.phase_seconds))
    finally:
        floor.stop()
        for server in servers.values():
            server.stop()
    report = render(table, args, time.monotonic() - started)
    write(args.out, report)
    print(report)
    return 0


def render(t: Table, args: argparse.Namespace, seconds: float) -> str:
    m = machine()
    lines = [START, "### Adaptive batching (bench/batching.py)", "",
             f"`python bench/batching.py --reps {args.reps} --duration {args.duration:g}` in "
             f"{seconds / 60:.1f} minutes, {m['date']}, commit {m['commit']}, {m['nproc']} CPUs ({m['cpu']}). "
             "Medians of the repetitions (range in brackets). Servers: max_batch_size 64, one batch thread; "
             "fixed0/2/10 = TF Serving's rule with batch_timeout_micros 0/2000/10000; adaptive = "
             f"`--batching_mode=adaptive` with batch_timeout_micros {ADAPTIVE_TIMEOUT} as its bound.", ""]
    one = t.median("inprocess", "one_ms")
    per_row = t.median("inprocess", "b64_us_per_row")
    lines += [f"In-process MNIST: 1 image {t.spread('inprocess', 'one_ms')} ms; batch of 64 "
              f"{t.spread('inprocess', 'b64_us_per_row', '{:.1f}')} µs per image.", ""]
    lines += ["| Sequential p50 (ms) | off | adaptive | adaptive / off | fixed2 | floor (stack alone) | "
              "TF run in server (off) | adaptive - (floor + TF run) | p50 / in-process (adaptive) |",
              "|---|---|---|---|---|---|---|---|---|"]
    for route, label in (("rest", "REST MNIST (wrk)"), ("grpc", "gRPC MNIST (h2load)"), ("hpt", "REST half_plus_two")):
        off = t.median(f"seq/{route}/off", "p50_ms")
        ada = t.median(f"seq/{route}/adaptive", "p50_ms")
        # TensorFlow's run read from the unbatched server: a batching server's
        # runtime_latency spans the batch queue too.
        tf_run = t.median("seq/rest/off", "tf_run_ms")
        floor = t.median(f"seq/{route}/floor", "p50_ms")
        over = (ada - floor - tf_run) * 1e3 if route != "hpt" else float("nan")
        lines.append(
            f"| {label} | {t.spread(f'seq/{route}/off', 'p50_ms')} | {t.spread(f'seq/{route}/adaptive', 'p50_ms')} | "
            f"{ada / off:.2f}x | {t.spread(f'seq/{route}/fixed2', 'p50_ms')} | "
            f"{t.spread(f'seq/{route}/floor', 'p50_ms') if route != 'hpt' else ''} | "
            f"{tf_run:.3f} | {'' if over != over else f'{over:+.0f} µs'} | "
            f"{'' if route == 'hpt' else f'{ada / one:.1f}x'} |")
    lines += ["", "| Closed loop | server | req/s | p50 ms | p99 ms | CPU µs/req (process) |", "|---|---|---|---|---|---|"]
    for conns in (16, 64):
        for route in ("rest", "grpc"):
            for name in (*FIXED, "adaptive"):
                key = f"{conns}/{route}/{name}"
                lines.append(f"| {route.upper() if route == 'grpc' else 'REST'} {conns} clients | {name} | "
                             f"{t.spread(key, 'rps', '{:,.0f}')} | {t.spread(key, 'p50_ms', '{:.2f}')} | "
                             f"{t.spread(key, 'p99_ms', '{:.2f}')} | "
                             f"{t.spread(key, 'cpu_us', '{:.0f}') if route == 'rest' else ''} |")
    floor_cpu = t.median("64/rest/floor", "cpu_us")
    ada_cpu = t.median("64/rest/adaptive", "cpu_us")
    ada_rps = t.median("64/rest/adaptive", "rps")
    lines += ["", f"64 REST clients: the stack alone {floor_cpu:.0f} µs CPU per request, TensorFlow "
              f"{per_row:.0f} µs per image at batch 64 in-process; adaptive {ada_cpu:.0f} µs, so pyserving's "
              f"own code {ada_cpu - floor_cpu - per_row:.0f} µs per request. Adaptive at 64 REST clients = "
              f"{ada_rps / (64e6 / (per_row * 64)) * 100:.1f}% of in-process batch-64; sequential REST "
              f"p50 = {t.median('seq/rest/adaptive', 'p50_ms') / one:.1f}x the in-process 1-image call.", ""]
    lines += [f"Load step (open loop, {args.rate:g} requests/s per client, {args.phase_seconds:g} s per phase, "
              "latency from when each request was due):", "",
              "| server | 1 client p50 / p99 ms | 64 clients p50 / p99 ms | 64 clients req/s | "
              "back to 1 p50 / p99 ms | errors |", "|---|---|---|---|---|---|"]
    for name in ("fixed2", "fixed10", "adaptive"):
        key = f"step/{name}"
        errors = sum(t.median(key, f"phase{i}_errors") for i in range(3))
        cells = [f"{t.median(key, f'phase{i}_p50_ms'):.2f} / {t.spread(key, f'phase{i}_p99_ms', '{:.2f}')}"
                 for i in range(3)]
        lines.append(f"| {name} | {cells[0]} | {cells[1]} | {t.median(key, 'phase1_rps'):,.0f} | {cells[2]} | "
                     f"{errors:.0f} |")
    lines.append(END)
    return "\n".join(lines) + "\n"


def write(out: Path, report: str) -> None:
    text = out.read_text() if out.exists() else ""
    if START in text and END in text:
        text = text[:text.index(START)] + report.rstrip("\n") + text[text.index(END) + len(END):]
    elif "\n## Analysis" in text:
        head, _, tail = text.partition("\n## Analysis")
        first, nl, rest = tail.partition("\n")
        text = f"{head}\n## Analysis{first}\n\n{report}{nl}{rest}"
    else:
        text = text + ("\n## Analysis\n\n" if text else "## Analysis\n\n") + report
    out.write_text(text)


if __name__ == "__main__":
    sys.exit(main())
