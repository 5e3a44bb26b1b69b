"""The Open Inference Protocol (KServe V2) against the real server process, with real clients:
raw HTTP (requests), tritonclient (HTTP and gRPC, sync and asyncio) and the gRPC stubs
tritonclient ships; and the same requests over TF Serving's V1 API for comparison.

One server for the module: the generated models (Triton's `simple`, half_plus_two, the TF2
multi-signature model) and every loadable model of TF Serving's test data tree, with
Prometheus metrics on and `--prefer_tflite_model` so the TFLite exports serve as TFLite.
"""

from __future__ import annotations

import asyncio
import base64
import json
import struct

import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcclient_aio
import tritonclient.http as httpclient
import tritonclient.http.aio as httpclient_aio
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from support import TESTDATA_MODELS, ServerProcess

CONFIG = """
model_config_list {{
  config {{ name: "simple" base_path: "{zoo}/simple" model_platform: "tensorflow" }}
  config {{ name: "half_plus_two" base_path: "{zoo}/half_plus_two" model_platform: "tensorflow" }}
  config {{ name: "tf2" base_path: "{zoo}/tf2_multi_signature" model_platform: "tensorflow" }}
""" + TESTDATA_MODELS + """  config {{ name: "tflite" base_path: "{td}/saved_model_half_plus_two_tflite" model_platform: "tensorflow" }}
  config {{ name: "tflite_sigdef" base_path: "{td}/saved_model_half_plus_two_tflite_with_sigdef"
           model_platform: "tensorflow" }}
}}
"""
MONITORING = 'prometheus_config { enable: true, path: "/monitoring/prometheus/metrics" }'


@pytest.fixture(scope="module")
def server(model_zoo, testdata, tmp_path_factory):
    d = tmp_path_factory.mktemp("v2")
    (d / "models.config").write_text(CONFIG.format(zoo=model_zoo, td=testdata))
    (d / "monitoring.config").write_text(MONITORING)
    with ServerProcess(f"--model_config_file={d / 'models.config'}", "--prefer_tflite_model",
                       f"--monitoring_config_file={d / 'monitoring.config'}") as s:
        yield s


@pytest.fixture(scope="module")
def http_client(server):
    client = httpclient.InferenceServerClient(f"127.0.0.1:{server.rest_port}")
    yield client
    client.close()


@pytest.fixture(scope="module")
def grpc_client(server):
    client = grpcclient.InferenceServerClient(server.grpc_target)
    yield client
    client.close()


@pytest.fixture(scope="module")
def grpc_stub(server):
    with grpc.insecure_channel(server.grpc_target) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


def infer(server, model, body, *, version=None, **kw):
    path = f"/v2/models/{model}" + (f"/versions/{version}" if version is not None else "") + "/infer"
    return server.post(path, json=body, **kw)


SIMPLE_A = np.arange(16, dtype=np.int32).reshape(1, 16)
SIMPLE_B = np.ones((1, 16), dtype=np.int32)


def simple_inputs(module, a=SIMPLE_A, b=SIMPLE_B, binary=True):
    i0 = module.InferInput("INPUT0", list(a.shape), "INT32")
    i1 = module.InferInput("INPUT1", list(b.shape), "INT32")
    if module in (httpclient, httpclient_aio):
        i0.set_data_from_numpy(a, binary_data=binary)
        i1.set_data_from_numpy(b, binary_data=binary)
    else:
        i0.set_data_from_numpy(a)
        i1.set_data_from_numpy(b)
    return [i0, i1]


# -- health and metadata over REST --------------------------------------------------------------


def test_server_metadata_names_the_server_and_the_binary_extension(server):
    for path in ("/v2", "/v2/"):
        r = server.get(path)
        assert r.status_code == 200 and r.headers["content-type"] == "application/json"
        assert r.json() == {"name": "pyserving", "version": "0.1.0", "extensions": ["binary_tensor_data"]}


def test_health_is_live_and_ready(server):
    assert server.get("/v2/health/live").json() == {"live": True}
    r = server.get("/v2/health/ready")
    assert (r.status_code, r.json()) == (200, {"ready": True})


def test_model_metadata_lists_the_default_signature_and_the_available_versions(server):
    meta = server.get("/v2/models/simple").json()
    assert meta == {
        "name": "simple", "versions": ["1"], "platform": "tensorflow_savedmodel",
        "inputs": [{"name": "INPUT0", "datatype": "INT32", "shape": [-1, 16]},
                   {"name": "INPUT1", "datatype": "INT32", "shape": [-1, 16]}],
        "outputs": [{"name": "OUTPUT0", "datatype": "INT32", "shape": [-1, 16]},
                    {"name": "OUTPUT1", "datatype": "INT32", "shape": [-1, 16]}],
        "properties": {"signature_name": "serving_default", "signatures": "serving_default"},
    }
    assert server.get("/v2/models/two_versions").json()["versions"] == ["123", "124"]
    assert server.get("/v2/models/tflite").json()["platform"] == "tensorflow_lite"
    other = server.get("/v2/models/tf2?signature_name=echo_bytes").json()
    assert other["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    assert {o["name"]: o["datatype"] for o in other["outputs"]} == {
        "echo_bytes": "BYTES", "upper": "BYTES", "length": "INT32"}


