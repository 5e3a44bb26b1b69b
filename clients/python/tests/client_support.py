"""Starting pyserving from the client's tests: the server runs in the repository's
environment (it needs TensorFlow), the tests in one that has only the client."""

from __future__ import annotations

import os
from pathlib import Path

from support import ServerProcess

REPO = Path(__file__).resolve().parents[3]


def server_python() -> str:
    explicit = os.environ.get("PYSERVING_SERVER_PYTHON")
    if explicit:
        return explicit
    venv = Path(os.environ.get("PYSERVING_VENV", ".venv"))
    return str((venv if venv.is_absolute() else REPO / venv) / "bin" / "python")


def pyserving(*args: str) -> ServerProcess:
    """A pyserving server process (not started) on free loopback ports."""
    return ServerProcess(*args, command=[server_python(), "-m", "pyserving"])
