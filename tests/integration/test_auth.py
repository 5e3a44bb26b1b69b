"""Authentication, scopes and TLS against real server processes, REST and gRPC.

Servers (launched together):
- `secure`: TLS on both ports (certificates made here), `--auth_config_file` with API keys
  of several scopes, a JWT issuer whose JWKS a loopback HTTP server publishes, and
  `--model_base_path_allowlist`; most tests share it (the JWKS rotation test restores the
  key set it changes);
- `mutual`: mutual TLS on both ports, client certificates mapped to scopes; its SSL configs
  and auth file are rewritten by the reload tests (file order).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
from pathlib import Path

import grpc
import pytest
import requests
import tensorflow as tf
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tensorflow_serving.apis import (
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

import modelgen
from auth_support import CertificateAuthority, JwksServer, TokenIssuer, sha256_hex, ssl_config_text
from pyserving.protos.inference_protos import ModelInferRequest, ModelMetadataRequest
from pyserving.protos.profiler_protos import ProfileRequest
from support import ServerProcess, run_to_exit

KEYS = {  # key -> its entry in the auth file
    "key-all-0123456789": {"scopes": ["infer", "read", "admin"]},
    "key-infer-0123456789": {"scopes": ["infer"]},
    "key-read-0123456789": {"scopes": ["read"]},
    "key-other-model-0123456789": {"scopes": ["infer", "read"], "models": ["other"]},
}
ALL, INFER, READ, OTHER = list(KEYS)
WRONG = "key-wrong-0123456789"
ISSUER, AUDIENCE = "https://issuer.test", "pyserving"
PREDICT = {"instances": [1.0, 2.0]}


def auth_file(extra: dict | None = None, keys: dict | None = None) -> str:
    doc = {"api_keys": [{"sha256": sha256_hex(k), **v} for k, v in (keys or KEYS).items()],
           "failure_limit": {"max_failures": 10000, "window_seconds": 60}, **(extra or {})}
    return json.dumps(doc)


def model_config(path: Path) -> str:
    return f'model_config_list {{ config {{ name: "half_plus_two" base_path: "{path}" model_platform: "tensorflow" }} }}'


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    d = tmp_path_factory.mktemp("auth")
    models = d / "models"
    modelgen.make_half_plus_two(models / "half_plus_two", 1)
    (d / "outside").mkdir()
    modelgen.make_half_plus_two(d / "outside" / "m", 1)
    (d / "models.config").write_text(model_config(models / "half_plus_two"))
    ca, rogue = CertificateAuthority("pyserving-test-ca"), CertificateAuthority("rogue-ca")
    material = {"ca": ca, "rogue": rogue, "server": ca.issue("server", server=True),
                "server2": ca.issue("server2", server=True), "client": ca.issue("ops-client"),
                "unmapped": ca.issue("nobody"), "rogue_client": rogue.issue("ops-client")}
    issuer = TokenIssuer(ISSUER, AUDIENCE)
    issuer.add_key("k1")
    jwks = JwksServer(issuer).__enter__()
    jwt_section = {"jwt": {"issuer": ISSUER, "audience": AUDIENCE, "algorithms": ["RS256"], "jwks_url": jwks.url,
                           "jwks_refetch_cooldown_seconds": 0, "leeway_seconds": 0}}
    (d / "secure.yaml").write_text(auth_file(jwt_section))
    (d / "tls.pbtxt").write_text(ssl_config_text(material["server"]))
    (d / "mutual.yaml").write_text(auth_file({"client_certificates": [{"name": "ops-client",
                                                                        "scopes": ["read", "infer"]}]}))
    (d / "mtls.pbtxt").write_text(ssl_config_text(material["server"], ca=ca, client_verify=True))
    (d / "ca.pem").write_bytes(ca.pem)
    servers = {
        "secure": ServerProcess(f"--model_config_file={d / 'models.config'}", f"--auth_config_file={d / 'secure.yaml'}",
                                f"--ssl_config_file={d / 'tls.pbtxt'}", f"--rest_api_ssl_config_file={d / 'tls.pbtxt'}",
                                f"--model_base_path_allowlist={models}", "--monitoring_config_file=" + str(d / "mon"),
                                f"--profiler_dir={d / 'profiles'}"),
        "mutual": ServerProcess(f"--model_config_file={d / 'models.config'}", f"--auth_config_file={d / 'mutual.yaml'}",
                                f"--ssl_config_file={d / 'mtls.pbtxt'}", f"--rest_api_ssl_config_file={d / 'mtls.pbtxt'}",
                                "--security_files_poll_wait_seconds=0.2"),
    }
    (d / "mon").write_text('prometheus_config { enable: true path: "/monitoring/prometheus/metrics" }')
    for server in servers.values():
        server.launch()
    try:
        for server in servers.values():
            server.wait_for_log("Server ready", timeout=180)
        yield {"dir": d, "models": models, "issuer": issuer, "jwks": jwks, **material, **servers}
    finally:
        for server in servers.values():
            if server.proc is not None and server.proc.poll() is None:
                server.stop()
        jwks.__exit__()


# --------------------------------------------------------------------------- clients
def https(server: ServerProcess, env, method: str, path: str, *, key: str | None = None,
          cert: tuple[str, str] | None = None, **kw) -> requests.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return requests.request(method, f"https://127.0.0.1:{server.rest_port}{path}", headers=headers,
                            verify=str(env["dir"] / "ca.pem"), cert=cert, timeout=30, **kw)


def channel(server: ServerProcess, env, *, client=None) -> grpc.Channel:
    creds = grpc.ssl_channel_credentials(
        root_certificates=env["ca"].pem,
        private_key=client.key_pem if client else None, certificate_chain=client.cert_pem if client else None)
    return grpc.secure_channel(f"localhost:{server.grpc_port}", creds)


def bearer(key: str | None) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {key}")] if key else []


def grpc_predict(ch: grpc.Channel, key: str | None, model: str = "half_plus_two"):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.inputs["x"].CopyFrom(tf.make_tensor_proto([1.0, 2.0], shape=[2]))
    return prediction_service_pb2_grpc.PredictionServiceStub(ch).Predict(request, metadata=bearer(key), timeout=30)


def grpc_status_of(call) -> tuple[grpc.StatusCode, str]:
    try:
        call()
    except grpc.RpcError as err:
        return err.code(), err.details()
    return grpc.StatusCode.OK, ""


@pytest.fixture(scope="module")
def secure(env):
    return env["secure"]


@pytest.fixture(scope="module")
def sch(env):
    with channel(env["secure"], env) as ch:
        yield ch


# --------------------------------------------------------------------------- REST answers
def test_health_probes_stay_open(env, secure, sch):
    for path in ("/healthz", "/readyz", "/v2/health/live", "/v2/health/ready"):
        assert https(secure, env, "GET", path).status_code == 200, path
    answer = health_pb2_grpc.HealthStub(sch).Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
    assert answer.status == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize("key", [None, WRONG, "Basic", "eyJhbGciOiJIUzI1NiJ9.e30.xx"])
def test_rest_refuses_missing_or_wrong_credentials_with_401(env, secure, key):
    answer = https(secure, env, "POST", "/v1/models/half_plus_two:predict", key=key, json=PREDICT)
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"].startswith("Bearer")
    assert answer.json() == {"error": "Missing or invalid credentials"}
    # the same answer for a path that does not exist: nothing is learned without credentials
    assert https(secure, env, "GET", "/v1/models/nope/metadata", key=key).json() == answer.json()


def test_rest_serves_a_good_key(env, secure):
    answer = https(secure, env, "POST", "/v1/models/half_plus_two:predict", key=INFER, json=PREDICT)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"predictions": [2.5, 3.0]}


@pytest.mark.parametrize("method,path,body,allowed,denied", [
    ("POST", "/v1/models/half_plus_two:predict", PREDICT, INFER, READ),
    ("POST", "/v1/models/half_plus_two/versions/1:predict", PREDICT, INFER, READ),
    ("GET", "/v1/models/half_plus_two", None, READ, INFER),
    ("GET", "/v1/models/half_plus_two/metadata", None, READ, INFER),
    ("GET", "/monitoring/prometheus/metrics", None, READ, INFER),
    ("GET", "/v2", None, READ, INFER),
    ("GET", "/v2/models/half_plus_two", None, READ, INFER),
    ("GET", "/v2/models/half_plus_two/ready", None, READ, INFER),
    ("POST", "/v2/models/half_plus_two/infer",
     {"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1, 2]}]}, INFER, READ),
])
def test_rest_scopes_per_operation(env, secure, method, path, body, allowed, denied):
    ok = https(secure, env, method, path, key=allowed, json=body)
    assert ok.status_code == 200, ok.text
    refused = https(secure, env, method, path, key=denied, json=body)
    assert refused.status_code == 403
    assert refused.json() == {"error": f"Permission denied: the {'infer' if allowed == INFER else 'read'} "
                                       "scope is required"}


def test_rest_scopes_per_model(env, secure):
    answer = https(secure, env, "POST", "/v1/models/half_plus_two:predict", key=OTHER, json=PREDICT)
    assert answer.status_code == 403
    # a model it may use is looked up as usual (here: not served)
    assert https(secure, env, "GET", "/v1/models/other", key=OTHER).status_code == 404
    # server-wide pages need a credential not limited to models
    assert https(secure, env, "GET", "/monitoring/prometheus/metrics", key=OTHER).status_code == 403


# --------------------------------------------------------------------------- gRPC answers
@pytest.mark.parametrize("key", [None, WRONG])
def test_grpc_refuses_missing_or_wrong_credentials(env, sch, key):
    code, details = grpc_status_of(lambda: grpc_predict(sch, key))
    assert (code, details) == (grpc.StatusCode.UNAUTHENTICATED, "Missing or invalid credentials")


def test_grpc_serves_a_good_key(env, sch):
    response = grpc_predict(sch, INFER)
    assert list(response.outputs["y"].float_val) == [2.5, 3.0]


def test_grpc_scopes_per_operation_and_model(env, sch):
    status = model_service_pb2_grpc.ModelServiceStub(sch).GetModelStatus
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "half_plus_two"
    assert grpc_status_of(lambda: status(request, metadata=bearer(READ), timeout=10))[0] == grpc.StatusCode.OK
    assert grpc_status_of(lambda: status(request, metadata=bearer(INFER), timeout=10)) == (
        grpc.StatusCode.PERMISSION_DENIED, "Permission denied: the read scope is required")
    assert grpc_status_of(lambda: grpc_predict(sch, READ))[0] == grpc.StatusCode.PERMISSION_DENIED
    assert grpc_status_of(lambda: grpc_predict(sch, OTHER)) == (
        grpc.StatusCode.PERMISSION_DENIED, "Permission denied for this model")
    infer = sch.unary_unary("/inference.GRPCInferenceService/ModelMetadata",
                            request_serializer=ModelMetadataRequest.SerializeToString,
                            response_deserializer=lambda b: b)
    metadata = ModelMetadataRequest(name="half_plus_two")
    assert grpc_status_of(lambda: infer(metadata, metadata=bearer(READ), timeout=10))[0] == grpc.StatusCode.OK
    assert grpc_status_of(lambda: infer(metadata, metadata=bearer(INFER), timeout=10))[0] == \
        grpc.StatusCode.PERMISSION_DENIED
    v2_infer = sch.unary_unary("/inference.GRPCInferenceService/ModelInfer",
                               request_serializer=ModelInferRequest.SerializeToString,
                               response_deserializer=lambda b: b)
    assert grpc_status_of(lambda: v2_infer(ModelInferRequest(model_name="half_plus_two"), metadata=bearer(READ),
                                           timeout=10))[0] == grpc.StatusCode.PERMISSION_DENIED


def test_admin_operations_need_the_admin_scope(env, sch):
    reload = model_service_pb2_grpc.ModelServiceStub(sch).HandleReloadConfigRequest
    request = model_management_pb2.ReloadConfigRequest()
    entry = request.config.model_config_list.config.add(name="half_plus_two", model_platform="tensorflow")
    entry.base_path = str(env["models"] / "half_plus_two")
    for key in (INFER, READ, OTHER):
        assert grpc_status_of(lambda: reload(request, metadata=bearer(key), timeout=60))[0] == \
            grpc.StatusCode.PERMISSION_DENIED
    assert grpc_status_of(lambda: reload(request, metadata=bearer(ALL), timeout=60))[0] == grpc.StatusCode.OK
    profile = sch.unary_unary("/tensorflow.ProfilerService/Profile",
                              request_serializer=ProfileRequest.SerializeToString, response_deserializer=lambda b: b)
    for key in (None, READ):
        code, _ = grpc_status_of(lambda: profile(ProfileRequest(duration_ms=10), metadata=bearer(key), timeout=30))
        assert code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)


def test_reload_base_paths_stay_under_the_allowlist(env, sch, tmp_path):
    reload = model_service_pb2_grpc.ModelServiceStub(sch).HandleReloadConfigRequest
    models, outside = env["models"], env["dir"] / "outside"
    (models / "escape").symlink_to(outside / "m")
    (outside / "file").write_text("x")
    refused = {
        "a served model elsewhere": outside / "m",
        "a file": outside / "file",
        "a missing path": outside / "missing",
        "dot-dot": f"{models}/../outside/m",
        "a symlink out": models / "escape",
        "/etc": "/etc",
        "/proc": f"/proc/{os.getpid()}",
    }
    messages = set()
    for what, path in refused.items():
        request = model_management_pb2.ReloadConfigRequest()
        request.config.model_config_list.config.add(name="m", base_path=str(path), model_platform="tensorflow")
        code, details = grpc_status_of(lambda: reload(request, metadata=bearer(ALL), timeout=60))
        assert code == grpc.StatusCode.PERMISSION_DENIED, what
        messages.add(details.replace(str(path), "PATH"))
    assert messages == {"Model base path PATH is not under an allowed root (--model_base_path_allowlist)"}
    # the served model is untouched
    assert https(env["secure"], env, "POST", "/v1/models/half_plus_two:predict", key=INFER,
                 json=PREDICT).status_code == 200


# --------------------------------------------------------------------------- JWT
def _token_answer(env, token: str) -> tuple[int, grpc.StatusCode]:
    rest = https(env["secure"], env, "POST", "/v1/models/half_plus_two:predict", key=token, json=PREDICT).status_code
    with channel(env["secure"], env) as ch:
        code = grpc_status_of(lambda: grpc_predict(ch, token))[0]
    return rest, code


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_jwt_good_token_is_served(env):
    assert _token_answer(env, env["issuer"].token("k1")) == (200, grpc.StatusCode.OK)


@pytest.mark.parametrize("claims", [
    {"lifetime": -60},  # expired
    {"aud": "someone-else"},
    {"iss": "https://evil.test"},
    {"nbf": 4_000_000_000},  # not valid yet
    {"exp": None},  # expiry required
])
def test_jwt_bad_claims_are_refused(env, claims):
    assert _token_answer(env, env["issuer"].token("k1", **claims)) == (401, grpc.StatusCode.UNAUTHENTICATED)


def test_jwt_scope_claim_decides(env):
    assert _token_answer(env, env["issuer"].token("k1", scope="read")) == (403, grpc.StatusCode.PERMISSION_DENIED)


def test_jwt_alg_none_and_algorithm_confusion_are_refused(env):
    issuer = env["issuer"]
    payload = json.loads(base64.urlsafe_b64decode(issuer.token("k1").split(".")[1] + "=="))
    body = _b64(json.dumps(payload).encode())
    none = f"{_b64(json.dumps({'alg': 'none', 'kid': 'k1'}).encode())}.{body}."
    head = _b64(json.dumps({"alg": "HS256", "kid": "k1", "typ": "JWT"}).encode())
    signature = hmac.new(issuer.public_pem("k1"), f"{head}.{body}".encode(), hashlib.sha256).digest()
    confused = f"{head}.{body}.{_b64(signature)}"
    assert _token_answer(env, none) == (401, grpc.StatusCode.UNAUTHENTICATED)
    assert _token_answer(env, confused) == (401, grpc.StatusCode.UNAUTHENTICATED)


def test_jwt_unknown_kid_refetches_once_then_refuses(env):
    issuer, jwks = env["issuer"], env["jwks"]
    issuer.add_key("k-unpublished", publish=False)
    token = issuer.token("k-unpublished")
    before = jwks.hits
    assert https(env["secure"], env, "POST", "/v1/models/half_plus_two:predict", key=token,
                 json=PREDICT).status_code == 401
    assert jwks.hits == before + 1
    assert _token_answer(env, token) == (401, grpc.StatusCode.UNAUTHENTICATED)
    assert jwks.hits == before + 1


def test_jwt_key_rotation(env):
    issuer = env["issuer"]
    old = issuer.token("k1")
    assert _token_answer(env, old) == (200, grpc.StatusCode.OK)  # cached from here on
    issuer.add_key("k2", publish=False)
    issuer.published[:] = ["k2"]
    try:
        assert _token_answer(env, issuer.token("k2")) == (200, grpc.StatusCode.OK)  # new kid: one refetch
        assert _token_answer(env, old) == (401, grpc.StatusCode.UNAUTHENTICATED)  # k1 left the set
    finally:
        issuer.published[:] = ["k1"]


# --------------------------------------------------------------------------- accounting
def test_denials_are_counted_and_logged_without_secrets(env, secure):
    page = https(secure, env, "GET", "/monitoring/prometheus/metrics", key=READ).text
    counts = dict(re.findall(r'pyserving_auth_denials_total\{entrypoint="rest",reason="(\w+)"\} (\S+)', page))
    assert float(counts["missing"]) >= 1 and float(counts["invalid"]) >= 1 and float(counts["forbidden"]) >= 1
    assert 'entrypoint="grpc"' in page
    output = secure.output
    assert re.search(r"Denied POST /v1/models/half_plus_two:predict from \S*127\.0\.0\.1: unknown API key", output)
    for secret in (*KEYS, WRONG):
        assert secret not in output


# --------------------------------------------------------------------------- TLS
def _openssl_connects(port: int, *args: str) -> bool:
    if shutil.which("openssl") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("openssl is not installed (apt-get install openssl)")
        pytest.skip("openssl is not installed")
    result = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-alpn", "h2,http/1.1",
                             *args], input=b"", capture_output=True, timeout=30)
    return result.returncode == 0 and b"Cipher is (NONE)" not in result.stdout


@pytest.mark.parametrize("port_of", ["rest_port", "grpc_port"])
def test_tls_versions_and_ciphers(env, secure, port_of):
    port = getattr(secure, port_of)
    assert _openssl_connects(port, "-tls1_3")
    assert _openssl_connects(port, "-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256")
    weak = "DEFAULT:@SECLEVEL=0"
    assert not _openssl_connects(port, "-tls1", "-cipher", weak)
    assert not _openssl_connects(port, "-tls1_1", "-cipher", weak)
    # without forward secrecy, CBC with SHA-1, no encryption (3DES and RC4 are not even in OpenSSL 3)
    for cipher in ("AES128-SHA", "AES128-GCM-SHA256", "ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-NULL-SHA"):
        assert not _openssl_connects(port, "-tls1_2", "-cipher", cipher + ":@SECLEVEL=0"), cipher


# --------------------------------------------------------------------------- mutual TLS
def _cert_files(env, name: str) -> tuple[str, str]:
    return env[name].write(env["dir"])


def test_mtls_client_certificate_maps_to_scopes(env):
    mutual = env["mutual"]
    answer = https(mutual, env, "POST", "/v1/models/half_plus_two:predict", cert=_cert_files(env, "client"),
                   json=PREDICT)
    assert answer.status_code == 200, answer.text
    assert https(mutual, env, "POST", "/v1/models/half_plus_two:predict", cert=_cert_files(env, "unmapped"),
                 json=PREDICT).status_code == 401
    with channel(mutual, env, client=env["client"]) as ch:
        assert list(grpc_predict(ch, None).outputs["y"].float_val) == [2.5, 3.0]
    with channel(mutual, env, client=env["unmapped"]) as ch:
        assert grpc_status_of(lambda: grpc_predict(ch, None))[0] == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize("who", ["rogue_client", None])
def test_mtls_refuses_an_untrusted_or_missing_client_certificate(env, who):
    mutual = env["mutual"]
    # TLS 1.3: the client hears of the refusal after its side of the handshake, as a closed connection
    with pytest.raises(requests.exceptions.ConnectionError):
        https(mutual, env, "GET", "/v1/models/half_plus_two", cert=_cert_files(env, who) if who else None)
    with channel(mutual, env, client=env[who] if who else None) as ch:
        assert grpc_status_of(lambda: grpc_predict(ch, None))[0] == grpc.StatusCode.UNAVAILABLE


def _server_certificate(env, port: int) -> int:
    context = ssl.create_default_context(cafile=str(env["dir"] / "ca.pem"))
    context.load_cert_chain(*_cert_files(env, "client"))
    context.set_alpn_protocols(["h2", "http/1.1"])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            from cryptography import x509

            return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True)).serial_number


def test_certificate_reload_without_restart(env):
    mutual = env["mutual"]
    first = env["server"].serial
    assert _server_certificate(env, mutual.rest_port) == first
    assert _server_certificate(env, mutual.grpc_port) == first
    start = len(mutual.lines)
    (env["dir"] / "mtls.pbtxt").write_text(ssl_config_text(env["server2"], ca=env["ca"], client_verify=True))
    for flag in ("--rest_api_ssl_config_file", "--ssl_config_file"):
        mutual.wait_for_log(f"reloaded from {env['dir'] / 'mtls.pbtxt'} ({flag})", timeout=30, start=start)
    assert _server_certificate(env, mutual.rest_port) == env["server2"].serial
    assert _server_certificate(env, mutual.grpc_port) == env["server2"].serial
    with channel(mutual, env, client=env["client"]) as ch:
        assert list(grpc_predict(ch, None).outputs["y"].float_val) == [2.5, 3.0]


def test_auth_file_reload_and_failure_limit(env):
    mutual = env["mutual"]
    new = "key-new-0123456789"
    start = len(mutual.lines)
    (env["dir"] / "mutual.yaml").write_text(auth_file(
        {"failure_limit": {"max_failures": 3, "window_seconds": 600}}, keys={new: {"scopes": ["read"]}}))
    mutual.wait_for_log("Auth config reloaded", timeout=30, start=start)
    cert = _cert_files(env, "client")
    assert https(mutual, env, "GET", "/v1/models/half_plus_two", key=new, cert=cert).status_code == 200
    assert https(mutual, env, "GET", "/v1/models/half_plus_two", key=READ, cert=cert).status_code == 401
    # another loopback address fails three times, then is refused whatever it sends
    context = ssl.create_default_context(cafile=str(env["dir"] / "ca.pem"))
    context.load_cert_chain(*cert)

    def get(key: str) -> int:
        conn = http.client.HTTPSConnection("127.0.0.1", mutual.rest_port, source_address=("127.0.0.2", 0),
                                           context=context, timeout=10)
        try:
            conn.request("GET", "/v1/models/half_plus_two", headers={"Authorization": f"Bearer {key}"})
            return conn.getresponse().status
        finally:
            conn.close()

    assert [get(WRONG) for _ in range(3)] == [401, 401, 401]
    assert get(new) == 429
    assert https(mutual, env, "GET", "/v1/models/half_plus_two", key=new, cert=cert).status_code == 200


def test_readme_security_example_runs(env, secure):
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("\n## Security\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```py\n(.*?)```", section, flags=re.S)
    assert blocks
    for block in blocks:
        code = block.replace('"ca.pem"', repr(str(env["dir"] / "ca.pem"))) \
                    .replace("localhost:8500", f"localhost:{secure.grpc_port}") \
                    .replace("localhost:8501", f"localhost:{secure.rest_port}").replace("my-api-key", INFER)
        printed: list[str] = []
        exec(compile(code, "README.md", "exec"), {"print": lambda *a: printed.append(" ".join(map(str, a)))})  # noqa: S102
        assert printed == [re.search(r"print\(.*\)\s*# (.*)", block).group(1).strip()]


@pytest.mark.parametrize("flag,text,message", [
    ("--auth_config_file", "api_keys: [{sha256: abc, scopes: [read]}]",
     "invalid --auth_config_file {path}: api_keys[0].sha256: expected the 64 hex digits of the key's SHA-256"),
    ("--rest_api_ssl_config_file", 'server_key: "not a key" server_cert: "nor a certificate"',
     "server_key / server_cert do not load"),
])
def test_unusable_security_files_stop_the_start(env, tmp_path, flag, text, message):
    path = tmp_path / "file"
    path.write_text(text)
    code, output = run_to_exit(f"--model_config_file={env['dir'] / 'models.config'}", f"{flag}={path}")
    assert code == 255
    assert "Failed to start server. Error: " in output and message.format(path=path) in output
    assert "Traceback" not in output
