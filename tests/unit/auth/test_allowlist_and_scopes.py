"""Base path allowlist decisions, and which scope each REST path and gRPC method needs."""

from __future__ import annotations

import pytest

from pyserving.api.grpc._access import method_scope
from pyserving.api.rest._access import required
from pyserving.auth import BasePathAllowlist
from pyserving.errors import Code, ServingError


def test_local_roots(tmp_path):
    root = tmp_path / "models"
    (root / "m").mkdir(parents=True)
    (tmp_path / "out").mkdir()
    (root / "link").symlink_to(tmp_path / "out")
    allow = BasePathAllowlist([str(root)])
    assert allow.allows(str(root / "m"))
    assert allow.allows(str(root / "not-yet"))
    assert allow.allows(str(root))
    assert not allow.allows(str(tmp_path / "out"))
    assert not allow.allows(f"{root}/../out")
    assert not allow.allows(str(root / "link"))
    assert not allow.allows(str(root) + "-sibling")
    assert not allow.allows("/etc")
    with pytest.raises(ServingError) as info:
        allow.check([str(root / "m"), "/etc"])
    assert info.value.code == Code.PERMISSION_DENIED and "/etc" in info.value.message


def test_store_roots():
    allow = BasePathAllowlist(["s3://bucket/models"])
    assert allow.allows("s3://bucket/models/m")
    assert not allow.allows("s3://bucket/models2/m")
    assert not allow.allows("s3://bucket/models/../secrets")
    assert not allow.allows("gs://bucket/models/m")
    assert not allow.allows("/models/m")


def test_no_roots_allow_everything():
    assert not BasePathAllowlist([])
    BasePathAllowlist([]).check(["/etc"])


@pytest.mark.parametrize("method,path,scope,model", [
    ("GET", "/healthz", None, None),
    ("GET", "/v2/health/ready", None, None),
    ("OPTIONS", "/v1/models/m:predict", None, None),
    ("POST", "/v1/models/m:predict", "infer", "m"),
    ("POST", "/V1/MODELS/m/versions/2:classify", "infer", "m"),
    ("GET", "/v1/models/m/metadata", "read", "m"),
    ("GET", "/v1/models/a%20b", "read", "a b"),
    ("POST", "/v2/models/m/versions/1/infer", "infer", "m"),
    ("GET", "/v2/models/m/ready", "read", "m"),
    ("GET", "/v2", "read", None),
    ("GET", "/monitoring/prometheus/metrics", "read", None),
    ("GET", "/anything", "read", None),
])
def test_rest_scopes(method, path, scope, model):
    assert required(method, path) == (scope, model)


@pytest.mark.parametrize("service,method,scope", [
    ("tensorflow.serving.PredictionService", "Predict", "infer"),
    ("tensorflow.serving.PredictionService", "MultiInference", "infer"),
    ("tensorflow.serving.PredictionService", "GetModelMetadata", "read"),
    ("tensorflow.serving.ModelService", "GetModelStatus", "read"),
    ("tensorflow.serving.ModelService", "HandleReloadConfigRequest", "admin"),
    ("tensorflow.ProfilerService", "Monitor", "admin"),
    ("inference.GRPCInferenceService", "ModelInfer", "infer"),
    ("inference.GRPCInferenceService", "ServerReady", None),
    ("inference.GRPCInferenceService", "ServerMetadata", "read"),
])
def test_grpc_scopes(service, method, scope):
    assert method_scope(service, method) == scope
