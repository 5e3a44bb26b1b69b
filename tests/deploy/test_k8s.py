"""deploy/k8s validated offline: every built-in resource against the Kubernetes OpenAPI schemas
bundled in `kubernetes-validate` (strict: unknown fields fail), for the oldest and newest
Kubernetes it knows; the ServiceMonitor (a CRD, not in those schemas) against the fields of
monitoring.coreos.com/v1 it uses; and the cross-references that no schema checks (probes on
the server's health URLs, grace period vs. drain, ports, labels, configs that parse)."""

from __future__ import annotations

import copy
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from pyserving.cli.flags import parse_flags
from pyserving.protos.config_protos import MonitoringConfig, parse_text
from pyserving.server.model_config import parse_config_text, to_model_configs
from support import METRIC, REPO, exported_series

K8S = REPO / "deploy" / "k8s"
METRICS_PATH = "/monitoring/prometheus/metrics"


def load_all() -> dict[str, list[dict]]:
    return {p.name: [d for d in yaml.safe_load_all(p.read_text()) if d] for p in sorted(K8S.glob("*.yaml"))}


DOCS = load_all()
RESOURCES = [(name, doc) for name, docs in DOCS.items() for doc in docs if name != "kustomization.yaml"]
BUILTIN = [(n, d) for n, d in RESOURCES if d["kind"] not in ("ServiceMonitor", "PrometheusRule")]


def one(kind: str, name: str | None = None) -> dict:
    found = [d for _, d in RESOURCES if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, (kind, name, len(found))
    return found[0]


def k8s_versions() -> list[str]:
    from kubernetes_validate import utils

    versions = utils.all_versions()
    return [versions[0], versions[-1]]


def test_every_kind_the_issue_asks_for_is_there():
    kinds = {d["kind"] for _, d in RESOURCES}
    assert {"Deployment", "Service", "ConfigMap", "HorizontalPodAutoscaler", "ServiceMonitor"} <= kinds


@pytest.mark.parametrize("version", k8s_versions())
@pytest.mark.parametrize("name,doc", BUILTIN, ids=[f"{n}:{d['kind']}/{d['metadata']['name']}" for n, d in BUILTIN])
def test_resource_validates_against_the_kubernetes_schema(name, doc, version):
    kubernetes_validate.validate(doc, version, strict=True)


def test_the_validator_rejects_a_broken_deployment():
    version = k8s_versions()[-1]
    broken = copy.deepcopy(one("Deployment"))
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = \
        broken["spec"]["template"]["spec"]["containers"][0].pop("readinessProbe")  # typo'd field
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, version, strict=True)
    broken = copy.deepcopy(one("Deployment"))
    broken["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = "45"  # wrong type
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, version, strict=True)


def container() -> dict:
    return one("Deployment")["spec"]["template"]["spec"]["containers"][0]


def server_options():
    options, unknown, _ = parse_flags(container()["args"])
    assert not unknown, unknown
    return options


def test_probes_use_the_health_urls_on_the_rest_port():
    c = container()
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"grpc": 8500, "http": 8501}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["startupProbe"]["httpGet"]["path"] == "/healthz"


