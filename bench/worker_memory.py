"""Resident memory across version swaps: one process against workers recycled after unloads.

A swap is a new version folder of the MNIST CNN (the next number) replacing the served one
(latest-1 policy): the new one loads, the old one unloads. TensorFlow keeps some of an
unloaded version's memory, so a long-running process grows with every swap
(tensorflow/serving#2017, #1664, #1215). With `--workers=2 --recycle_workers_on_unload`
each worker is replaced (one at a time, after its replacement has loaded) once it has
unloaded a version, which gives that memory back to the system.

Reports the server's total RSS (supervisor and workers) after the first swap and after the
last, for both configurations, and their ratio (target for the recycled workers: within
10%). Usage: `python bench/worker_memory.py [--swaps 30] [--json PATH]`; about 1 minute
for one process and 10 s per swap with recycled workers on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))

from run import free_port, machine  # noqa: E402
from support import child_pids  # noqa: E402


def tree_rss_bytes(pid: int) -> int:
    """RSS of `pid` and its children (the workers)."""
    total = 0
    for p in [pid, *child_pids(pid)]:
        try:
            total += int(Path(f"/proc/{p}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            pass
    return total


class Log:
    """The server's output, read on a thread; `wait(text, start)` blocks until a line has it."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._proc = proc
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            with self._cond:
                self.lines.append(line)
                self._cond.notify_all()
        with self._cond:
            self.lines.append("<exited>")
            self._cond.notify_all()

    def wait(self, text: str, start: int = 0, count: int = 1, timeout: float = 300) -> int:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                hits = [i for i in range(start, len(self.lines)) if text in self.lines[i]]
                if len(hits) >= count:
                    return hits[count - 1] + 1
                if self.lines and self.lines[-1] == "<exited>":
                    raise RuntimeError("server exited:\n" + "".join(self.lines[-30:]))
                if not self._cond.wait(max(0.0, deadline - time.monotonic())):
                    raise RuntimeError(f"no {text!r} within {timeout} s:\n" + "".join(self.lines[-30:]))


def measure(store: Path, base: Path, swaps: int, workers: int) -> dict[str, float]:
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    shutil.copytree(store / "1", base / "1")
    args = [sys.executable, "-m", "pyserving", f"--rest_api_port={free_port()}", f"--port={free_port()}",
            "--model_name=mnist", f"--model_base_path={base}", "--file_system_poll_wait_seconds=1"]
    if workers > 1:
        args += [f"--workers={workers}", "--recycle_workers_on_unload"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    log = Log(proc)
    every = " (every worker)" if workers > 1 else ""
    try:
        mark = log.wait("Server ready")
        after: list[int] = []
        for swap in range(1, swaps + 1):
            new, old = swap + 1, swap
            tmp = base / f".tmp-{new}"
            shutil.copytree(store / str(1 + swap % 2), tmp)  # two different exports, alternating
            os.rename(tmp, base / str(new))
            mark = log.wait(f"{{name: mnist version: {old}}} is END{every}", mark)
            if workers > 1:  # every worker replaced, and the old ones gone
                mark = log.wait("Server stopped", mark, count=workers)
                while len(child_pids(proc.pid)) > workers:
                    time.sleep(0.1)
            shutil.rmtree(base / str(old))
            after.append(tree_rss_bytes(proc.pid))
            print(f"  workers={workers} swap {swap}: {after[-1] / 2**20:.0f} MiB", flush=True)
        return {"rss_after_first_mib": after[0] / 2**20, "rss_after_last_mib": after[-1] / 2**20,
                "growth": after[-1] / after[0]}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(120)
        except subprocess.TimeoutExpired:
            proc.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--swaps", type=int, default=30)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    import modelgen

    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "store"
        modelgen.make_mnist_cnn(store, 1, seed=0)
        modelgen.make_mnist_cnn(store, 2, seed=1)
        results = {
            "one process": measure(store, Path(tmp) / "single", args.swaps, 1),
            "2 workers, recycled": measure(store, Path(tmp) / "workers", args.swaps, 2),
        }
    info = machine()
    print("\n" + ", ".join(f"{k}: {v}" for k, v in info.items()))
    print(f"\n| {args.swaps} swaps of the MNIST CNN | RSS after the first | after the last | growth |")
    print("|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['rss_after_first_mib']:.0f} MiB | {r['rss_after_last_mib']:.0f} MiB | "
              f"{(r['growth'] - 1) * 100:+.1f}% |")
    if args.json:
        args.json.write_text(json.dumps({"swaps": args.swaps, "results": results, "machine": info}, indent=2))


if __name__ == "__main__":
    main()
