"""Open-loop HTTP load in phases: clients that send at a fixed rate, whatever the answers.

    python bench/openloop.py --target 127.0.0.1:8501 --path /v1/models/mnist:predict \
        --body body.json --phases 1,64,1 --rate 40 --phase-seconds 4 --procs 4

Each client owns one keep-alive connection and sends a request every ``1 / rate`` seconds
(its schedule starts at a random offset, so 64 clients do not send in step). A client is
active in a phase if its index is below that phase's client count. A request's latency is
counted from the time it was *due*, not from when it could be sent: when the connection is
still waiting for an earlier answer the next request waits too, and that wait counts (as
wrk2 does), so a server falling behind shows in the percentiles instead of slowing the
clients down (a closed loop hides queueing that way).

Prints one JSON object: per phase ``{"clients", "sent", "answered", "errors", "rps",
"p50_ms", "p99_ms", "max_ms"}``. Pin it with ``taskset`` to a core the server does not use.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import random
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from loadgen import read_response  # noqa: E402


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, max(0, int(round(q * (len(values) - 1)))))]


async def _client(index: int, host: str, port: int, request: bytes, phases: list[int], rate: float,
                  phase_seconds: float, start_at: float, out: list[list[tuple[float, bool]]]) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    interval = 1.0 / rate
    due = start_at + random.random() * interval
    end_at = start_at + phase_seconds * len(phases)
    try:
        while due < end_at:
            phase = int((due - start_at) // phase_seconds)
            if index >= phases[phase]:  # not active in this phase: skip to the next one
                due += interval
                continue
            delay = due - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            writer.write(request)
            status = await read_response(reader)
            out[phase].append((time.time() - due, status == 200))
            due += interval
    finally:
        writer.close()


def _worker(args: argparse.Namespace, indices: list[int], phases: list[int], start_at: float,
            pipe: "mp.connection.Connection") -> None:
    try:
        import uvloop  # noqa: PLC0415

        uvloop.install()
    except ImportError:
        pass
    with open(args.body, "rb") as f:
        body = f.read()
    host, _, port = args.target.rpartition(":")
    request = (f"POST {args.path} HTTP/1.1\r\nHost: {args.target}\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    out: list[list[tuple[float, bool]]] = [[] for _ in phases]

    async def main() -> None:
        await asyncio.gather(*(_client(i, host, int(port), request, phases, args.rate, args.phase_seconds,
                                       start_at, out) for i in indices))

    asyncio.run(main())
    pipe.send(out)
    pipe.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", required=True)
    ap.add_argument("--path", required=True)
    ap.add_argument("--body", required=True)
    ap.add_argument("--phases", default="1,64,1", help="active clients per phase")
    ap.add_argument("--rate", type=float, default=40.0, help="requests per second per active client")
    ap.add_argument("--phase-seconds", type=float, default=4.0)
    ap.add_argument("--procs", type=int, default=4)
    args = ap.parse_args(argv)
    phases = [int(p) for p in args.phases.split(",")]
    clients = max(phases)
    procs = max(1, min(args.procs, clients))
    start_at = time.time() + 0.5 + 0.3 * procs
    ctx = mp.get_context("fork")
    pipes, workers = [], []
    for p in range(procs):
        # client i in process i % procs: every phase's clients spread over the processes
        recv, send = ctx.Pipe(duplex=False)
        w = ctx.Process(target=_worker, args=(args, list(range(p, clients, procs)), phases, start_at, send))
        w.start()
        pipes.append(recv)
        workers.append(w)
    merged: list[list[tuple[float, bool]]] = [[] for _ in phases]
    for recv, w in zip(pipes, workers):
        for phase, samples in enumerate(recv.recv()):
            merged[phase].extend(samples)
        w.join()
    report = []
    for phase, samples in enumerate(merged):
        ok = [lat for lat, good in samples if good]
        report.append({
            "clients": phases[phase], "sent": len(samples), "answered": len(ok),
            "errors": len(samples) - len(ok), "rps": len(ok) / args.phase_seconds,
            "p50_ms": _percentile(ok, 0.50) * 1e3, "p99_ms": _percentile(ok, 0.99) * 1e3,
            "max_ms": max(ok) * 1e3 if ok else float("nan"),
        })
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