def test_model_ready_by_version_number_and_label(server):
    for path in ("/v2/models/two_versions/ready", "/v2/models/two_versions/versions/123/ready",
                 "/v2/models/two_versions/versions/canary/ready"):
        r = server.get(path)
        assert (r.status_code, r.json()) == (200, {"name": "two_versions", "ready": True}), path
    assert server.get("/v2/models/two_versions/versions/999/ready").status_code == 404
    assert server.get("/v2/models/nope/ready").status_code == 404
    r = server.get("/v2/models/two_versions/versions/beta/ready")
    assert r.status_code == 400 and "Unrecognized servable version label: beta" in r.json()["error"]


# -- inference over REST (JSON) -----------------------------------------------------------------


def test_infer_json_echoes_the_id_and_answers_every_output_in_signature_order(server):
    body = {"id": "42", "inputs": [
        {"name": "INPUT0", "shape": [1, 16], "datatype": "INT32", "data": SIMPLE_A.tolist()},  # nested
        {"name": "INPUT1", "shape": [1, 16], "datatype": "INT32", "data": SIMPLE_B.reshape(-1).tolist()},  # flat
    ]}
    r = infer(server, "simple", body)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert "inference-header-content-length" not in r.headers
    assert r.json() == {"model_name": "simple", "model_version": "1", "id": "42", "outputs": [
        {"name": "OUTPUT0", "datatype": "INT32", "shape": [1, 16], "data": (SIMPLE_A + SIMPLE_B).reshape(-1).tolist()},
        {"name": "OUTPUT1", "datatype": "INT32", "shape": [1, 16], "data": (SIMPLE_A - SIMPLE_B).reshape(-1).tolist()},
    ]}


def test_infer_answers_only_the_requested_outputs_in_the_requested_order(server):
    body = {"inputs": [{"name": "INPUT0", "shape": [1, 16], "datatype": "INT32", "data": SIMPLE_A.tolist()},
                       {"name": "INPUT1", "shape": [1, 16], "datatype": "INT32", "data": SIMPLE_B.tolist()}],
            "outputs": [{"name": "OUTPUT1"}]}
    out = infer(server, "simple", body).json()
    assert "id" not in out and [o["name"] for o in out["outputs"]] == ["OUTPUT1"]


def test_version_numbers_and_labels_pick_the_version(server):
    body = {"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP32", "data": [1.0]}]}
    for version, expected in (("123", "123"), ("124", "124"), ("stable", "123"), ("canary", "124"), (None, "124")):
        assert infer(server, "two_versions", body, version=version).json()["model_version"] == expected


def test_signature_name_parameter_runs_another_signature(server):
    body = {"parameters": {"signature_name": "times_three"},
            "inputs": [{"name": "x", "shape": [3], "datatype": "FP32", "data": [1.0, 2.0, 3.0]}]}
    out = infer(server, "tf2", body).json()["outputs"]
    assert out == [{"name": "y", "datatype": "FP32", "shape": [3], "data": [3.0, 6.0, 9.0]}]


def test_bytes_tensors_travel_as_json_strings(server):
    body = {"parameters": {"signature_name": "echo_bytes"}, "outputs": [{"name": "upper"}, {"name": "length"}],
            "inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": ["abc", "héllo"]}]}
    out = infer(server, "tf2", body).json()["outputs"]
    assert out[0] == {"name": "upper", "datatype": "BYTES", "shape": [2], "data": ["ABC", "HéLLO"]}
    assert out[1]["data"] == [3, 6]


def test_v1_and_v2_give_bit_identical_floats(server):
    x = np.random.default_rng(0).standard_normal((64, 1)).astype(np.float32)
    v1 = server.post("/v1/models/half_plus_two:predict", json={"instances": x.tolist()}).json()["predictions"]
    body = {"inputs": [{"name": "x", "shape": [64, 1], "datatype": "FP32", "data": x.reshape(-1).tolist()}]}
    v2 = infer(server, "half_plus_two", body).json()["outputs"][0]["data"]
    assert np.array_equal(np.asarray(v1, np.float32).reshape(-1).view(np.uint32),
                          np.asarray(v2, np.float32).view(np.uint32))


# -- the binary data extension, by hand ---------------------------------------------------------


