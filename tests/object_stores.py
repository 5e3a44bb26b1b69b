"""Real object store servers on loopback, for the tests of model stores.

Four servers, each a subprocess on 127.0.0.1 on a free port:

    kind      scheme  server                                data kept by stop()/start()
    moto      s3      moto_server (PyPI, moto[server])      no: moto keeps everything in memory
    s3rver    s3      s3rver 3.7.1 (npm)                    yes (a directory of its own)
    gcs       gs      gcp-storage-emulator (PyPI)           yes (stored on disk)
    azurite   az      azurite-blob 3.37.0 (npm)             yes (-l, a directory of its own)

tests/conftest.py has one session-scoped fixture per kind (`moto_store`, ...) and
`any_store`, each of the four in turn. A test reaches a store in two ways:

* as pyserving does: `store.env` is exactly the environment a pyserving process needs
  (give it to `ServerProcess(env=...)`, or to `stores.split_remote(url, env=...)`);
* as the person uploading models does: `store.fs` is an fsspec filesystem built here,
  independently of pyserving's `sources/stores.py`, with `upload_dir`, `write`, `remove`...

Stores are shared by the whole session: a test makes its own bucket (`new_bucket()`), and a
test that calls `stop()` calls `start()` again before it ends.

Readiness is the server's own "listening" line, read from its output (support.ServerProcess);
a server that does not print it within START_TIMEOUT_SECONDS fails the test with its output.
A missing server or library skips the test with one line saying how to install it
(`scripts/setup dev`), and fails it under CI=true, where it must be installed.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, NoReturn

import pytest

from support import REPO, ServerProcess, free_port

IN_CI = os.environ.get("CI", "").lower() == "true"
NODE_BIN = REPO / "tests" / "stores" / "node_modules" / ".bin"
START_TIMEOUT_SECONDS = 60
REGION = "us-east-1"
# Azurite's well-known development account (Azure's documentation publishes the key).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def unavailable(message: str) -> NoReturn:
    """Skip the test, or fail it under CI=true, where every store must be installed."""
    if IN_CI:
        pytest.fail(f"{message} (CI must have it: scripts/setup dev installs it)", pytrace=False)
    pytest.skip(message)


def _python_tool(name: str, package: str) -> str:
    path = Path(sys.executable).parent / name
    if not path.exists():
        unavailable(f"{name} not found next to {sys.executable} (pip install '{package}', or scripts/setup dev)")
    return str(path)


def _node_tool(name: str, package: str) -> str:
    path = NODE_BIN / name
    if not path.exists():
        unavailable(f"{name} not found in {NODE_BIN} ({package} from npm: scripts/setup dev installs "
                    "tests/stores/package-lock.json, with Node.js >= 20 and npm)")
    return str(path)


def _library(module: str) -> Any:
    try:
        return __import__(module)
    except ImportError:
        unavailable(f"the {module} library is not installed (pip install {module}, or scripts/setup dev)")


class ObjectStore:
    """One store server and a client of it. Not thread-safe: one test at a time drives it."""

    kind = ""
    scheme = ""
    persistent = True  # whether stop() then start() keeps the buckets and objects
    ready = ""  # the text of the line the server prints once it accepts connections
    libraries: tuple[str, ...] = ()  # the Python modules `fs` and the tests need

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = 0  # 0 until the first start: some servers pick a free port and say which
        self.process: ServerProcess | None = None
        self.fs: Any = None

    # -- what a subclass says ----------------------------------------------------------
    def command(self) -> list[str]:
        raise NotImplementedError

    def server_env(self) -> dict[str, str]:
        return {}

    @property
    def env(self) -> dict[str, str]:
        """The environment a pyserving process needs to reach this store."""
        raise NotImplementedError

    def make_fs(self) -> Any:
        raise NotImplementedError

    # -- lifecycle -----------------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start the server (again on the same port after `stop()`); returns once it listens."""
        assert self.process is None or self.process.proc is None or self.process.proc.poll() is not None
        for module in self.libraries:
            _library(module)
        process = ServerProcess(rest=False, grpc=False, command=self.command(),
                                env={"PYTHONUNBUFFERED": "1", **self.server_env()})
        process.args = []
        self.process = process.launch()
        try:
            line = process.lines[process.wait_for_log(self.ready, START_TIMEOUT_SECONDS)]
        except AssertionError as exc:
            self._kill()
            raise AssertionError(f"{self.kind} did not start: {exc}") from None
        if not self.port:
            found = re.search(r"127\.0\.0\.1:(\d+)", line)
            assert found, f"{self.kind}: no port in {line!r}"
            self.port = int(found.group(1))
        if self.fs is None:
            self.fs = self.make_fs()

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 30 s). See `persistent`."""
        if self.process is not None and self.process.proc is not None and self.process.proc.poll() is None:
            try:
                self.process.stop(timeout=30)
            finally:
                self._kill()

    def _kill(self) -> None:
        proc = self.process.proc if self.process is not None else None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    @property
    def output(self) -> str:
        """What the server printed so far."""
        return self.process.output if self.process is not None else ""

    # -- data ----------------------------------------------------------------------------
    def url(self, bucket: str, *parts: str) -> str:
        """`scheme://bucket/part/part`, e.g. `s3://models/half_plus_two/1`."""
        return "/".join([f"{self.scheme}://{bucket}", *(p.strip("/") for p in parts if p)])

    @staticmethod
    def inner(url: str) -> str:
        """`bucket/path`: the path within `fs` of a URL of this store."""
        return url.partition("://")[2].rstrip("/")

    def make_bucket(self, name: str) -> None:
        self.fs.mkdir(name)

    def new_bucket(self, prefix: str = "t") -> str:
        """A new empty bucket with a unique name (valid on all four stores)."""
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        self.make_bucket(name)
        return name

    def delete_bucket(self, name: str) -> None:
        """Delete the bucket and all its objects."""
        files = self.fs.find(name)
        if files:
            self.fs.rm(files)
        self.fs.rmdir(name)

    def write(self, url: str, data: bytes | str) -> None:
        self.fs.pipe_file(self.inner(url), data.encode() if isinstance(data, str) else data)

    def read(self, url: str) -> bytes:
        return bytes(self.fs.cat_file(self.inner(url)))

    def upload_dir(self, local_dir: Path | str, url: str, pause_seconds: float = 0.0) -> list[str]:
        """Copy the files under `local_dir` to `url`/<relative path>, one at a time in path
        order, waiting `pause_seconds` between two files (a slow upload, seen half done).
        Returns the URLs written."""
        local_dir = Path(local_dir)
        written = []
        for path in sorted(p for p in local_dir.rglob("*") if p.is_file()):
            if written and pause_seconds:
                time.sleep(pause_seconds)  # the point of this upload: a folder half-written a while
            target = f"{url.rstrip('/')}/{path.relative_to(local_dir).as_posix()}"
            self.fs.put_file(str(path), self.inner(target))
            written.append(target)
        return written

    def remove(self, url: str) -> None:
        """Delete the object at `url`, or everything under it."""
        inner = self.inner(url)
        files = self.fs.find(inner)  # the object itself, or those under the prefix
        if files:
            self.fs.rm(files)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.kind} on {self.endpoint}>"


class _S3Store(ObjectStore):
    scheme = "s3"
    libraries = ("s3fs", "boto3")
    key = secret = ""

    def make_bucket(self, name: str) -> None:
        # Not fs.mkdir: s3fs names the region as the bucket's location, and a real S3 (and
        # moto) refuses us-east-1 there.
        import boto3

        boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=self.key,
                     aws_secret_access_key=self.secret, region_name=REGION).create_bucket(Bucket=name)

    @property
    def env(self) -> dict[str, str]:
        return {"S3_ENDPOINT": f"127.0.0.1:{self.port}", "S3_USE_HTTPS": "0", "AWS_REGION": REGION,
                "AWS_ACCESS_KEY_ID": self.key, "AWS_SECRET_ACCESS_KEY": self.secret}

    def make_fs(self) -> Any:
        import s3fs

        return s3fs.S3FileSystem(key=self.key, secret=self.secret, endpoint_url=self.endpoint,
                                 client_kwargs={"region_name": REGION},
                                 config_kwargs={"s3": {"addressing_style": "path"}},
                                 use_listings_cache=False, skip_instance_cache=True)


class MotoStore(_S3Store):
    """moto's S3 (it accepts any credentials). In memory only: `stop()` loses every bucket."""

    kind = "moto"
    persistent = False
    ready = "Running on http://127.0.0.1:"
    key, secret = "moto-access-key", "moto-secret-key"

    def command(self) -> list[str]:
        return [_python_tool("moto_server", "moto[server]"), "-H", "127.0.0.1", "-p", str(self.port)]


