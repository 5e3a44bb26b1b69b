"""The REST app without HTTP: CPU per request of pyserving's own request path.

    python bench/app_driver.py MODEL_CONFIG BODY [--path /v1/models/mnist:predict]
        [--batching BATCHING_PARAMETERS_FILE] [--clients 64] [--seconds 3] [--rounds 3]
        [--model real|no-tf|instant] [--server-flag=--some_flag=value ...]

Starts the real server in this process (`Server`, REST and gRPC on free loopback
ports, the models of MODEL_CONFIG), then calls its ASGI app directly from `--clients`
coroutines, each POSTing BODY to `--path` over and over, and prints per round: requests/s,
CPU microseconds per request on the event-loop thread and in the whole process. With no HTTP
server and no client in the way, these move much less between runs than wrk's figures, so
small changes to the request path can be compared (run it pinned: `taskset -c 0`).

`--model` separates the costs: `no-tf` keeps batching but answers every batch with zeros
instead of running TensorFlow (the batching hand-off without the model); `instant` answers
every request with zeros at once on the event loop, as a batched model's fast path would
without its queue (the app alone; without `--batching`). Both are stand-in loaders given to
the `Server` (`loader_wrapper`): no class of the server is patched.
bench/RESULTS.md's analysis quotes this driver.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "src"))

from pyserving.cli.main import _import_tensorflow  # noqa: E402

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
_import_tensorflow()  # as the server does, before anything else imports TensorFlow

import numpy as np  # noqa: E402
import uvloop  # noqa: E402

from pyserving.cli.flags import parse_flags  # noqa: E402
from pyserving.model_server import Server  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _zeros(signature: Any, inputs: Any) -> dict[str, Any]:
    """Zeros shaped like the signature's outputs for the inputs' batch."""
    rows = next(iter(inputs.values())).shape[0]
    return {alias: np.zeros((rows, *(d if d > 0 else 1 for d in (spec.shape or (0,))[1:])), spec.np_dtype)
            for alias, spec in signature.outputs.items()}


class ZerosLoader:
    """A platform loader whose servable answers zeros instead of running TensorFlow."""

    def __init__(self, inner: Any) -> None:
        object.__setattr__(self, "_inner", inner)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._inner, name, value)

    def servable(self) -> Any:
        return ZerosServable(self._inner.servable())


class ZerosServable:
    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def run(self, signature: Any, inputs: Any, output_filter: Any = (), timeout_ms: Any = None) -> Any:
        return _zeros(signature, inputs)


class InstantServable(ZerosServable):
    """An `AsyncServable` that answers at once: the request path's fast path, no queue."""

    async def run_async(self, signature: Any, inputs: Any, output_filter: Any = (), deadline: Any = None) -> Any:
        return _zeros(signature, inputs)


class InstantLoader(ZerosLoader):
    def servable(self) -> Any:
        return InstantServable(self._inner.servable())


STAND_INS = {"no-tf": ZerosLoader, "instant": InstantLoader}


async def drive(args: argparse.Namespace) -> None:
    with open(args.body, "rb") as f:
        body = f.read()
    flags = [f"--port={free_port()}", f"--rest_api_port={free_port()}", f"--model_config_file={args.model_config}",
             "--file_system_poll_wait_seconds=0"]
    if args.batching:
        flags += ["--enable_batching", f"--batching_parameters_file={args.batching}"]
    flags += args.server_flag
    stand_in = STAND_INS.get(args.model)
    wrapper = (lambda loader, sid, path: stand_in(loader)) if stand_in is not None else None
    server = Server(parse_flags(flags)[0], loader_wrapper=wrapper)
    await server.start()
    await server.wait_ready()
    app = server.rest_app
    assert app is not None
    scope = {"type": "http", "method": "POST", "path": args.path, "raw_path": args.path.encode(),
             "query_string": b"", "headers": [(b"content-type", b"application/json"),
                                              (b"content-length", str(len(body)).encode())]}
    statuses: dict[int, int] = {}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses[message["status"]] = statuses.get(message["status"], 0) + 1

    stop = False
    count = 0

    async def client() -> None:
        nonlocal count
        while not stop:
            await app(scope, receive, send)
            count += 1
            if args.model == "instant":
                await asyncio.sleep(0)  # nothing else would let the other clients run

    for _ in range(args.rounds):
        statuses.clear()
        stop, count = False, 0
        tasks = [asyncio.create_task(client()) for _ in range(args.clients)]
        wall, loop_cpu, cpu = time.perf_counter(), time.thread_time(), time.process_time()
        await asyncio.sleep(args.seconds)
        n = count
        wall, loop_cpu, cpu = time.perf_counter() - wall, time.thread_time() - loop_cpu, time.process_time() - cpu
        stop = True
        await asyncio.gather(*tasks)
        print(f"{n / wall:8.0f} req/s   loop {1e6 * loop_cpu / n:6.1f} µs/req   "
              f"process {1e6 * cpu / n:6.1f} µs/req   statuses {dict(statuses)}", flush=True)
    server.request_stop()
    await server.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model_config")
    ap.add_argument("body")
    ap.add_argument("--path", default="/v1/models/mnist:predict")
    ap.add_argument("--batching", help="a BatchingParameters file: batching on")
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--model", choices=("real", "no-tf", "instant"), default="real")
    ap.add_argument("--server-flag", action="append", default=[], help="one more server flag (repeatable)")
    args = ap.parse_args()
    if args.model == "instant" and args.batching:
        ap.error("--model instant answers without a batch queue: leave out --batching")
    uvloop.run(drive(args))


if __name__ == "__main__":
    main()
