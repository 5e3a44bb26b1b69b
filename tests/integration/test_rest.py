"""REST API against the real server process: one shared server for the read-only tests."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess

import numpy as np
import pytest
import requests

import modelgen
from support import TESTDATA_MODELS, ServerProcess

CONFIG = """
model_config_list {{
  config {{ name: "half_plus_two" base_path: "{zoo}/half_plus_two" model_platform: "tensorflow" }}
  config {{ name: "simple_save" base_path: "{zoo}/half_plus_two_simple_save" model_platform: "tensorflow" }}
  config {{ name: "frozen" base_path: "{zoo}/frozen_graph" model_platform: "tensorflow" }}
  config {{ name: "tf2" base_path: "{zoo}/tf2_multi_signature" model_platform: "tensorflow" }}
  config {{ name: "keras" base_path: "{zoo}/keras_export" model_platform: "tensorflow" }}
  config {{ name: "image" base_path: "{zoo}/image_bytes" model_platform: "tensorflow" }}
  config {{ name: "siamese-reid" base_path: "{zoo}/siamese" model_platform: "tensorflow" }}
  config {{ name: "ssd-mbv2-coco" base_path: "{zoo}/detection" model_platform: "tensorflow" }}
  config {{ name: "mnist-serving" base_path: "{zoo}/mnist_cnn" model_platform: "tensorflow" }}
  config {{ name: "classifier" base_path: "{zoo}/classifier" model_platform: "tensorflow" }}
""" + TESTDATA_MODELS + """}}
"""


@pytest.fixture(scope="module")
def server(model_zoo, testdata, tmp_path_factory):
    config = tmp_path_factory.mktemp("cfg") / "models.config"
    config.write_text(CONFIG.format(zoo=model_zoo, td=testdata))
    with ServerProcess(f"--model_config_file={config}", "--rest_api_max_body_bytes=100000000") as s:
        yield s


def predict(server, model, body, **kw):
    return server.post(f"/v1/models/{model}:predict", json=body, **kw)


# -- status and metadata --------------------------------------------------------------------

def test_status_is_byte_for_byte_tf_serving(server):
    r = server.get("/v1/models/default")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert "server" not in r.headers  # TF Serving's libevent sends Date, no Server header
    assert "date" in r.headers
    assert r.text == (
        '{\n "model_version_status": [\n  {\n   "version": "123",\n   "state": "AVAILABLE",\n'
        '   "status": {\n    "error_code": "OK",\n    "error_message": ""\n   }\n  }\n ]\n}\n'
    )


def test_status_of_versions_and_labels(server):
    both = server.get("/v1/models/two_versions").json()["model_version_status"]
    assert [v["version"] for v in both] == ["124", "123"]
    assert {v["state"] for v in both} == {"AVAILABLE"}
    one = server.get("/v1/models/two_versions/versions/123").json()["model_version_status"]
    assert [v["version"] for v in one] == ["123"]
    # TF Serving ignores the label for status
    assert server.get("/v1/models/two_versions/labels/stable").json()["model_version_status"] == both


def test_status_errors(server):
    r = server.get("/v1/models/nope")
    assert (r.status_code, r.json()) == (404, {"error": "Could not find any versions of model nope"})
    r = server.get("/v1/models/default/versions/7")
    assert (r.status_code, r.json()) == (404, {"error": "Could not find version 7 of model default"})
    r = server.get("/v1/models")
    assert (r.status_code, r.json()) == (400, {"error": "Missing model name in request."})


def test_metadata_matches_tf_serving(server, testdata):
    expected = json.loads((testdata / "half_plus_two_model_metadata.json").read_text())
    r = server.get("/v1/models/default/metadata")
    assert r.status_code == 200
    assert r.text.startswith('{\n"model_spec":')
    assert r.json() == expected
    r2 = server.get("/v1/models/two_versions/labels/stable/metadata").json()
    assert r2["model_spec"] == {"name": "two_versions", "signature_name": "", "version": "123"}


def test_metadata_of_tf2_and_keras_models(server):
    sigs = server.get("/v1/models/tf2/metadata").json()["metadata"]["signature_def"]["signature_def"]
    assert {"serving_default", "times_three"} <= set(sigs)
    keras = server.get("/v1/models/keras/metadata").json()["metadata"]["signature_def"]["signature_def"]
    assert "serving_default" in keras


# -- predict ------------------------------------------------------------------------------

def test_reference_examples(server):
    r = predict(server, "default", {"instances": [1.0, 2.0, 5.0]})
    assert r.status_code == 200 and r.json() == {"predictions": [2.5, 3.0, 4.5]}
    r = predict(server, "half_plus_three", {"inputs": [1.0, 2.0]})
    assert r.json() == {"outputs": [3.5, 4.0]}


def test_lenient_rank_like_tf_serving(server):
    # placeholder [-1, 1], instances of scalars: TF Serving answers, so do we
    for model in ("default", "half_plus_two", "tf2_cpu"):
        r = predict(server, model, {"instances": [2.0, 3.0, 4.0]})
        assert r.status_code == 200, r.text
        assert r.json() == {"predictions": [3.0, 3.5, 4.0]}


def test_row_and_columnar_with_nested_values(server):
    r = predict(server, "default", {"instances": [[1.0], [2.0]]})
    assert r.json() == {"predictions": [[2.5], [3.0]]}
    r = predict(server, "default", {"inputs": {"x": [[1.0], [2.0]]}})
    assert r.json() == {"outputs": [[2.5], [3.0]]}
    r = predict(server, "default", {"instances": [{"x": [1.0]}, {"x": [3.0]}]})
    assert r.json() == {"predictions": [[2.5], [3.5]]}


def test_every_export_kind_serves(server):
    assert predict(server, "simple_save", {"instances": [[2.0]]}).json() == {"predictions": [[3.0]]}
    r = predict(server, "frozen", {"instances": np.zeros((1, *_frozen_shape(server)), np.float32).tolist()})
    assert r.status_code == 200, r.text
    r = predict(server, "tf2", {"signature_name": "times_three", "instances": [1.0, 2.0]})
    assert r.status_code == 200 and r.json() == {"predictions": [3.0, 6.0]}
    r = server.post("/v1/models/keras:predict", json={"instances": [[0.0] * _keras_width(server)]})
    assert r.status_code == 200, r.text


def _frozen_shape(server):
    sig = server.get("/v1/models/frozen/metadata").json()["metadata"]["signature_def"]["signature_def"]
    dims = sig["serving_default"]["inputs"]["input_image"]["tensor_shape"]["dim"]
    return [int(d["size"]) for d in dims[1:]]


def _keras_width(server):
    sig = server.get("/v1/models/keras/metadata").json()["metadata"]["signature_def"]["signature_def"]
    (spec,) = sig["serving_default"]["inputs"].values()
    return int(spec["tensor_shape"]["dim"][-1]["size"])


def test_multi_input_and_multi_output(server):
    img = np.zeros((64, 32, 3), np.float32)
    r = predict(server, "siamese-reid", {"signature_name": "signature-reid",
                                         "instances": [{"img1": img.tolist(), "img2": img.tolist()}]})
    assert r.status_code == 200, r.text
    (row,) = r.json()["predictions"]
    assert 0.0 <= row[0] <= 1.0
    r = predict(server, "ssd-mbv2-coco", {"instances": [np.zeros((5, 6, 3), np.uint8).tolist()]})
    assert r.status_code == 200, r.text
    (row,) = r.json()["predictions"]
    assert set(row) == {"detection_boxes", "detection_classes", "detection_scores", "num_detections"}
    assert np.asarray(row["detection_boxes"]).shape == (100, 4)


def test_binary_b64_image_flow(server):
    png = modelgen.png_bytes(rgb=(0, 255, 0))
    body = {"instances": [{"b64": base64.b64encode(png).decode()}]}
    r = predict(server, "image", body)
    assert r.status_code == 200, r.text
    expected = modelgen.image_bytes_model_reference((0, 255, 0))
    np.testing.assert_allclose(r.json()["predictions"][0], expected.reshape(-1), rtol=1e-5)


def test_bytes_outputs_are_base64(server):
    r = predict(server, "tf2", {"signature_name": "echo_bytes", "instances": ["hi"]})
    assert r.status_code == 200, r.text
    out = r.json()["predictions"]
    assert any(isinstance(v, dict) and "b64" in v for v in (out[0].values() if isinstance(out[0], dict) else out))


def test_classify_and_regress(server):
    r = server.post("/v1/models/default:classify", json={"signature_name": "classify_x_to_y", "examples": [{"x": 1.0}, {"x": 3.0}]})
    assert r.status_code == 200, r.text
    assert r.json() == {"results": [[["", 2.5]], [["", 3.5]]]}
    r = server.post("/v1/models/default:regress", json={"signature_name": "regress_x_to_y", "examples": [{"x": 1.0}]})
    assert r.json() == {"results": [2.5]}
    r = server.post("/v1/models/default:regress", json={"signature_name": "regress_x_to_y", "context": {"x": 9.0}, "examples": [{"x": 1.0}, {}]})
    assert r.json() == {"results": [2.5, 6.5]}
    r = server.post("/v1/models/classifier:classify", json={"examples": [{"x": 1.0}]})
    assert r.status_code == 200, r.text
    (classes,) = r.json()["results"]
    assert len(classes) == 2 and all(isinstance(c[0], str) and isinstance(c[1], float) for c in classes)


def test_versions_and_labels(server):
    r = predict(server, "two_versions", {"instances": [1.0]})
    assert r.status_code == 200
    assert server.post("/v1/models/two_versions/versions/123:predict", json={"instances": [1.0]}).status_code == 200
    assert server.post("/v1/models/two_versions/labels/canary:predict", json={"instances": [1.0]}).status_code == 200
    r = server.post("/v1/models/two_versions/labels/nope:predict", json={"instances": [1.0]})
    assert (r.status_code, r.json()) == (400, {"error": "Unrecognized servable version label: nope"})
    r = server.post("/v1/models/default/versions/9:predict", json={"instances": [1.0]})
    assert (r.status_code, r.json()) == (404, {"error": "Servable not found for request: Specific(default, 9)"})


def test_stateful_model(server):
    r = server.post("/v1/models/counter:predict", json={"signature_name": "get_counter", "inputs": {}})
    assert r.status_code in (200, 400)  # whatever it answers, it answers JSON, not a crash
    assert "error" in r.json() or "outputs" in r.json()


# -- bad input ---------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "body, status, fragment",
    [
        (b"", 400, "JSON Parse error: The document is empty"),
        (b"{not json", 400, "JSON Parse error"),
        (b"[1, 2]", 400, "Is not object"),
        (b'{"foo": 1}', 400, "Missing 'inputs' or 'instances' key"),
        (b'{"instances": [1.0], "inputs": [1.0]}', 400, "expecting only one of 'inputs' or 'instances'"),
        (b'{"instances": []}', 400, "No values in 'instances' array"),
        (b'{"instances": ["a"]}', 400, "is not of expected type: float"),
        (b'{"instances": [[1.0], [1.0, 2.0]]}', 400, ""),
        (b'{"signature_name": 5, "instances": [1.0]}', 400, "'signature_name' key must be a string"),
        (b'{"signature_name": "nope", "instances": [1.0]}', 400, 'Serving signature name: "nope" not found in signature def'),
    ],
)
def test_bad_predict_bodies(server, body, status, fragment):
    r = server.post("/v1/models/default:predict", data=body)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    assert fragment in r.json()["error"]
    assert "Traceback" not in r.text


def test_error_body_is_pretty_json(server):
    r = server.post("/v1/models/nope:predict", json={"instances": [1.0]})
    assert r.status_code == 404
    assert r.text == '{\n    "error": "Servable not found for request: Latest(nope)"\n}'


@pytest.mark.parametrize(
    "method, path, status",
    [
        ("GET", "/v1/models/default:predict", 400),
        ("POST", "/v1/models/default/metadata", 400),
        ("GET", "/v1/models/default/versions/x", 400),
        ("GET", "/v1/models/default/version/1", 400),
        ("POST", "/v1/models/default:explain", 400),
        ("GET", "/v1/models/default/versions/99999999999999999999", 400),
        ("GET", "/nothing/here", 404),
    ],
)
def test_unknown_paths(server, method, path, status):
    r = requests.request(method, server.url + path, timeout=10)
    assert r.status_code == status
    if path.startswith("/v1/"):
        assert "error" in r.json()


def test_body_limit_answers_413(server):
    r = server.post("/v1/models/default:predict", data=b"x" * 100_000_001)
    assert r.status_code == 413
    assert "limit" in r.json()["error"]


def test_gzip_body(server):
    import gzip

    body = gzip.compress(json.dumps({"instances": [1.0]}).encode())
    r = server.post("/v1/models/default:predict", data=body, headers={"Content-Encoding": "gzip"})
    assert r.json() == {"predictions": [2.5]}


# -- the seeds' snippets, unchanged ---------------------------------------------------------

def test_seed_curl_status_and_predict(server):
    if shutil.which("curl") is None:
        pytest.skip("curl not installed")
    out = subprocess.run(["curl", "-s", f"localhost:{server.rest_port}/v1/models/mnist-serving"],
                         capture_output=True, text=True, timeout=30).stdout
    assert json.loads(out)["model_version_status"][0]["state"] == "AVAILABLE"
    out = subprocess.run(["curl", "-s", "-d", '{"instances": [[1.0, 2.0, 5.0]]}', "-X", "POST",
                          f"http://localhost:{server.rest_port}/v1/models/default:predict"],
                         capture_output=True, text=True, timeout=30).stdout
    assert json.loads(out) == {"predictions": [[2.5, 3.0, 4.5]]}


def test_seed_requests_json_instances(server):
    input_data = np.array([1.0, 2.0], np.float32)
    response = requests.post(
        f"http://localhost:{server.rest_port}/v1/models/default:predict",
        json={'instances': [input_data.tolist()]}
    )
    assert response.json() == {"predictions": [[2.5, 3.0]]}


def test_seed_mnist_rest_infer(server):
    """seed 004's rest_infer, verbatim but for host/port."""
    port = server.rest_port

    def rest_infer(imgs, model_name='mnist-serving', host='localhost', port=port, signature_name="serving_default"):
        if imgs.ndim == 3:
            imgs = np.expand_dims(imgs, axis=0)
        data = json.dumps({
            "signature_name": signature_name,
            "instances": imgs.tolist()
        })
        headers = {"content-type": "application/json"}
        json_response = requests.post(
            'http://{}:{}/v1/models/{}:predict'.format(host, port, model_name),
            data=data,
            headers=headers
        )
        if json_response.status_code == 200:
            y_pred = json.loads(json_response.text)['predictions']
            y_pred = np.argmax(y_pred, axis=-1)
            return y_pred
        else:
            return None

    x_test = np.random.default_rng(0).random((500, 28, 28, 1), dtype=np.float32)
    y_pred = rest_infer(x_test)
    assert y_pred is not None and y_pred.shape == (500,)
    one = rest_infer(x_test[0])
    assert one.shape == (1,) and one[0] == y_pred[0]


def test_seed_streamlit_canvas_request(server):
    """seed 002: a (1, 28, 28, 1) grayscale image sent with json.dumps and headers."""
    test_img = np.random.default_rng(1).integers(0, 255, (1, 28, 28, 1)).astype("uint8")
    json_data = json.dumps({"instances": test_img.tolist()})
    headers = {"content-type": "application/json"}
    response = requests.post(f"http://localhost:{server.rest_port}/v1/models/mnist-serving:predict",
                             data=json_data, headers=headers)
    prediction = np.argmax(response.json()["predictions"][0])
    assert 0 <= prediction <= 9