def test_grace_period_covers_prestop_and_drain():
    spec = one("Deployment")["spec"]["template"]["spec"]
    pre_stop = container()["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    drain = server_options().shutdown_grace_seconds
    assert any(a.startswith("--shutdown_grace_seconds=") for a in container()["args"])  # explicit, visible
    assert spec["terminationGracePeriodSeconds"] >= int(pre_stop[1]) + drain + 5


def test_rollout_never_drops_below_ready_capacity():
    strategy = one("Deployment")["spec"]["strategy"]
    assert strategy["rollingUpdate"]["maxUnavailable"] == 0


def test_container_is_locked_down_and_matches_the_image_user():
    spec = one("Deployment")["spec"]["template"]["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    dockerfile_user = next(line.split()[1] for line in (REPO / "Dockerfile").read_text().splitlines()
                           if line.startswith("USER "))
    assert str(spec["securityContext"]["runAsUser"]) == dockerfile_user.split(":")[0]
    sc = container()["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
    assert "/tmp" in {m["mountPath"] for m in container()["volumeMounts"]}  # writable scratch


def test_config_map_holds_configs_that_the_server_parses():
    data = one("ConfigMap")["data"]
    options = server_options()
    mounts = {m["mountPath"]: m["name"] for m in container()["volumeMounts"]}
    volumes = {v["name"]: v for v in one("Deployment")["spec"]["template"]["spec"]["volumes"]}
    config_dir = str(Path(options.model_config_file).parent)
    assert volumes[mounts[config_dir]]["configMap"]["name"] == one("ConfigMap")["metadata"]["name"]
    models = to_model_configs(parse_config_text(data[Path(options.model_config_file).name]))
    assert models and all(m.base_path.startswith("/models/") for m in models)
    assert "/models" in mounts and options.model_config_file_poll_wait_seconds > 0
    monitoring = parse_text(MonitoringConfig, data[Path(options.monitoring_config_file).name])
    assert monitoring.prometheus_config.enable and monitoring.prometheus_config.path == METRICS_PATH


def test_services_expose_both_ports_to_the_pods():
    pod_labels = one("Deployment")["spec"]["template"]["metadata"]["labels"]
    service = one("Service", "pyserving")
    assert {(p["name"], p["port"], p["targetPort"]) for p in service["spec"]["ports"]} == \
        {("grpc", 8500, "grpc"), ("http", 8501, "http")}
    for svc in (service, one("Service", "pyserving-headless")):
        assert svc["spec"]["selector"].items() <= pod_labels.items()
    assert one("Service", "pyserving-headless")["spec"]["clusterIP"] == "None"


def test_autoscaler_scales_the_deployment_on_cpu_requests():
    hpa = one("HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == ("apps/v1", "Deployment", one("Deployment")["metadata"]["name"])
    assert 1 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    assert any(m["type"] == "Resource" and m["resource"]["name"] == "cpu" for m in hpa["spec"]["metrics"])
    assert "cpu" in container()["resources"]["requests"]  # utilization is relative to requests
    pdb = one("PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"]  # drains can still proceed


def test_prometheus_annotations_point_at_the_metrics_url():
    annotations = one("Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert annotations == {"prometheus.io/scrape": "true", "prometheus.io/port": "8501", "prometheus.io/path": METRICS_PATH}


# The part of monitoring.coreos.com/v1 ServiceMonitor's schema this manifest uses, from the
# CRD's documented fields; unknown fields are rejected, as a structural CRD schema would.
_LABEL_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_DURATION = {"type": "string", "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"}
SERVICE_MONITOR_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {
            "type": "object", "required": ["name"], "additionalProperties": False,
            "properties": {"name": {"type": "string"}, "namespace": {"type": "string"},
                           "labels": _LABEL_MAP, "annotations": _LABEL_MAP},
        },
        "spec": {
            "type": "object", "required": ["selector", "endpoints"], "additionalProperties": False,
            "properties": {
                "jobLabel": {"type": "string"},
                "selector": {"type": "object", "additionalProperties": False,
                             "properties": {"matchLabels": _LABEL_MAP, "matchExpressions": {"type": "array"}}},
                "namespaceSelector": {"type": "object", "additionalProperties": False,
                                      "properties": {"any": {"type": "boolean"},
                                                     "matchNames": {"type": "array", "items": {"type": "string"}}}},
                "endpoints": {
                    "type": "array", "minItems": 1,
                    "items": {
                        "type": "object", "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string"}, "targetPort": {"type": ["integer", "string"]},
                            "path": {"type": "string", "pattern": "^/"},
                            "scheme": {"enum": ["http", "https", "HTTP", "HTTPS"]},
                            "interval": _DURATION, "scrapeTimeout": _DURATION,
                            "honorLabels": {"type": "boolean"},
                            "relabelings": {"type": "array"}, "metricRelabelings": {"type": "array"},
                        },
                    },
                },
            },
        },
    },
}


