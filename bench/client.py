"""The Python client (clients/python) against `tensorflow-serving-api`: install size,
import time, and time per call.

* **install size**: the bytes on disk of each distribution and everything it requires
  (its dependency closure, from the installed files' RECORDs): pyserving-client's in its
  own environment (`<venv>-client`), tensorflow-serving-api's (TensorFlow included) in the
  repository's; numpy's share shown apart, since a numpy program has it anyway;
* **import time**: a fresh interpreter importing what a first call needs (median of 7):
  `pyserving_client` and grpc (or httpx), against `tensorflow` and TF Serving's stubs
  (the seeds' clients need `tf.make_tensor_proto`);
* **time per call**: sequential single-image predicts on the MNIST CNN (pyserving, loopback,
  server on CPU 0 and client on CPU 1 where there are two), medians of alternated blocks,
  as wall time and as the client process's CPU time per call (its own cost):
  - gRPC floor: the official stub sending one prebuilt request (no conversion at all),
  - official: `tf.make_tensor_proto` + `stub.Predict` + `tf.make_ndarray`, as the seeds do,
  - client: `Client(grpc).predict(model, image)`,
  - REST seed: `requests.post(json={"instances": img.tolist()})` + `.json()`,
  - client REST: `Client(http).predict(model, image)`.

Usage: `python bench/client.py [--calls 2000] [--blocks 5] [--json PATH]` with the
repository's environment (about a minute).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))

from run import free_port, machine  # noqa: E402

CLOSURE = r"""
import json, sys
from importlib import metadata
from packaging.requirements import Requirement

def closure(name, seen):
    key = name.lower().replace("_", "-")
    if key in seen:
        return
    dist = metadata.distribution(name)
    seen[key] = sum((f.size or 0) for f in dist.files or [])
    for spec in dist.requires or []:
        req = Requirement(spec)
        if req.marker is None or req.marker.evaluate({"extra": ""}):
            try:
                closure(req.name, seen)
            except metadata.PackageNotFoundError:
                pass

