"""The client's tests run in an environment that has the client and not TensorFlow; the
server they talk to is the real pyserving, started with the repository's environment.

`PYSERVING_SERVER_PYTHON` names that environment's Python (default: `.venv/bin/python`
of the repository, or `$PYSERVING_VENV/bin/python`). The models are written once per
session by it (tests/make_models.py), and one server serves every test that does not
stop, restart or reconfigure its own.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parents[2] / "tests")]

from client_support import pyserving, server_python  # noqa: E402
from support import ServerProcess  # noqa: E402

from pyserving_client import AsyncClient, Client  # noqa: E402


@pytest.fixture(scope="session")
def models(tmp_path_factory) -> Path:
    """The models' folder; `models / "models.config"` serves them all."""
    out = tmp_path_factory.mktemp("models")
    subprocess.run([server_python(), str(HERE / "make_models.py"), str(out)], check=True,
                   env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, capture_output=True)
    return out


@pytest.fixture(scope="session")
def server(models) -> Iterator[ServerProcess]:
    with pyserving(f"--model_config_file={models / 'models.config'}") as process:
        yield process


@pytest.fixture(params=["grpc", "rest"])
def target(request, server) -> str:
    return server.grpc_target if request.param == "grpc" else server.url


@pytest.fixture
def client(target) -> Iterator[Client]:
    with Client(target) as c:
        yield c


@pytest.fixture
def aclient(target) -> AsyncClient:
    return AsyncClient(target)
