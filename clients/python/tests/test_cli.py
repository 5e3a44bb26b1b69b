"""`pyserving-client` as a command, and the examples/client scripts (the seeds' client
code rewritten with the client), each run as a program against the real server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "client"
COMMAND = [sys.executable, "-m", "pyserving_client"]
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010802000000907753de0000000c4944415408d763f8cfc000"
    "000301010018dd8db00000000049454e44ae426082")


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*COMMAND, *args], capture_output=True, text=True, timeout=120)


@pytest.fixture(params=["grpc", "rest"])
def where(request, server) -> list[str]:
    return ["--grpc", server.grpc_target] if request.param == "grpc" else ["--rest", server.url]


def test_predict_prints_outputs_as_json(where, tmp_path):
    np.save(tmp_path / "x.npy", np.array([1.0, 2.0, 5.0], np.float32))
    done = run("predict", *where, "--model", "hpt", "--input", str(tmp_path / "x.npy"))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"y": {"dtype": "float32", "shape": [3], "values": [2.5, 3.0, 4.5]}}


def test_predict_with_named_inputs_saves_outputs(where, tmp_path):
    img = np.random.default_rng(0).random((1, 64, 32, 3), dtype=np.float32)
    np.save(tmp_path / "a.npy", img)
    np.savez(tmp_path / "b.npz", img2=img)
    done = run("predict", *where, "--model", "siamese", "--signature", "signature-reid",
               "--input", f"img1={tmp_path / 'a.npy'}", "--input", str(tmp_path / "b.npz"),
               "--output", str(tmp_path / "out.npz"))
    assert done.returncode == 0, done.stderr
    with np.load(tmp_path / "out.npz") as out:
        np.testing.assert_allclose(out["predict"].ravel(), [1 / (1 + np.exp(-2.0))], rtol=1e-5)


def test_metadata_and_status(where):
    done = run("metadata", *where, "--model", "hpt")
    assert done.returncode == 0, done.stderr
    x = json.loads(done.stdout)["signatures"]["serving_default"]["inputs"]["x"]
    assert x["dtype"] == "float32" and x["shape"] == [None, 1]
    done = run("status", *where, "--model", "hpt")
    assert (done.returncode, done.stdout) == (0, "version 1: AVAILABLE\n")


def test_a_failed_call_exits_1_with_one_line(where):
    done = run("status", *where, "--model", "no_such_model")
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.startswith("pyserving-client: NOT_FOUND: ") and done.stderr.count("\n") == 1


def test_a_usage_mistake_exits_2():
    assert run("predict", "--model", "hpt").returncode == 2


def test_the_installed_command(server):
    command = Path(sys.executable).parent / "pyserving-client"
    done = subprocess.run([str(command), "status", "--grpc", server.grpc_target, "--model", "hpt"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def example(name: str, *args: str) -> str:
    done = subprocess.run([sys.executable, str(EXAMPLES / name), *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_example_image_bytes(server, tmp_path):
    (tmp_path / "red.png").write_bytes(PNG)
    out = example("image_bytes.py", str(tmp_path / "red.png"), "--grpc", server.grpc_target, "--model", "image")
    assert "probabilities:" in out and "class:" in out


def test_example_rest_predict(server):
    assert example("rest_predict.py", "--rest", server.url, "--model", "mnist").startswith("Prediction: ")


def test_example_grpc_predict(server):
    assert "shape: (10000, 10)" in example("grpc_predict.py", "--grpc", server.grpc_target, "--model", "mnist")


def test_example_siamese(server):
    out = example("siamese.py", "--grpc", server.grpc_target, "--model", "siamese")
    assert float(out.split(":")[1]) == pytest.approx(1 / (1 + np.exp(-2.0)), rel=1e-5)


def test_example_detection(server):
    out = example("detection.py", "--grpc", server.grpc_target, "--model", "detection")
    assert "boxes (1, 100, 4)" in out
