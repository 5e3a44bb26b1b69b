"""What a request may make the server allocate: a 35-byte gRPC request declaring a
billion-element tensor, bodies and outputs over the per-request bound, and requests in
flight together over the server-wide one. Refused before allocating, the server's peak
memory barely moves, and the requests that fit still work."""

from __future__ import annotations

import threading

import grpc
import pytest
import requests
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

import modelgen
from support import ServerProcess

MiB = 1 << 20


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("budget") / "m"
    modelgen.make_half_plus_two(base, 1)
    # the defaults (512 MiB per request, 1 GiB in flight), as a 2 GiB container gets them
    with ServerProcess("--model_name=m", f"--model_base_path={base}") as s:
        yield s


def broadcast_request(rows: int) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "m"
    x = request.inputs["x"]
    x.dtype = types_pb2.DT_FLOAT
    x.tensor_shape.dim.add().size = rows
    x.tensor_shape.dim.add().size = 1
    x.float_val.append(1.0)
    return request


def test_a_tiny_grpc_request_declaring_gigabytes_is_refused_before_allocating(server):
    request = broadcast_request(250_000_000)
    assert request.ByteSize() < 40
    before = server.peak_rss()
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        calls = [stub.Predict.future(request, timeout=30) for _ in range(3)]
        for call in calls:
            with pytest.raises(grpc.RpcError) as err:
                call.result()
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "--max_request_tensor_bytes" in err.value.details()
        # what fits still runs, broadcast rule and all
        ok = stub.Predict(broadcast_request(1000), timeout=30)
        assert list(ok.outputs["y"].float_val[:2]) == [2.5, 2.5]
    assert server.peak_rss() - before < 100 * MiB


def test_a_rest_body_over_the_per_request_bound_answers_413(tmp_path):
    modelgen.make_half_plus_two(tmp_path / "m", 1)
    with ServerProcess("--model_name=m", f"--model_base_path={tmp_path / 'm'}",
                       "--max_request_tensor_bytes=1000000", grpc=False) as server:
        body = b'{"instances": [' + b",".join([b"1.0"] * 400_000) + b"]}"
        r = server.post("/v1/models/m:predict", data=body)
        assert r.status_code == 413, r.text
        assert "--max_request_tensor_bytes" in r.json()["error"]
        assert "retry-after" not in r.headers
        r = server.post("/v1/models/m:predict", json={"instances": [1.0, 2.0]})
        assert r.json() == {"predictions": [2.5, 3.0]}


def test_requests_in_flight_together_over_the_total_answer_429_until_the_others_end(tmp_path):
    """One slow REST upload holds its body's bytes; a second that would take the total
    over the bound is refused with 429 and Retry-After; after the first, it fits."""
    modelgen.make_half_plus_two(tmp_path / "m", 1)
    with ServerProcess("--model_name=m", f"--model_base_path={tmp_path / 'm'}", "--access_log",
                       "--max_in_flight_tensor_bytes=5000000", grpc=False) as server:
        big = b'{"instances": [' + b",".join([b"1.0"] * 500_000) + b"]}"  # 2 MB, and 2 MB of outputs
        release = threading.Event()

        def slow_upload():
            yield big[: len(big) - 10]
            release.wait(30)  # hold the connection (and the claimed bytes) open
            yield big[len(big) - 10:]

        first: dict = {}
        uploader = threading.Thread(target=lambda: first.update(r=requests.post(
            server.url + "/v1/models/m:predict", data=slow_upload(), timeout=60)))
        uploader.start()
        try:
            server.wait_for_log("POST /v1/models/m:predict started")
            refused = None
            for _ in range(100):  # the first upload's bytes arrive in pieces: until they are held
                r = server.post("/v1/models/m:predict", data=big)
                if r.status_code == 429:
                    refused = r
                    break
                assert r.status_code == 200, r.text
            assert refused is not None
            assert refused.headers["retry-after"] == "1"
            assert "--max_in_flight_tensor_bytes" in refused.json()["error"]
        finally:
            release.set()
            uploader.join(60)
        assert first["r"].status_code == 200
        assert server.post("/v1/models/m:predict", data=big).status_code == 200