class S3rverStore(_S3Store):
    """s3rver, a small S3 server in Node.js, on a directory that outlives restarts. It takes
    one pair of credentials only: S3RVER / S3RVER."""

    kind = "s3rver"
    ready = "S3rver listening on 127.0.0.1:"
    key = secret = "S3RVER"

    def command(self) -> list[str]:
        return [_node_tool("s3rver", "s3rver"), "-d", str(self.workdir), "-a", "127.0.0.1",
                "-p", str(self.port), "--silent"]


class GcsStore(ObjectStore):
    """gcp-storage-emulator, stored on disk: data survives restarts. It prints no port, so
    the port is chosen here."""

    kind = "gcs"
    scheme = "gs"
    libraries = ("gcsfs",)
    ready = "[SERVER] All services started"

    def command(self) -> list[str]:
        tool = _python_tool("gcp-storage-emulator", "gcp-storage-emulator")
        if not self.port:
            self.port = free_port()
        return [tool, "start", "--host", "127.0.0.1", "--port", str(self.port)]

    def server_env(self) -> dict[str, str]:
        return {"STORAGE_BASE": str(self.workdir)}  # its data directory

    @property
    def env(self) -> dict[str, str]:
        return {"STORAGE_EMULATOR_HOST": self.endpoint}

    def make_fs(self) -> Any:
        # The plain class: gcsfs's default one first asks the bucket's type over gRPC, which
        # the emulator does not speak.
        from gcsfs.core import GCSFileSystem

        return GCSFileSystem(token="anon", project="pyserving-tests", endpoint_url=self.endpoint,
                             use_listings_cache=False, skip_instance_cache=True)


