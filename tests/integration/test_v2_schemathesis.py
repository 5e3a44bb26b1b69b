"""The V2 REST routes fuzzed by schemathesis from the Open Inference Protocol's own OpenAPI
document (tests/data/open_inference/open_inference_rest.yaml, kserve/open-inference-protocol's
file unchanged), against the real server: no 5xx, and every response declared by the document
(status code, content type, body schema).

The document is adapted as little as its own text asks: its paths spell parameters
`${MODEL_NAME}` (a literal `$` in OpenAPI's templating) and the spec's text makes
`/versions/<v>` optional, so the paths become `{MODEL_NAME}` and each versioned path gets its
version-less twin; model names and versions are drawn from the served ones, so requests reach
real models. Not checked: `positive_data_acceptance` (a request valid for the document is
still refused when its tensors are not the model's, with the 400 the document declares); and
for requests schemathesis makes invalid on purpose (negative mode), `status_code_conformance`:
an unknown model answers 404 and an unknown version label 400, which the document's responses
do not list (the spec's text: "return an error", "typically 400"); those must still be errors
(4xx, `negative_data_rejection`), JSON, and never a 5xx.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance, status_code_conformance

from support import ServerProcess

SPEC = Path(__file__).resolve().parents[1] / "data" / "open_inference" / "open_inference_rest.yaml"
MODELS = ["simple", "half_plus_two"]


def adapted(document: dict) -> dict:
    document = copy.deepcopy(document)
    paths: dict = {}
    for path, item in document["paths"].items():
        path = path.replace("${", "{")
        for parameter in item.get("parameters", []):
            if parameter["name"] == "MODEL_NAME":
                parameter["schema"] = {"type": "string", "enum": MODELS}
            elif parameter["name"] == "MODEL_VERSION":
                parameter["schema"] = {"type": "string", "enum": ["1"]}
        paths[path] = item
        if "/versions/{MODEL_VERSION}" in path:
            twin = copy.deepcopy(item)
            twin["parameters"] = [p for p in twin["parameters"] if p["name"] != "MODEL_VERSION"]
            for operation in ("get", "post"):
                if operation in twin:
                    twin[operation]["operationId"] += "-latest"
            paths[path.replace("/versions/{MODEL_VERSION}", "")] = twin
    document["paths"] = paths
    return document


schema = schemathesis.openapi.from_dict(adapted(yaml.safe_load(SPEC.read_text())))


@pytest.fixture(scope="module")
def server(model_zoo, tmp_path_factory):
    config = tmp_path_factory.mktemp("v2_schemathesis") / "models.config"
    config.write_text("model_config_list {\n" + "".join(
        f'  config {{ name: "{m}" base_path: "{model_zoo / m}" model_platform: "tensorflow" }}\n'
        for m in MODELS) + "}\n")
    with ServerProcess(f"--model_config_file={config}", grpc=False) as s:
        yield s


def test_the_document_lists_the_specs_routes():
    paths = set(schema.raw_schema["paths"])
    assert {"/v2/", "/v2/health/live", "/v2/health/ready", "/v2/models/{MODEL_NAME}",
            "/v2/models/{MODEL_NAME}/ready", "/v2/models/{MODEL_NAME}/infer",
            "/v2/models/{MODEL_NAME}/versions/{MODEL_VERSION}/infer"} <= paths


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_v2_routes_answer_as_the_document_says(case, server):
    excluded = [positive_data_acceptance]
    if case.meta is not None and case.meta.generation.mode.is_negative:
        excluded.append(status_code_conformance)
    response = case.call_and_validate(base_url=server.url, excluded_checks=excluded, timeout=30)
    assert response.headers["content-type"] == ["application/json"]