seen = {}
closure(sys.argv[1], seen)
print(json.dumps(seen))
"""


def install_size(python: str, distribution: str) -> dict[str, int]:
    out = subprocess.run([python, "-c", CLOSURE, distribution], capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def import_seconds(python: str, code: str, runs: int = 7) -> float:
    timer = f"import time\nt = time.perf_counter()\n{code}\nprint(time.perf_counter() - t)"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    times = [float(subprocess.run([python, "-c", timer], capture_output=True, text=True, check=True,
                                  env=env).stdout.split()[-1]) for _ in range(runs)]
    return statistics.median(times)


def pinned(cpu: str, cmd: list[str]) -> list[str]:
    return ["taskset", "-c", cpu, *cmd] if shutil.which("taskset") and (os.cpu_count() or 1) > 1 else cmd


def per_call(grpc_port: int, rest_port: int, calls: int, blocks: int) -> dict[str, dict[str, float]]:
    """Median microseconds per call of each way, over alternated blocks of `calls`: wall
    time, and the calling process's CPU time (the client's own cost, which other load on
    the machine disturbs less)."""
    import grpc
    import numpy as np
    import requests
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    from pyserving_client import Client

    image = np.random.default_rng(0).random((1, 28, 28, 1), dtype=np.float32)
    channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    prebuilt = predict_pb2.PredictRequest()
    prebuilt.model_spec.name = "mnist"
    prebuilt.inputs["input_image"].CopyFrom(tf.make_tensor_proto(image))
    grpc_client = Client(f"127.0.0.1:{grpc_port}")
    rest_client = Client(f"http://127.0.0.1:{rest_port}")
    session = requests.Session()
    url = f"http://127.0.0.1:{rest_port}/v1/models/mnist:predict"

    def floor():
        stub.Predict(prebuilt, 10.0)

    def official():
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "mnist"
        request.inputs["input_image"].CopyFrom(tf.make_tensor_proto(image, dtype=np.float32, shape=image.shape))
        result = stub.Predict(request, 10.0)
        return tf.make_ndarray(result.outputs["y_pred"])

    def client():
        return grpc_client.predict("mnist", image)["y_pred"]

    def rest_seed():
        return np.array(session.post(url, json={"instances": image.tolist()}).json()["predictions"])

    def client_rest():
        return rest_client.predict("mnist", image)["y_pred"]

    ways = {"gRPC floor (prebuilt request)": floor, "official stubs + tf.make_tensor_proto": official,
            "pyserving_client gRPC": client, "REST seed (requests + json)": rest_seed,
            "pyserving_client REST": client_rest}
    for fn in ways.values():  # warm up: connections, metadata cache, TF's conversion paths
        for _ in range(200):
            fn()
    wall: dict[str, list[float]] = {name: [] for name in ways}
    cpu: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(blocks):
        for name, fn in ways.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            for _ in range(calls):
                fn()
            wall[name].append((time.perf_counter() - start) / calls * 1e6)
            cpu[name].append((time.process_time() - start_cpu) / calls * 1e6)
    grpc_client.close()
    rest_client.close()
    channel.close()
    return {name: {"wall_us": statistics.median(wall[name]), "client_cpu_us": statistics.median(cpu[name])}
            for name in ways}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--blocks", type=int, default=5)
    parser.add_argument("--json", default="")
    args = parser.parse_args()
    venv = Path(sys.prefix)
    client_python = str(Path(f"{venv}-client") / "bin" / "python")

    client_size = install_size(client_python, "pyserving-client")
    official_size = install_size(sys.executable, "tensorflow-serving-api")
    imports = {
        "pyserving_client + grpc": import_seconds(client_python, "import pyserving_client, grpc"),
        "pyserving_client + httpx": import_seconds(client_python, "import pyserving_client, httpx"),
        "tensorflow + TF Serving stubs": import_seconds(
            sys.executable, "import tensorflow\nfrom tensorflow_serving.apis import predict_pb2, "
                            "prediction_service_pb2_grpc"),
    }

    from modelgen import make_mnist_cnn

    work = Path(tempfile.mkdtemp(prefix="bench-client-"))
    grpc_port, rest_port = free_port(), free_port()
    make_mnist_cnn(work / "mnist", 1)
    server = subprocess.Popen(
        pinned("0", [sys.executable, "-m", "pyserving", f"--port={grpc_port}", f"--rest_api_port={rest_port}",
                     "--model_name=mnist", f"--model_base_path={work / 'mnist'}"]),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    try:
        assert server.stdout is not None
        for line in server.stdout:
            if "Server ready" in line:
                break
        if (os.cpu_count() or 1) > 1 and shutil.which("taskset"):
            os.sched_setaffinity(0, {1})
        calls = per_call(grpc_port, rest_port, args.calls, args.blocks)
    finally:
        server.terminate()
        server.wait(60)
        shutil.rmtree(work, ignore_errors=True)

    def mb(sizes: dict[str, int], without: str = "") -> float:
        return sum(v for k, v in sizes.items() if k != without) / 1e6

    report = {
        "machine": machine(), "date": time.strftime("%Y-%m-%d"),
        "install_mb": {"pyserving-client": mb(client_size), "pyserving-client without numpy": mb(client_size, "numpy"),
                       "tensorflow-serving-api": mb(official_size),
                       "tensorflow-serving-api without numpy": mb(official_size, "numpy")},
        "install_closure": {"pyserving-client": sorted(client_size), "tensorflow-serving-api": sorted(official_size)},
        "import_seconds": imports, "per_call_us": calls,
    }
    print("install (MB):")
    for name, value in report["install_mb"].items():
        print(f"  {name:40} {value:9.1f}")
    print("import (s, median of 7 fresh interpreters):")
    for name, value in imports.items():
        print(f"  {name:40} {value:9.3f}")
    floor = calls["gRPC floor (prebuilt request)"]
    print("per call (us, sequential single MNIST image; median of blocks):")
    print(f"  {'':40} {'wall':>9} {'- floor':>9} {'client CPU':>11} {'- floor':>9}")
    for name, v in calls.items():
        print(f"  {name:40} {v['wall_us']:9.1f} {v['wall_us'] - floor['wall_us']:+9.1f} "
              f"{v['client_cpu_us']:11.1f} {v['client_cpu_us'] - floor['client_cpu_us']:+9.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