def _seconds(duration: str) -> int:
    assert duration.endswith("s") and duration[:-1].isdigit(), duration
    return int(duration[:-1])


def test_service_monitor_is_well_formed_and_scrapes_the_service():
    monitor = one("ServiceMonitor")
    jsonschema.validate(monitor, SERVICE_MONITOR_SCHEMA)
    service = one("Service", "pyserving")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    headless = one("Service", "pyserving-headless")
    assert not monitor["spec"]["selector"]["matchLabels"].items() <= headless["metadata"]["labels"].items()
    endpoint, = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["path"] == METRICS_PATH
    assert _seconds(endpoint["scrapeTimeout"]) <= _seconds(endpoint["interval"])


def test_the_service_monitor_schema_catches_mistakes():
    monitor = copy.deepcopy(one("ServiceMonitor"))
    monitor["spec"]["endpoints"][0]["intervall"] = "15s"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(monitor, SERVICE_MONITOR_SCHEMA)


def test_kustomization_lists_every_manifest_but_the_optional_service_monitor():
    kustomization, = DOCS["kustomization.yaml"]
    assert kustomization["kind"] == "Kustomization"
    listed = set(kustomization["resources"])
    assert all((K8S / r).is_file() for r in listed)
    assert listed == set(DOCS) - {"kustomization.yaml", "servicemonitor.yaml", "prometheusrule.yaml"}


def test_alert_rules_query_only_exported_metrics():
    rule = one("PrometheusRule")
    alerts = [r for group in rule["spec"]["groups"] for r in group["rules"]]
    assert {"PyservingEventLoopBlocked", "PyservingRequestNeverEnds", "PyservingVersionStuckUnloading",
            "PyservingHandlesHeldWhileIdle"} <= {a["alert"] for a in alerts}
    queried = {m for a in alerts for m in METRIC.findall(a["expr"])}
    known = exported_series()
    assert queried and queried <= known, queried - known


def secure_overlay() -> tuple[dict, dict]:
    """(the overlay's Kustomization, the base Deployment with its JSON patch applied)."""
    kustomization = yaml.safe_load((K8S / "secure" / "kustomization.yaml").read_text())
    deployment = copy.deepcopy(one("Deployment"))
    for patch in kustomization["patches"]:
        assert patch["target"] == {"kind": "Deployment", "name": deployment["metadata"]["name"]}
        for op in yaml.safe_load(patch["patch"]):
            assert op["op"] == "add"
            *parents, last = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
            node = deployment
            for part in parents:
                node = node[int(part)] if isinstance(node, list) else node[part]
            if last == "-":
                node.append(op["value"])
            else:
                assert last not in node, op["path"]  # an add that would silently replace
                node[last] = op["value"]
    return kustomization, deployment


@pytest.mark.parametrize("version", k8s_versions())
def test_secure_overlay_validates_and_mounts_the_secret(version):
    kustomization, deployment = secure_overlay()
    assert kustomization["resources"] == ["../"]
    kubernetes_validate.validate(deployment, version, strict=True)
    pod = deployment["spec"]["template"]["spec"]
    serving = pod["containers"][0]
    options, unknown, _ = parse_flags(serving["args"])
    assert not unknown
    secret = next(v for v in pod["volumes"] if "secret" in v)
    mount = next(m for m in serving["volumeMounts"] if m["name"] == secret["name"])
    assert mount["readOnly"] and secret["secret"]["secretName"] == "pyserving-security"
    for path in (options.auth_config_file, options.ssl_config_file, options.rest_api_ssl_config_file):
        assert path.startswith(mount["mountPath"] + "/")
    assert options.model_base_path_allowlist == "/models"
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert serving[probe]["httpGet"]["scheme"] == "HTTPS"
        assert serving[probe]["httpGet"]["path"] in ("/healthz", "/readyz")  # open without credentials
