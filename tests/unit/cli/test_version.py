"""`--version`: TF Serving's two lines (tools that parse `tensorflow_model_server --version`
keep working), with pyserving's version and the TensorFlow that is installed, and nothing
started. The image's entrypoint puts its own flags first, so `docker run IMAGE --version`
must print the same."""

from __future__ import annotations

import tomllib

import pytest

from pyserving import __version__
from pyserving.cli.main import main
from support import REPO


def expected_lines() -> list[str]:
    import tensorflow as tf

    return [f"TensorFlow ModelServer: {__version__}-pyserving", f"TensorFlow Library: {tf.__version__}"]


@pytest.mark.parametrize("argv", [
    ["--version"],
    ["--version=true"],
    # what `docker run IMAGE --version` runs: the entrypoint's flags, then the container's
    ["--port=8500", "--rest_api_port=8501", "--model_name=model", "--model_base_path=/models/model", "--version"],
], ids=["flag", "explicit", "after-the-entrypoint-flags"])
def test_version_prints_both_versions_and_starts_nothing(argv, capsys):
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.splitlines() == expected_lines()


def test_package_version_is_the_one_pyproject_declares():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert __version__ == project["version"]