class AzuriteStore(ObjectStore):
    """Azurite's Blob service with its development account; containers are the buckets
    (`az://container/path`). Data is kept on disk (-l) across restarts."""

    kind = "azurite"
    scheme = "az"
    libraries = ("adlfs",)
    ready = "Azurite Blob service successfully listens on http://127.0.0.1:"

    def command(self) -> list[str]:
        return [_node_tool("azurite-blob", "azurite"), "--blobHost", "127.0.0.1", "--blobPort", str(self.port),
                "--silent", "--skipApiVersionCheck", "--disableTelemetry", "--location", str(self.workdir)]

    @property
    def connection_string(self) -> str:
        return (f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
                f"BlobEndpoint={self.endpoint}/{AZURITE_ACCOUNT};")

    @property
    def env(self) -> dict[str, str]:
        return {"AZURE_STORAGE_CONNECTION_STRING": self.connection_string}

    def make_fs(self) -> Any:
        import adlfs

        return adlfs.AzureBlobFileSystem(connection_string=self.connection_string,
                                         use_listings_cache=False, skip_instance_cache=True)


STORES: dict[str, type[ObjectStore]] = {cls.kind: cls for cls in (MotoStore, S3rverStore, GcsStore, AzuriteStore)}


def started(kind: str, workdir: Path | None = None) -> ObjectStore:
    """A started store of `kind` (skips, or fails in CI, when it is not installed)."""
    store = STORES[kind](workdir or Path(tempfile.mkdtemp(prefix=f"store-{kind}-")))
    store.start()
    return store
