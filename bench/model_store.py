"""Serving from an S3-compatible store: time to AVAILABLE after an upload, and copy speed.

A real S3 server (moto's, on loopback) holds two models: the MNIST CNN (about 0.7 MB in
4 files) and a ~200 MB SavedModel (one big variable). For each, pyserving serves version 1
from `s3://bench/models/<model>` (poll 1 s), version 2 is uploaded whole, and the run
measures:

* **upload to AVAILABLE**: from the end of the upload to the moment the server's status
  says version 2 is AVAILABLE: the stability wait (two equal listings, one poll apart), the
  copy, and the load;
* **pyserving's copy**: the copy time the server logs ("Copied version 2 ... in X s"), and
  its throughput;
* **the store's own client**: the same files downloaded with boto3's transfer manager
  (`download_file`, which splits big objects into concurrent ranged GETs), the AWS SDK's
  fastest path; and s3fs's `get` alone (the library pyserving copies with, without the
  server around it).

The ratio pyserving copy / boto3 is the target (at most 1.5). Best of `--rounds` rounds
(each uploads a new version). Usage: `python bench/model_store.py [--rounds 3] [--big-mb 200]
[--json PATH]`; about 2 minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
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

ENV_KEYS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench-secret", "AWS_REGION": "us-east-1",
            "S3_USE_HTTPS": "0"}


def make_big_model(base: Path, version: int, megabytes: int) -> Path:
    """A SavedModel with one float32 variable of `megabytes` MB: y = x + w[0]."""
    import tensorflow as tf

    class Big(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = tf.Variable(tf.random.stateless_uniform([megabytes * 262144], seed=[1, version]))

        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
        def serve(self, x):
            return {"y": x + self.w[0]}

    module = Big()
    path = base / str(version)
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return path


class Moto:
    def __init__(self) -> None:
        self.port = free_port()
        moto = shutil.which("moto_server") or str(Path(sys.executable).with_name("moto_server"))
        self.proc = subprocess.Popen([moto, "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert self.proc.stdout is not None
        for line in self.proc.stdout:  # werkzeug says where it listens once it does
            if "Running on" in line:
                break
        threading.Thread(target=lambda: [None for _ in self.proc.stdout], daemon=True).start()  # type: ignore
        self.endpoint = f"http://127.0.0.1:{self.port}"

    def client(self):
        import boto3
        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id="bench",
                            aws_secret_access_key="bench-secret", region_name="us-east-1")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def files_of(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file())


def upload(s3, directory: Path, prefix: str) -> None:
    for path in files_of(directory):
        s3.upload_file(str(path), "bench", f"{prefix}/{path.relative_to(directory).as_posix()}")


def boto3_download(s3, prefix: str, target: Path) -> float:
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket="bench", Prefix=prefix + "/")
            for o in page.get("Contents", [])]
    started = time.perf_counter()
    for key in keys:
        local = target / key[len(prefix) + 1:]
        local.parent.mkdir(parents=True, exist_ok=True)
        s3.download_file("bench", key, str(local))
    return time.perf_counter() - started


def s3fs_download(endpoint: str, prefix: str, target: Path) -> float:
    import s3fs
    fs = s3fs.S3FileSystem(key="bench", secret="bench-secret", endpoint_url=endpoint, skip_instance_cache=True,
                           use_listings_cache=False, client_kwargs={"region_name": "us-east-1"})
    started = time.perf_counter()
    fs.get(f"bench/{prefix}/", str(target) + "/", recursive=True)
    return time.perf_counter() - started


class Server:
    def __init__(self, moto: Moto, model: str, cache: Path) -> None:
        self.rest = free_port()
        env = {**os.environ, **ENV_KEYS, "S3_ENDPOINT": f"127.0.0.1:{moto.port}", "TF_CPP_MIN_LOG_LEVEL": "2"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pyserving", "--port=0", f"--rest_api_port={self.rest}", f"--model_name={model}",
             f"--model_base_path=s3://bench/models/{model}", "--file_system_poll_wait_seconds=1",
             f"--model_cache_dir={cache}"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=str(REPO))
        self.lines: list[str] = []
        self.cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self.cond:
                self.lines.append(line)
                self.cond.notify_all()

    def wait_for(self, pattern: str, start: int = 0, timeout: float = 600) -> tuple[int, re.Match[str], float]:
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        with self.cond:
            while True:
                for i in range(start, len(self.lines)):
                    match = regex.search(self.lines[i])
                    if match:
                        return i, match, time.perf_counter()
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("server: no " + pattern + "\n" + "".join(self.lines[-30:]))
                self.cond.wait(1)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(60)


def measure(moto: Moto, model: str, export, rounds: int, work: Path) -> dict:
    s3 = moto.client()
    upload(s3, export(work / model, 1), f"models/{model}/1")
    size = sum(p.stat().st_size for p in files_of(work / model / "1"))
    server = Server(moto, model, work / f"cache-{model}")
    try:
        server.wait_for(r"Server ready")
        results = []
        for round_ in range(rounds):
            version = round_ + 2
            directory = export(work / model, version)
            mark = len(server.lines)
            upload(s3, directory, f"models/{model}/{version}")
            uploaded = time.perf_counter()
            _, _, available = server.wait_for(rf"{{name: {model} version: {version}}} is AVAILABLE", mark)
            _, copied, _ = server.wait_for(rf"Copied version {version} of model {model} .* in ([0-9.]+) s", mark)
            target = Path(tempfile.mkdtemp(dir=work))
            boto = boto3_download(s3, f"models/{model}/{version}", target)
            target2 = Path(tempfile.mkdtemp(dir=work))
            lib = s3fs_download(moto.endpoint, f"models/{model}/{version}", target2)
            shutil.rmtree(target), shutil.rmtree(target2), shutil.rmtree(directory)
            results.append({"upload_to_available_s": available - uploaded, "copy_s": float(copied.group(1)),
                            "boto3_s": boto, "s3fs_s": lib})
        best = {k: min(r[k] for r in results) for k in results[0]}
        return {"model": model, "bytes": size, "files": len(files_of(work / model / "1")), **best,
                "copy_MBps": size / best["copy_s"] / 1e6, "boto3_MBps": size / best["boto3_s"] / 1e6,
                "copy_over_boto3": best["copy_s"] / best["boto3_s"], "rounds": results}
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--big-mb", type=int, default=200)
    parser.add_argument("--json", default="")
    args = parser.parse_args()
    from modelgen import make_mnist_cnn

    moto = Moto()
    work = Path(tempfile.mkdtemp(prefix="bench-store-"))
    try:
        moto.client().create_bucket(Bucket="bench")
        rows = [measure(moto, "mnist", lambda base, v: make_mnist_cnn(base, v), args.rounds, work),
                measure(moto, "big", lambda base, v: make_big_model(base, v, args.big_mb), args.rounds, work)]
    finally:
        moto.stop()
        shutil.rmtree(work, ignore_errors=True)
    report = {"machine": machine(), "date": time.strftime("%Y-%m-%d"), "models": rows}
    print(f"{'model':8} {'MB':>7} {'files':>5} {'upload->AVAILABLE':>18} {'copy':>8} {'boto3':>8} {'s3fs':>8} "
          f"{'copy/boto3':>10}")
    for r in rows:
        print(f"{r['model']:8} {r['bytes'] / 1e6:7.1f} {r['files']:5d} {r['upload_to_available_s']:17.2f}s "
              f"{r['copy_s']:7.2f}s {r['boto3_s']:7.2f}s {r['s3fs_s']:7.2f}s {r['copy_over_boto3']:10.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