def binary_request(header: dict, *blobs: bytes, header_length: int | None = None) -> tuple[bytes, dict]:
    text = json.dumps(header).encode()
    length = len(text) if header_length is None else header_length
    return text + b"".join(blobs), {"Inference-Header-Content-Length": str(length),
                                   "Content-Type": "application/octet-stream"}


def split_binary(response: requests.Response) -> tuple[dict, bytes]:
    length = int(response.headers["inference-header-content-length"])
    return json.loads(response.content[:length]), response.content[length:]


def test_binary_inputs_and_outputs_follow_the_json_in_order(server):
    header = {"inputs": [
        {"name": "INPUT0", "shape": [1, 16], "datatype": "INT32", "parameters": {"binary_data_size": 64}},
        {"name": "INPUT1", "shape": [1, 16], "datatype": "INT32", "parameters": {"binary_data_size": 64}}],
        "outputs": [{"name": "OUTPUT0", "parameters": {"binary_data": True}}, {"name": "OUTPUT1"}]}
    body, headers = binary_request(header, SIMPLE_A.tobytes(), (SIMPLE_B * 7).tobytes())
    r = server.post("/v2/models/simple/infer", data=body, headers=headers)
    assert r.status_code == 200 and r.headers["content-type"] == "application/octet-stream"
    doc, blob = split_binary(r)
    assert doc["outputs"][0] == {"name": "OUTPUT0", "datatype": "INT32", "shape": [1, 16],
                                 "parameters": {"binary_data_size": 64}}
    assert np.array_equal(np.frombuffer(blob, np.int32), (SIMPLE_A + 7 * SIMPLE_B).reshape(-1))
    assert doc["outputs"][1]["data"] == (SIMPLE_A - 7 * SIMPLE_B).reshape(-1).tolist()


def test_binary_data_output_asks_for_every_output_as_binary(server):
    header = {"parameters": {"binary_data_output": True}, "inputs": [
        {"name": "INPUT0", "shape": [1, 16], "datatype": "INT32", "data": SIMPLE_A.tolist()},
        {"name": "INPUT1", "shape": [1, 16], "datatype": "INT32", "parameters": {"binary_data_size": 64}}]}
    body, headers = binary_request(header, SIMPLE_B.tobytes())
    doc, blob = split_binary(server.post("/v2/models/simple/infer", data=body, headers=headers))
    assert [o["parameters"]["binary_data_size"] for o in doc["outputs"]] == [64, 64]
    assert np.array_equal(np.frombuffer(blob[64:], np.int32), (SIMPLE_A - SIMPLE_B).reshape(-1))


def test_binary_bytes_elements_are_length_prefixed(server):
    words = [b"\xff\x00raw", b"", b"abc"]
    raw = b"".join(struct.pack("<I", len(w)) + w for w in words)
    header = {"parameters": {"signature_name": "echo_bytes"}, "outputs": [{"name": "echo_bytes"}],
              "inputs": [{"name": "text", "shape": [3], "datatype": "BYTES",
                          "parameters": {"binary_data_size": len(raw)}}]}
    body, headers = binary_request(header, raw)
    r = server.post("/v2/models/tf2/infer", data=body, headers=headers)
    # not UTF-8: sent as binary data even though JSON was asked for
    doc, blob = split_binary(r)
    assert doc["outputs"][0]["parameters"] == {"binary_data_size": len(raw)} and blob == raw


# -- bad input: the spec's error, never a 5xx ---------------------------------------------------


def _simple_header(size0=64, size1=64, **extra):
    return {"inputs": [
        {"name": "INPUT0", "shape": [1, 16], "datatype": "INT32", "parameters": {"binary_data_size": size0}},
        {"name": "INPUT1", "shape": [1, 16], "datatype": "INT32", "parameters": {"binary_data_size": size1}}],
        **extra}


