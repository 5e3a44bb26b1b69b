"""`Server` built in code and run in this process, as an application embeds it: the REST
and gRPC front ends answer over loopback with real clients, and a stop leaves nothing
listening and no thread behind."""

from __future__ import annotations

import asyncio
import socket
import threading

import grpc
import pytest
import requests
import tensorflow as tf
from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc, predict_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc

import modelgen
from pyserving.model_server import Server
from pyserving.options import ServerOptions
from support import free_port


class InProcess:
    """A `Server` running on its own event loop in a thread of this process."""

    def __init__(self, options: ServerOptions) -> None:
        self.options = options
        self.server = Server(options)
        self.loop = asyncio.new_event_loop()
        self.failure: list[BaseException] = []
        ready = threading.Event()

        def serve() -> None:
            try:
                self.loop.run_until_complete(self.server.run(on_ready=ready.set))
            except BaseException as exc:  # noqa: BLE001 - reported below
                self.failure.append(exc)
                ready.set()
            finally:
                self.loop.close()

        self.thread = threading.Thread(target=serve, name="in-process-server")
        self.thread.start()
        ready.wait(120)
        assert not self.failure, self.failure

    def stop(self) -> None:
        """What SIGTERM does, then until `run()` has returned."""
        if self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.server.request_stop)
            self.thread.join(60)


@pytest.fixture(scope="module")
def running(tmp_path_factory):
    base = tmp_path_factory.mktemp("in-process") / "m"
    modelgen.make_half_plus_two(base, 1)
    running = InProcess(ServerOptions(port=free_port(), rest_api_port=free_port(), model_name="m",
                                      model_base_path=str(base), shutdown_grace_seconds=10.0))
    yield running
    running.stop()


def test_rest_predict_and_status(running):
    url = f"http://127.0.0.1:{running.options.rest_api_port}"
    r = requests.post(f"{url}/v1/models/m:predict", json={"instances": [1.0, 2.0, 5.0]}, timeout=30)
    assert r.status_code == 200 and r.json() == {"predictions": [2.5, 3.0, 4.5]}
    assert r.text == '{\n    "predictions": [2.5, 3.0, 4.5\n    ]\n}'
    status = requests.get(f"{url}/v1/models/m", timeout=30).json()
    assert status["model_version_status"][0]["state"] == "AVAILABLE"
    assert requests.get(f"{url}/readyz", timeout=30).status_code == 200


def test_grpc_predict_and_status(running):
    with grpc.insecure_channel(f"127.0.0.1:{running.options.port}") as channel:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "m"
        request.inputs["x"].CopyFrom(tf.make_tensor_proto([[1.0], [3.0]], dtype=tf.float32))
        response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=30)
        assert list(response.outputs["y"].float_val) == [2.5, 3.5]
        status = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(
            get_model_status_pb2.GetModelStatusRequest(model_spec={"name": "m"}), timeout=30)
        assert [s.version for s in status.model_version_status] == [1]


def test_parts_are_reachable(running):
    server = running.server
    assert server.rest_app is not None
    assert set(server.front_ends) == {"rest", "grpc"}
    assert server.service.status("m")[0].version == 1


def test_stop_closes_every_port_and_leaves_no_thread(running):
    """Last in this module: it stops the shared server."""
    running.stop()
    assert not running.thread.is_alive() and not running.failure
    assert running.server.threads_left_behind is False
    for port in (running.options.port, running.options.rest_api_port):
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still listening"
