"""Closed-loop load generator for the benchmark: gRPC (always) and HTTP (when wrk is missing).

    python bench/loadgen.py grpc --target 127.0.0.1:8500 --body req.bin \
        --concurrency 64 --procs 4 --duration 5 [--sequential]
    python bench/loadgen.py http --target 127.0.0.1:8501 --path /v1/models/m:predict \
        --body body.json --concurrency 64 --procs 4 --duration 5

``--method`` names another unary gRPC method (the Open Inference Protocol's
``/inference.GRPCInferenceService/ModelInfer`` with a serialized `ModelInferRequest`);
``--header 'Name: value'`` adds an HTTP header (and may replace the JSON content type),
``--metadata 'name: value'`` a gRPC metadata entry; ``--tls-ca ca.pem`` speaks TLS (HTTPS,
gRPC over TLS) to a server whose certificate that CA signed.

Each of ``--procs`` processes runs ``concurrency / procs`` callers; every caller sends the
same pre-built request again as soon as its previous answer arrived (a closed loop, like
wrk). gRPC requests are serialized `PredictRequest` bytes sent through a raw unary method
(no TensorFlow import in the clients, so they start fast and stay small); HTTP requests
are raw HTTP/1.1 keep-alive POSTs. ``--sequential`` uses one synchronous caller (the
latency of one client at a time). Prints one JSON object: requests, errors, rps, p50_ms,
p99_ms, client_cpu_seconds. Pin it with ``taskset`` to a core the server does not use.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import resource
import socket
import sys
import time

PREDICT_METHOD = "/tensorflow.serving.PredictionService/Predict"


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, int(round(q * (len(sorted_values) - 1)))))
    return sorted_values[index]


# ---------------------------------------------------------------------------- gRPC

_OPTIONS = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]


def _channel(kind: object, target: str, tls_ca: str | None) -> object:
    """`kind` is `grpc` or `grpc.aio`: a plain channel, or TLS checked against `tls_ca`."""
    import grpc

    if tls_ca is None:
        return kind.insecure_channel(target, options=_OPTIONS)  # type: ignore[attr-defined]
    with open(tls_ca, "rb") as f:
        credentials = grpc.ssl_channel_credentials(root_certificates=f.read())
    return kind.secure_channel(target, credentials, options=_OPTIONS)  # type: ignore[attr-defined]


async def _grpc_worker(target: str, body: bytes, callers: int, start_at: float, end_at: float,
                       timeout: float, method: str = PREDICT_METHOD, tls_ca: str | None = None,
                       metadata: tuple[tuple[str, str], ...] = ()) -> tuple[list[float], int]:
    import grpc

    latencies: list[float] = []
    errors = 0
    async with _channel(grpc.aio, target, tls_ca) as channel:  # type: ignore[attr-defined]
        call = channel.unary_unary(method)
        await call(body, timeout=timeout, metadata=metadata)  # connect + warm

        async def caller() -> None:
            nonlocal errors
            while time.time() < start_at:
                await asyncio.sleep(0.001)
            while True:
                t0 = time.perf_counter()
                if time.time() >= end_at:
                    return
                try:
                    await call(body, timeout=timeout, metadata=metadata)
                except grpc.aio.AioRpcError:
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - t0)

        await asyncio.gather(*(caller() for _ in range(callers)))
    return latencies, errors


def _grpc_sequential(target: str, body: bytes, start_at: float, end_at: float,
                     timeout: float, method: str = PREDICT_METHOD, tls_ca: str | None = None,
                     metadata: tuple[tuple[str, str], ...] = ()) -> tuple[list[float], int]:
    import grpc

    latencies: list[float] = []
    errors = 0
    with _channel(grpc, target, tls_ca) as channel:  # type: ignore[attr-defined]
        call = channel.unary_unary(method)
        for _ in range(20):
            call(body, timeout=timeout, metadata=metadata)
        while time.time() < start_at:
            time.sleep(0.001)
        while time.time() < end_at:
            t0 = time.perf_counter()
            try:
                call(body, timeout=timeout, metadata=metadata)
            except grpc.RpcError:
                errors += 1
                continue
            latencies.append(time.perf_counter() - t0)
    return latencies, errors


# ---------------------------------------------------------------------------- HTTP


async def read_response(reader: asyncio.StreamReader) -> int:
    """Read one HTTP/1.1 response (with Content-Length) off ``reader``; its status."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    await reader.readexactly(length)
    return int(head[9:12])


