"""deploy/kserve validated offline: the ServingRuntime and the InferenceService against KServe's
own CRD schemas (their openAPIV3Schema, taken from kserve/kserve's config/crd/full and kept in
tests/data/kserve without descriptions), strictly (a field the schema does not declare fails,
as `kubectl apply --validate=strict` would), plus what no schema checks: the arguments parse
as the server's flags, the probes and ports agree with them, the model path is KServe's
storage initializer's, the example asks for a format and protocol the runtime declares; and
the runtime's container command line actually serves V2 on KServe's layout."""

from __future__ import annotations

import copy
import gzip
import json
import shutil

import jsonschema
import pytest
import yaml

from pyserving.cli.flags import parse_flags
from support import REPO, ServerProcess

KSERVE = REPO / "deploy" / "kserve"
SCHEMAS = REPO / "tests" / "data" / "kserve"


def schema(name: str) -> dict:
    with gzip.open(SCHEMAS / f"{name}.json.gz", "rt") as f:
        return json.load(f)


RUNTIME_CRD = schema("servingruntimes")
ISVC_CRD = schema("inferenceservices")
RUNTIME = yaml.safe_load((KSERVE / "servingruntime.yaml").read_text())
ISVC = yaml.safe_load((KSERVE / "inferenceservice.yaml").read_text())


def unknown_fields(doc, node: dict, path: str = "") -> list[str]:
    """Paths in `doc` that `node` (an openAPIV3Schema) does not declare."""
    found: list[str] = []
    if isinstance(doc, dict) and node.get("type") == "object":
        if node.get("x-kubernetes-preserve-unknown-fields") or "properties" not in node:
            extra = node.get("additionalProperties")
            if isinstance(extra, dict):
                for key, value in doc.items():
                    found += unknown_fields(value, extra, f"{path}.{key}")
            return found
        for key, value in doc.items():
            if key not in node["properties"]:
                found.append(f"{path}.{key}")
            else:
                found += unknown_fields(value, node["properties"][key], f"{path}.{key}")
    elif isinstance(doc, list) and "items" in node:
        for i, item in enumerate(doc):
            found += unknown_fields(item, node["items"], f"{path}[{i}]")
    return found


def validate(doc: dict, crd: dict) -> None:
    assert (doc["apiVersion"], doc["kind"]) == (crd["apiVersion"], crd["kind"])
    jsonschema.Draft7Validator(crd["schema"]).validate(doc)
    unknown = unknown_fields({k: v for k, v in doc.items() if k != "metadata"}, crd["schema"])
    if unknown:
        raise jsonschema.ValidationError(f"fields the CRD does not declare: {unknown}")


def test_serving_runtime_validates_against_kserves_crd():
    validate(RUNTIME, RUNTIME_CRD)


def test_inference_service_validates_against_kserves_crd():
    validate(ISVC, ISVC_CRD)


@pytest.mark.parametrize("breakage", ["typo", "nested typo", "wrong type"])
def test_the_validation_catches_a_broken_runtime(breakage):
    broken = copy.deepcopy(RUNTIME)
    if breakage == "typo":
        broken["spec"]["supportedModelFormat"] = broken["spec"].pop("supportedModelFormats")
    elif breakage == "nested typo":
        broken["spec"]["containers"][0]["readinesProbe"] = broken["spec"]["containers"][0].pop("readinessProbe")
    else:
        broken["spec"]["supportedModelFormats"][0]["autoSelect"] = "yes"
    with pytest.raises(jsonschema.ValidationError):
        validate(broken, RUNTIME_CRD)


def container() -> dict:
    return RUNTIME["spec"]["containers"][0]


def options():
    parsed, unknown, _ = parse_flags([a.replace("{{.Name}}", "flowers") for a in container()["args"]])
    assert not unknown, unknown
    return parsed


def test_runtime_declares_the_formats_and_protocols():
    formats = {(f["name"], f["version"]) for f in RUNTIME["spec"]["supportedModelFormats"]}
    assert {("tensorflow", "1"), ("tensorflow", "2"), ("tflite", "1")} <= formats
    assert set(RUNTIME["spec"]["protocolVersions"]) == {"v1", "v2", "grpc-v1", "grpc-v2"}


def test_runtime_serves_kserves_layout_on_kserves_ports():
    c, o = container(), options()
    assert c["name"] == "kserve-container"  # the name KServe merges the predictor's fields into
    assert o.model_base_path == "/mnt/models" and "--model_name={{.Name}}" in c["args"]
    assert (o.rest_api_port, o.port) == (8080, 9000)  # KServe's HTTP port; h2c (gRPC) 9000
    for probe, path in (("readinessProbe", "/v2/health/ready"), ("livenessProbe", "/v2/health/live")):
        assert c[probe]["httpGet"] == {"path": path, "port": o.rest_api_port}
    assert o.shutdown_grace_seconds < 30  # a pod's default terminationGracePeriodSeconds


def test_example_uses_this_runtime_with_a_declared_format_and_protocol():
    model = ISVC["spec"]["predictor"]["model"]
    assert model["runtime"] == RUNTIME["metadata"]["name"]
    fmt = model["modelFormat"]
    assert any(f["name"] == fmt["name"] and f["version"] == fmt["version"]
               for f in RUNTIME["spec"]["supportedModelFormats"])
    assert model["protocolVersion"] in RUNTIME["spec"]["protocolVersions"]


def test_runtime_command_line_serves_v2_from_the_storage_layout(model_zoo, tmp_path):
    """The container's args, with /mnt/models a local copy of a model as the storage
    initializer leaves it, answer V1 and V2 on the ports KServe talks to."""
    mnt = tmp_path / "mnt" / "models"
    shutil.copytree(model_zoo / "simple", mnt)
    args = [a.replace("{{.Name}}", "simple").replace("/mnt/models", str(mnt)) for a in container()["args"]]
    args = [a for a in args if not a.startswith(("--port=", "--rest_api_port="))]  # free ports instead
    with ServerProcess(*args) as server:
        assert server.get("/v2/health/ready").json() == {"ready": True}
        assert server.get("/v2/models/simple").json()["platform"] == "tensorflow_savedmodel"
        assert server.get("/v1/models/simple").status_code == 200