BAD_BINARY = {
    "sizes over the body": (_simple_header(64, 65), [SIMPLE_A.tobytes(), SIMPLE_B.tobytes()], "only 64 bytes"),
    "bytes left over": (_simple_header(64, 60), [SIMPLE_A.tobytes(), SIMPLE_B.tobytes()], "4 bytes of binary data"),
    "size not the shape's": (_simple_header(60, 68), [SIMPLE_A.tobytes(), SIMPLE_B.tobytes()],
                             "has 60 bytes of data, but shape [1,16] of INT32 needs 64"),
    "huge declared shape": ({"inputs": [
        {"name": "INPUT0", "shape": [1 << 40, 1 << 40], "datatype": "INT32", "parameters": {"binary_data_size": 4}},
        {"name": "INPUT1", "shape": [1, 16], "datatype": "INT32", "parameters": {"binary_data_size": 64}}]},
        [b"\0" * 4, SIMPLE_B.tobytes()], "needs 4835703278458516698824704"),
    "bytes element past the end": ({"parameters": {"signature_name": "echo_bytes"}, "inputs": [
        {"name": "text", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": 6}}]},
        [struct.pack("<I", 100) + b"ab"], "past the end"),
    "negative size": (_simple_header(-1, 64), [SIMPLE_B.tobytes()], "invalid 'binary_data_size'"),
}


@pytest.mark.parametrize("case", BAD_BINARY)
def test_bad_binary_data_answers_400(server, case):
    header, blobs, message = BAD_BINARY[case]
    model = "tf2" if "signature_name" in header.get("parameters", {}) else "simple"
    body, headers = binary_request(header, *blobs)
    r = server.post(f"/v2/models/{model}/infer", data=body, headers=headers)
    assert r.status_code == 400, r.text
    assert list(r.json()) == ["error"] and message in r.json()["error"]


def test_header_length_past_the_body_answers_400(server):
    body, headers = binary_request(_simple_header(), SIMPLE_A.tobytes(), header_length=10**9)
    r = server.post("/v2/models/simple/infer", data=body, headers=headers)
    assert r.status_code == 400 and "Inference-Header-Content-Length" in r.json()["error"]


def _json_input(**over):
    return {"name": "INPUT0", "shape": [1, 16], "datatype": "INT32", "data": SIMPLE_A.tolist(), **over}


GOOD_INPUT1 = {"name": "INPUT1", "shape": [1, 16], "datatype": "INT32", "data": SIMPLE_B.tolist()}
BAD_JSON = {
    "wrong datatype": ({"inputs": [_json_input(datatype="FP32"), GOOD_INPUT1]}, 400, "expects INT32"),
    "unknown datatype": ({"inputs": [_json_input(datatype="INT3"), GOOD_INPUT1]}, 400, "expects INT32"),
    "data count": ({"inputs": [_json_input(shape=[2, 16]), GOOD_INPUT1]}, 400, "needs 32"),
    "floats for INT32": ({"inputs": [_json_input(data=[0.5] * 16), GOOD_INPUT1]}, 400, "fraction"),
    "out of range": ({"inputs": [_json_input(data=[1 << 40] * 16), GOOD_INPUT1]}, 400, "range of INT32"),
    "ragged data": ({"inputs": [_json_input(data=[[1, 2], [3]]), GOOD_INPUT1]}, 400, "regular array"),
    "negative dimension": ({"inputs": [_json_input(shape=[-1, 16]), GOOD_INPUT1]}, 400, "invalid shape"),
    "huge declared shape": ({"inputs": [_json_input(shape=[1 << 62, 1 << 62]), GOOD_INPUT1]}, 400, "needs"),
    "unknown input": ({"inputs": [_json_input(name="INPUT9"), GOOD_INPUT1]}, 400, "Unexpected inference input"),
    "input twice": ({"inputs": [GOOD_INPUT1, GOOD_INPUT1]}, 400, "more than once"),
    "missing input": ({"inputs": [GOOD_INPUT1]}, 400, "input size does not match signature"),
    "unknown output": ({"inputs": [_json_input(), GOOD_INPUT1], "outputs": [{"name": "OUTPUT7"}]}, 400,
                       "Unexpected inference output 'OUTPUT7'"),
    "no data": ({"inputs": [{k: v for k, v in _json_input().items() if k != "data"}, GOOD_INPUT1]}, 400,
                "neither 'data'"),
    "no inputs": ({"id": "1"}, 400, "'inputs'"),
    "id not a string": ({"id": 7, "inputs": [_json_input(), GOOD_INPUT1]}, 400, "'id' must be a string"),
    "unknown signature": ({"parameters": {"signature_name": "nope"}, "inputs": [GOOD_INPUT1]}, 400, "nope"),
    "binary size without the header": ({"inputs": [_json_input(parameters={"binary_data_size": 64}, data=None)]},
                                       400, "both 'data'"),
    "classification": ({"inputs": [_json_input(), GOOD_INPUT1],
                        "outputs": [{"name": "OUTPUT0", "parameters": {"classification": 2}}]}, 400,
                       "classification extension"),
}


@pytest.mark.parametrize("case", BAD_JSON)
def test_bad_json_requests_answer_the_spec_error(server, case):
    body, status, message = BAD_JSON[case]
    r = infer(server, "simple", body)
    assert r.status_code == status, r.text
    assert list(r.json()) == ["error"] and message in r.json()["error"], r.json()


@pytest.mark.parametrize("path,method,status", [
    ("/v2/models/nope/infer", "POST", 404),
    ("/v2/models/simple/versions/7/infer", "POST", 404),
    ("/v2/models/simple/versions/99999999999999999999/infer", "POST", 400),
    ("/v2/models/nope", "GET", 404),
    ("/v2/models/simple/infer", "GET", 405),
    ("/v2/models/simple", "POST", 405),
    ("/v2/health/live", "POST", 405),
    ("/v2/nothing/here", "GET", 404),
    ("/v2/models/simple/versions/1/what", "GET", 404),
])
def test_unknown_models_paths_and_methods_answer_json_errors(server, path, method, status):
    body = {"inputs": [_json_input(), GOOD_INPUT1]}
    r = requests.request(method, server.url + path, json=body, timeout=30)
    assert r.status_code == status, r.text
    assert list(r.json()) == ["error"]


def test_malformed_json_answers_400(server):
    r = server.post("/v2/models/simple/infer", data=b'{"inputs": [', headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "Failed to parse the request as JSON" in r.json()["error"]


# -- tritonclient, HTTP: Triton's simple_http_infer_client, sync and asyncio --------------------


def test_tritonclient_http_health_and_metadata(http_client):
    assert http_client.is_server_live() and http_client.is_server_ready()
    assert http_client.is_model_ready("simple") and http_client.is_model_ready("two_versions", "stable")
    assert not http_client.is_model_ready("nope")
    assert http_client.get_server_metadata()["extensions"] == ["binary_tensor_data"]
    assert http_client.get_model_metadata("simple")["inputs"][0]["name"] == "INPUT0"


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_tritonclient_http_simple_infer(http_client, binary):
    outputs = [httpclient.InferRequestedOutput("OUTPUT0", binary_data=binary),
               httpclient.InferRequestedOutput("OUTPUT1", binary_data=False)]
    result = http_client.infer("simple", simple_inputs(httpclient, binary=binary), outputs=outputs, request_id="1")
    assert result.get_response()["id"] == "1"
    assert np.array_equal(result.as_numpy("OUTPUT0"), SIMPLE_A + SIMPLE_B)
    assert np.array_equal(result.as_numpy("OUTPUT1"), SIMPLE_A - SIMPLE_B)
    # no outputs named: every output, binary by default
    everything = http_client.infer("simple", simple_inputs(httpclient, binary=binary))
    assert np.array_equal(everything.as_numpy("OUTPUT1"), SIMPLE_A - SIMPLE_B)


def test_tritonclient_http_errors_carry_the_status_and_message(http_client):
    with pytest.raises(InferenceServerException) as err:
        http_client.infer("nope", simple_inputs(httpclient))
    assert err.value.status() == "404"
    bad = httpclient.InferInput("INPUT0", [1, 16], "FP32")
    bad.set_data_from_numpy(SIMPLE_A.astype(np.float32))
    with pytest.raises(InferenceServerException) as err:
        http_client.infer("simple", [bad, simple_inputs(httpclient)[1]])
    assert err.value.status() == "400" and "expects INT32" in err.value.message()


def test_tritonclient_http_aio_runs_concurrent_requests(server):
    async def main():
        client = httpclient_aio.InferenceServerClient(f"127.0.0.1:{server.rest_port}")
        try:
            assert await client.is_server_ready()
            a = [np.full((1, 16), i, np.int32) for i in range(8)]
            results = await asyncio.gather(*(client.infer("simple", simple_inputs(httpclient_aio, x)) for x in a))
            return [r.as_numpy("OUTPUT0") for r in results]
        finally:
            await client.close()

    for i, out in enumerate(asyncio.run(main())):
        assert np.array_equal(out, np.full((1, 16), i + 1, np.int32))


# -- tritonclient, gRPC: Triton's simple_grpc_infer_client, sync and asyncio --------------------


def test_tritonclient_grpc_health_and_metadata(grpc_client):
    assert grpc_client.is_server_live() and grpc_client.is_server_ready()
    assert grpc_client.is_model_ready("simple") and grpc_client.is_model_ready("two_versions", "124")
    assert not grpc_client.is_model_ready("nope")
    assert list(grpc_client.get_server_metadata().extensions) == ["binary_tensor_data"]
    meta = grpc_client.get_model_metadata("two_versions", "stable", as_json=True)
    assert meta["versions"] == ["123", "124"] and meta["platform"] == "tensorflow_savedmodel"
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": ["-1", "1"]}]


def test_tritonclient_grpc_simple_infer(grpc_client):
    outputs = [grpcclient.InferRequestedOutput("OUTPUT0"), grpcclient.InferRequestedOutput("OUTPUT1")]
    result = grpc_client.infer("simple", simple_inputs(grpcclient), outputs=outputs, request_id="7")
    response = result.get_response()
    assert (response.model_name, response.model_version, response.id) == ("simple", "1", "7")
    assert np.array_equal(result.as_numpy("OUTPUT0"), SIMPLE_A + SIMPLE_B)
    assert np.array_equal(result.as_numpy("OUTPUT1"), SIMPLE_A - SIMPLE_B)
    only = grpc_client.infer("simple", simple_inputs(grpcclient), outputs=[grpcclient.InferRequestedOutput("OUTPUT1")])
    assert only.as_numpy("OUTPUT0") is None and only.as_numpy("OUTPUT1") is not None


def test_tritonclient_grpc_signature_and_version_label(grpc_client):
    x = grpcclient.InferInput("x", [2], "INT64")
    x.set_data_from_numpy(np.array([1, 1 << 40], np.int64))
    result = grpc_client.infer("tf2", [x], parameters={"signature_name": "add_one_int64"})
    assert result.as_numpy("y").tolist() == [2, (1 << 40) + 1]
    y = grpcclient.InferInput("x", [1, 1], "FP32")
    y.set_data_from_numpy(np.array([[2.0]], np.float32))
    assert grpc_client.infer("two_versions", [y], model_version="canary").get_response().model_version == "124"


def test_tritonclient_grpc_errors_are_status_codes(grpc_client):
    with pytest.raises(InferenceServerException) as err:
        grpc_client.infer("nope", simple_inputs(grpcclient))
    assert err.value.status() == "StatusCode.NOT_FOUND"
    bad = grpcclient.InferInput("INPUT0", [1, 16], "INT32")
    bad.set_data_from_numpy(np.zeros((1, 16), np.int32))
    bad.set_shape([2, 16])  # 64 bytes for a [2,16] shape
    with pytest.raises(InferenceServerException) as err:
        grpc_client.infer("simple", [bad, simple_inputs(grpcclient)[1]])
    assert err.value.status() == "StatusCode.INVALID_ARGUMENT" and "needs 128" in err.value.message()


def test_tritonclient_grpc_aio(server):
    async def main():
        client = grpcclient_aio.InferenceServerClient(server.grpc_target)
        try:
            assert await client.is_model_ready("simple")
            results = await asyncio.gather(*(client.infer("simple", simple_inputs(grpcclient_aio)) for _ in range(4)))
            return [r.as_numpy("OUTPUT1") for r in results]
        finally:
            await client.close()

    for out in asyncio.run(main()):
        assert np.array_equal(out, SIMPLE_A - SIMPLE_B)


def test_grpc_typed_contents_are_accepted(grpc_stub):
    request = service_pb2.ModelInferRequest(model_name="simple", id="typed")
    for name, array in (("INPUT0", SIMPLE_A), ("INPUT1", SIMPLE_B)):
        tensor = request.inputs.add(name=name, datatype="INT32", shape=[1, 16])
        tensor.contents.int_contents.extend(array.reshape(-1).tolist())
    response = grpc_stub.ModelInfer(request)
    assert response.id == "typed" and [o.name for o in response.outputs] == ["OUTPUT0", "OUTPUT1"]
    assert np.array_equal(np.frombuffer(response.raw_output_contents[0], np.int32), (SIMPLE_A + SIMPLE_B).reshape(-1))


@pytest.mark.parametrize("mutate,message", [
    (lambda r: r.inputs[0].contents.int_contents.append(1), "17 elements of data"),
    (lambda r: r.raw_input_contents.append(b"\0" * 64), "raw_input_contents for 2 inputs"),
    (lambda r: setattr(r.inputs[0], "datatype", "FP16"), "expects INT32"),
    (lambda r: r.outputs.add(name="nope"), "Unexpected inference output 'nope'"),
    (lambda r: r.parameters["signature_name"].int64_param.__class__ and
     r.parameters["signature_name"].MergeFrom(service_pb2.InferParameter(int64_param=3)), "must be a string_param"),
])
def test_grpc_bad_requests_answer_invalid_argument(grpc_stub, mutate, message):
    request = service_pb2.ModelInferRequest(model_name="simple")
    for name, array in (("INPUT0", SIMPLE_A), ("INPUT1", SIMPLE_B)):
        tensor = request.inputs.add(name=name, datatype="INT32", shape=[1, 16])
        tensor.contents.int_contents.extend(array.reshape(-1).tolist())
    mutate(request)
    with pytest.raises(grpc.RpcError) as err:
        grpc_stub.ModelInfer(request)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and message in err.value.details()


# -- every model of TF Serving's test data: the same numbers over V1 and V2 ---------------------


def _example(value: float) -> bytes:
    return tf.train.Example(features=tf.train.Features(feature={
        "x": tf.train.Feature(float_list=tf.train.FloatList(value=[value]))})).SerializeToString()


def _make_input(meta: dict, rng: np.random.Generator) -> np.ndarray:
    shape = [3 if d < 0 else d for d in meta["shape"]]
    if meta["datatype"] == "BYTES":
        flat = np.array([_example(float(v)) for v in rng.standard_normal(int(np.prod(shape)))], dtype=object)
        return flat.reshape(shape)
    dtype = {"FP32": np.float32, "FP64": np.float64, "INT32": np.int32, "INT64": np.int64}[meta["datatype"]]
    return np.asarray(rng.standard_normal(shape) * 10, dtype=dtype)


def _v1_json(array: np.ndarray):
    if array.dtype == object:
        return np.vectorize(lambda b: {"b64": base64.b64encode(b).decode()}, otypes=[object])(array).tolist()
    return array.tolist()


# (model, signature): the signatures of each model of the tree that Predict can run
# (half_plus_three's regress signature declares a float input for a string placeholder, which
# V1 refuses too); counter's only read-only one (the others change its state between calls).
TESTDATA_SIGNATURES = [
    ("default", "serving_default"), ("default", "classify_x_to_y"), ("default", "regress_x_to_y"),
    ("default", "regress_x_to_y2"), ("default", "regress_x2_to_y3"),
    ("tf2_cpu", "serving_default"), ("tf2_cpu", "classify_x_to_y"), ("tf2_cpu", "regress_x_to_y"),
    ("tf2_cpu", "regress_x_to_y2"), ("tf2_cpu", "classify_x2_to_y3"), ("tf2_cpu", "regress_x2_to_y3"),
    ("half_plus_three", "serving_default"),
    ("two_versions", "serving_default"), ("two_versions", "classify_x2_to_y3"),
    ("two_versions", "regress_x2_to_y3"), ("two_versions", "classify_x_to_y"),
    ("counter", "get_counter"),
    ("tflite", "serving_default"), ("tflite_sigdef", "serving_default"),
]


@pytest.mark.parametrize("model,signature", TESTDATA_SIGNATURES)
def test_every_testdata_model_answers_v1_and_v2_alike(server, grpc_client, http_client, model, signature):
    _check_v1_and_v2_alike(server, grpc_client, http_client, model, signature)


@pytest.fixture(scope="module")
def shared_server(model_zoo, tfserving_testdata, tmp_path_factory):
    """The same models from TF Serving's own test data tree (skips where it is absent)."""
    d = tmp_path_factory.mktemp("v2-shared")
    (d / "models.config").write_text(CONFIG.format(zoo=model_zoo, td=tfserving_testdata))
    with ServerProcess(f"--model_config_file={d / 'models.config'}", "--prefer_tflite_model") as s:
        yield s


@pytest.mark.parametrize("model,signature", TESTDATA_SIGNATURES)
def test_tf_servings_own_testdata_answers_v1_and_v2_alike(shared_server, model, signature):
    http = httpclient.InferenceServerClient(f"127.0.0.1:{shared_server.rest_port}")
    grpc_ = grpcclient.InferenceServerClient(shared_server.grpc_target)
    try:
        _check_v1_and_v2_alike(shared_server, grpc_, http, model, signature)
    finally:
        http.close()
        grpc_.close()


def _check_v1_and_v2_alike(server, grpc_client, http_client, model, signature):
    meta = server.get(f"/v2/models/{model}?signature_name={signature}").json()
    rng = np.random.default_rng(abs(hash((model, signature))) % 2**32)
    inputs = {m["name"]: _make_input(m, rng) for m in meta["inputs"]}
    outputs = [m["name"] for m in meta["outputs"]]
    if inputs:
        v1 = server.post(f"/v1/models/{model}:predict", json={
            "signature_name": signature, "inputs": {k: _v1_json(v) for k, v in inputs.items()}})
        assert v1.status_code == 200, v1.text
        v1_out = v1.json()["outputs"]
        if not isinstance(v1_out, dict):
            v1_out = {outputs[0]: v1_out}
        expected = {k: np.asarray(v, np.float32 if m["datatype"] == "FP32" else None)
                    for m in meta["outputs"] for k, v in v1_out.items() if k == m["name"]}
    else:  # V1 REST refuses a request without inputs ("Failed to get input map"); gRPC takes it
        expected = _v1_grpc_predict(server, model, signature)
    parameters = {"signature_name": signature}

    def http_inputs(binary):
        made = []
        for name, array in inputs.items():
            tensor = httpclient.InferInput(name, list(array.shape), next(
                m["datatype"] for m in meta["inputs"] if m["name"] == name))
            tensor.set_data_from_numpy(array, binary_data=binary or array.dtype == object)
            made.append(tensor)
        return made

    answers = {}
    for binary in (True, False):
        requested = [httpclient.InferRequestedOutput(o, binary_data=binary) for o in outputs]
        result = http_client.infer(model, http_inputs(binary), outputs=requested, parameters=parameters)
        answers["rest binary" if binary else "rest json"] = {o: result.as_numpy(o) for o in outputs}
    grpc_inputs = []
    for name, array in inputs.items():
        tensor = grpcclient.InferInput(name, list(array.shape),
                                       next(m["datatype"] for m in meta["inputs"] if m["name"] == name))
        tensor.set_data_from_numpy(array)
        grpc_inputs.append(tensor)
    result = grpc_client.infer(model, grpc_inputs, parameters=parameters)
    answers["grpc"] = {o: result.as_numpy(o) for o in outputs}
    for how, got in answers.items():
        for name, want in expected.items():
            value = got[name]
            assert value.shape == want.shape, (how, name)
            if want.dtype == np.float32:
                assert np.array_equal(value.view(np.uint32), want.view(np.uint32)), (how, name, value, want)
            else:
                assert np.array_equal(value, want), (how, name)


def _v1_grpc_predict(server, model, signature):
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    with grpc.insecure_channel(server.grpc_target) as channel:
        response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=30)
    return {k: tf.make_ndarray(v) for k, v in response.outputs.items()}


# -- metrics --------------------------------------------------------------------------------------


def test_v2_requests_are_counted_with_their_api_and_entrypoint(server, http_client, grpc_client):
    http_client.infer("half_plus_two", [_fp32("x", [[1.0]], httpclient)])
    grpc_client.infer("half_plus_two", [_fp32("x", [[1.0]], grpcclient)])
    page = server.get("/monitoring/prometheus/metrics").text
    for entrypoint in ("rest", "grpc"):
        assert any(line.startswith("pyserving_request_latency_seconds_count{")
                   and 'model="half_plus_two"' in line and 'api="infer"' in line
                   and f'entrypoint="{entrypoint}"' in line for line in page.splitlines()), entrypoint
    assert ':tensorflow:serving:request_count{model_name="half_plus_two",status="OK"}' in page


def _fp32(name, value, module):
    array = np.asarray(value, np.float32)
    tensor = module.InferInput(name, list(array.shape), "FP32")
    tensor.set_data_from_numpy(array)
    return tensor


# -- batching: V2 requests join the same batches as V1 requests ----------------------------------


@pytest.fixture(scope="module")
def batched(model_zoo, tmp_path_factory):
    d = tmp_path_factory.mktemp("v2_batching")
    (d / "batching.config").write_text(
        "max_batch_size { value: 64 } batch_timeout_micros { value: 200000 } num_batch_threads { value: 1 }")
    (d / "monitoring.config").write_text(MONITORING)
    with ServerProcess("--model_name=simple", f"--model_base_path={model_zoo / 'simple'}", "--enable_batching",
                       f"--batching_parameters_file={d / 'batching.config'}",
                       f"--monitoring_config_file={d / 'monitoring.config'}") as s:
        yield s


def test_v1_and_v2_requests_are_batched_together(batched):
    """Eight concurrent requests (V2 REST JSON and binary, V2 gRPC, V1 REST) within the 200 ms
    batch timeout run as fewer batches than requests, each answer its own rows."""
    async def main():
        rest = httpclient_aio.InferenceServerClient(f"127.0.0.1:{batched.rest_port}")
        grpc_aio = grpcclient_aio.InferenceServerClient(batched.grpc_target)
        a = [np.full((1, 16), i, np.int32) for i in range(8)]
        try:
            calls = [rest.infer("simple", simple_inputs(httpclient_aio, a[i], binary=i % 2 == 0)) for i in range(4)]
            calls += [grpc_aio.infer("simple", simple_inputs(grpcclient_aio, a[i])) for i in range(4, 7)]
            calls.append(asyncio.to_thread(batched.post, "/v1/models/simple:predict", json={
                "inputs": {"INPUT0": a[7].tolist(), "INPUT1": SIMPLE_B.tolist()}}))
            return await asyncio.gather(*calls)
        finally:
            await rest.close()
            await grpc_aio.close()

    results = asyncio.run(main())
    for i, result in enumerate(results[:7]):
        assert np.array_equal(result.as_numpy("OUTPUT0"), np.full((1, 16), i + 1, np.int32)), i
    assert results[7].json()["outputs"]["OUTPUT0"] == np.full((1, 16), 8).tolist()
    page = batched.get("/monitoring/prometheus/metrics").text
    count = next(float(line.split()[-1]) for line in page.splitlines()
                 if line.startswith('pyserving_batch_size_count{model="simple"}'))
    total = next(float(line.split()[-1]) for line in page.splitlines()
                 if line.startswith('pyserving_batch_size_sum{model="simple"}'))
    assert total == 8 and count < 8, (count, total)