async def _http_caller(host: str, port: int, request: bytes, start_at: float, end_at: float,
                       latencies: list[float], errors: list[int], tls: object = None) -> None:
    reader, writer = await asyncio.open_connection(host, port, ssl=tls,
                                                   server_hostname="localhost" if tls is not None else None)
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while time.time() < start_at:
        await asyncio.sleep(0.001)
    try:
        while True:
            t0 = time.perf_counter()
            if time.time() >= end_at:
                return
            writer.write(request)
            status = await read_response(reader)
            if status == 200:
                latencies.append(time.perf_counter() - t0)
            else:
                errors[0] += 1
    finally:
        writer.close()


async def _http_worker(target: str, path: str, body: bytes, callers: int, start_at: float,
                       end_at: float, headers: tuple[str, ...] | list[str] = (),
                       tls_ca: str | None = None) -> tuple[list[float], int]:
    host, _, port = target.rpartition(":")
    fields = {"content-type": "Content-Type: application/json"}
    for header in headers:
        fields[header.split(":", 1)[0].strip().lower()] = header
    request = (
        f"POST {path} HTTP/1.1\r\nHost: {target}\r\n" + "".join(f"{h}\r\n" for h in fields.values())
        + f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    latencies: list[float] = []
    errors = [0]
    tls = None
    if tls_ca is not None:
        import ssl

        tls = ssl.create_default_context(cafile=tls_ca)
    await asyncio.gather(*(
        _http_caller(host, int(port), request, start_at, end_at, latencies, errors, tls)
        for _ in range(callers)
    ))
    return latencies, errors[0]


# ---------------------------------------------------------------------------- driver


def _worker(args: argparse.Namespace, callers: int, start_at: float, end_at: float,
            out: "mp.connection.Connection") -> None:
    with open(args.body, "rb") as f:
        body = f.read()
    try:
        import uvloop  # noqa: PLC0415

        uvloop.install()
    except ImportError:
        pass
    if args.protocol == "grpc":
        metadata = tuple((k.strip().lower(), v.strip()) for k, _, v in (m.partition(":") for m in args.metadata))
        if args.sequential:
            result = _grpc_sequential(args.target, body, start_at, end_at, args.timeout, args.method, args.tls_ca,
                                      metadata)
        else:
            result = asyncio.run(_grpc_worker(args.target, body, callers, start_at, end_at, args.timeout,
                                              args.method, args.tls_ca, metadata))
    else:
        result = asyncio.run(_http_worker(args.target, args.path, body, callers, start_at, end_at, args.header,
                                          args.tls_ca))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    out.send((result[0], result[1], usage.ru_utime + usage.ru_stime))
    out.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("protocol", choices=("grpc", "http"))
    ap.add_argument("--target", required=True)
    ap.add_argument("--path", default="/")
    ap.add_argument("--body", required=True)
    ap.add_argument("--concurrency", type=int, default=1)
    ap.add_argument("--procs", type=int, default=1)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--warmup", type=float, default=1.0, help="seconds before measuring starts")
    ap.add_argument("--timeout", type=float, default=30.0)
    ap.add_argument("--sequential", action="store_true")
    ap.add_argument("--method", default=PREDICT_METHOD, help="the unary gRPC method to call")
    ap.add_argument("--header", action="append", default=[], help="an HTTP header, 'Name: value'")
    ap.add_argument("--metadata", action="append", default=[], help="a gRPC metadata entry, 'name: value'")
    ap.add_argument("--tls-ca", default=None, help="speak TLS, trusting this CA's PEM file")
    args = ap.parse_args(argv)
    procs = 1 if args.sequential else max(1, min(args.procs, args.concurrency))
    start_at = time.time() + args.warmup + 0.5 + 0.3 * procs
    end_at = start_at + args.duration
    ctx = mp.get_context("fork")
    pipes, workers = [], []
    for i in range(procs):
        callers = args.concurrency // procs + (1 if i < args.concurrency % procs else 0)
        recv, send = ctx.Pipe(duplex=False)
        p = ctx.Process(target=_worker, args=(args, callers, start_at, end_at, send))
        p.start()
        pipes.append(recv)
        workers.append(p)
    latencies: list[float] = []
    errors = 0
    cpu = 0.0
    for recv, p in zip(pipes, workers):
        lat, err, used = recv.recv()
        latencies.extend(lat)
        errors += err
        cpu += used
        p.join()
    latencies.sort()
    print(json.dumps({
        "requests": len(latencies),
        "errors": errors,
        "rps": len(latencies) / args.duration,
        "p50_ms": _percentile(latencies, 0.50) * 1e3,
        "p99_ms": _percentile(latencies, 0.99) * 1e3,
        "client_cpu_seconds": cpu,
        "duration": args.duration,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
