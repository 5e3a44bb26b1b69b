"""Fuzzing both front ends of one real server with hypothesis: random REST paths,
methods and bodies (JSON of any shape, and mutations of valid bodies), random gRPC
messages (mutated bytes of valid requests, and well-formed requests of random dtypes and
shapes) to every method.

Whatever comes in: no 5xx and no INTERNAL/UNKNOWN (a crash would be one), the server
stays up, and a health probe every 50 ms never waits a second (no stall). The seed is
fixed (`derandomize`), so CI runs the same cases every time; for a longer run, set
PYSERVING_FUZZ_EXAMPLES (per test; default 400).
"""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.parse

import grpc
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    predict_pb2,
)

import modelgen
from support import ServerProcess

EXAMPLES = int(os.environ.get("PYSERVING_FUZZ_EXAMPLES", "400"))
FUZZ = settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("fuzz") / "m"
    modelgen.make_half_plus_two(base, 1)
    with ServerProcess("--model_name=m", f"--model_base_path={base}", "--rest_api_read_timeout_seconds=5",
                       "--max_request_tensor_bytes=64000000") as s:
        yield s


@pytest.fixture(scope="module")
def prober(server):
    """GET /healthz every 50 ms for the whole module; `worst` is the slowest answer."""

    class Prober:
        worst = 0.0
        failures: list[str] = []

    stop = threading.Event()

    def run() -> None:
        session = requests.Session()
        while not stop.wait(0.05):
            started = time.monotonic()
            try:
                session.get(server.url + "/healthz", timeout=10).raise_for_status()
            except requests.RequestException as exc:
                Prober.failures.append(repr(exc))
            Prober.worst = max(Prober.worst, time.monotonic() - started)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    yield Prober
    stop.set()
    thread.join(30)


def check_alive(server, prober) -> None:
    assert server.proc.poll() is None, server.output_unlocked()
    assert not prober.failures, prober.failures[:3]
    assert prober.worst < 1.0, f"a health probe waited {prober.worst:.2f} s"


# -- REST -------------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=30,
)
keys = st.sampled_from(["instances", "inputs", "signature_name", "examples", "context", "b64", "x"])
documents = st.one_of(
    json_values,
    st.dictionaries(keys, json_values, max_size=3),
    st.builds(lambda v: {"instances": v}, json_values),
    st.builds(lambda v: {"inputs": {"x": v}}, json_values),
)
valid_body = b'{"instances": [1.0, 2.0, [3.0], {"x": 4.0}]}'


@st.composite
def mutated(draw, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 6))):
        pos = draw(st.integers(0, max(0, len(out) - 1)))
        kind = draw(st.sampled_from(["flip", "insert", "delete"]))
        byte = draw(st.integers(0, 255))
        if kind == "flip" and out:
            out[pos] = byte
        elif kind == "insert":
            out.insert(pos, byte)
        elif out:
            del out[pos]
    return bytes(out)


bodies = st.one_of(
    documents.map(lambda d: json.dumps(d, allow_nan=True).encode()),
    mutated(valid_body),
    st.binary(max_size=64),
)
segments = st.one_of(
    st.sampled_from(["v1", "models", "m", "versions", "1", "labels", "stable", "metadata", "", "..",
                     "m:predict", "m:classify", "m:regress", "m:nope", "99999999999999999999999"]),
    st.text(max_size=8),
)
paths = st.one_of(
    st.sampled_from(["/v1/models/m", "/v1/models/m:predict", "/v1/models/m/versions/1:predict",
                     "/v1/models/m/metadata", "/healthz", "/readyz"]),
    st.lists(segments, min_size=1, max_size=6).map(lambda parts: "/" + "/".join(parts)),
)


@FUZZ
@given(method=st.sampled_from(["GET", "POST", "PUT", "OPTIONS", "DELETE"]), path=paths, body=bodies)
def test_rest_answers_every_request_without_a_server_error(server, prober, method, path, body):
    url = server.url + urllib.parse.quote(path, safe="/:%")
    r = requests.request(method, url, data=body if method != "GET" else None, timeout=10)
    assert r.status_code < 500, (method, path, body[:200], r.status_code, r.text[:300])
    check_alive(server, prober)


# -- gRPC -------------------------------------------------------------------------------------

SERVICES = {
    "/tensorflow.serving.PredictionService/Predict": predict_pb2.PredictResponse,
    "/tensorflow.serving.PredictionService/Classify": classification_pb2.ClassificationResponse,
    "/tensorflow.serving.PredictionService/GetModelMetadata": get_model_metadata_pb2.GetModelMetadataResponse,
    "/tensorflow.serving.ModelService/GetModelStatus": get_model_status_pb2.GetModelStatusResponse,
}


def valid_predict() -> bytes:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "m"
    x = request.inputs["x"]
    x.dtype = types_pb2.DT_FLOAT
    x.tensor_shape.dim.add().size = 3
    x.float_val.extend([1.0, 2.0, 3.0])
    return request.SerializeToString()


SERVER_SIDE = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}


@pytest.fixture(scope="module")
def channel(server):
    with grpc.insecure_channel(server.grpc_target) as ch:
        yield ch


def call(channel, method: str, payload: bytes) -> grpc.StatusCode:
    stub = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
    try:
        stub(payload, timeout=10)
        return grpc.StatusCode.OK
    except grpc.RpcError as err:
        assert err.code() != grpc.StatusCode.DEADLINE_EXCEEDED, (method, payload[:100])
        assert err.code() not in SERVER_SIDE, (method, payload[:100], err.code(), err.details())
        return err.code()


@FUZZ
@given(method=st.sampled_from(sorted(SERVICES)), payload=mutated(valid_predict()) | st.binary(max_size=64))
def test_grpc_answers_every_message_without_a_server_error(server, prober, channel, method, payload):
    call(channel, method, payload)
    check_alive(server, prober)


dtypes = st.sampled_from([v for k, v in types_pb2.DataType.items() if not k.endswith("_REF")])


@FUZZ
@given(dtype=dtypes, shape=st.lists(st.integers(-2, 40), max_size=4), values=st.lists(st.floats(), max_size=8),
       content=st.binary(max_size=32), alias=st.sampled_from(["x", "y", ""]),
       signature=st.sampled_from(["", "serving_default", "regress_x_to_y", "nope"]))
def test_grpc_predict_of_random_tensors_never_fails_on_the_server_side(
        server, prober, channel, dtype, shape, values, content, alias, signature):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "m"
    request.model_spec.signature_name = signature
    tensor = request.inputs[alias]
    tensor.dtype = dtype
    for d in shape:
        tensor.tensor_shape.dim.add().size = d
    if content:
        tensor.tensor_content = content
    else:
        tensor.float_val.extend(values)
    call(channel, "/tensorflow.serving.PredictionService/Predict", request.SerializeToString())
    check_alive(server, prober)
