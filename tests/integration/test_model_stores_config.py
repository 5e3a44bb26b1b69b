"""Config files in a model store: the real server reads --model_config_file and
--monitoring_config_file from S3 (moto on loopback, tests/object_stores.py) and polls the
remote model config; the models themselves stay on local disk (TF Serving's testdata tree).

One shared server (`served`) answers the predict, metrics and poll tests; the startup
failures start their own.
"""

from __future__ import annotations

import uuid

import pytest

from support import ServerProcess, run_to_exit

METRICS_PATH = "/monitoring/prometheus/metrics"
# Given to the server as its AWS secret (moto accepts any): the output must never show it.
SECRET = f"store-secret-{uuid.uuid4().hex}"


def model_config(**models: str) -> str:
    entries = "\n".join(f'  config {{ name: "{name}" base_path: "{base}" model_platform: "tensorflow" }}'
                        for name, base in models.items())
    return f"model_config_list {{\n{entries}\n}}\n"


@pytest.fixture(scope="module")
def env(moto_store) -> dict[str, str]:
    return {**moto_store.env, "AWS_SECRET_ACCESS_KEY": SECRET}


@pytest.fixture(scope="module")
def bucket(moto_store) -> str:
    return moto_store.new_bucket("configs")


@pytest.fixture(scope="module")
def served(moto_store, bucket, env, testdata):
    config = moto_store.url(bucket, "models.config")
    moto_store.write(config, model_config(two=str(testdata / "saved_model_half_plus_two_cpu")))
    monitoring = moto_store.url(bucket, "monitoring.config")
    moto_store.write(monitoring, (testdata / "monitoring_config.txt").read_bytes())
    server = ServerProcess(f"--model_config_file={config}", "--model_config_file_poll_wait_seconds=1",
                           f"--monitoring_config_file={monitoring}", grpc=False, env=env)
    with server:
        yield server
    assert SECRET not in server.output


def test_models_of_a_remote_config_serve(served):
    r = served.post("/v1/models/two:predict", json={"instances": [1.0, 2.0]})
    assert r.status_code == 200, r.text
    assert r.json() == {"predictions": [2.5, 3.0]}


def test_remote_monitoring_config_turns_metrics_on(served):
    r = served.get(METRICS_PATH)
    assert r.status_code == 200, r.text
    assert ":tensorflow:serving:" in r.text


def test_an_edit_of_the_remote_config_is_polled(served, moto_store, bucket, testdata):
    mark = len(served.lines)
    moto_store.write(moto_store.url(bucket, "models.config"), model_config(
        two=str(testdata / "saved_model_half_plus_two_cpu"), three=str(testdata / "saved_model_half_plus_three")))
    mark = served.wait_for_log("Model config reloaded", start=mark)
    served.wait_for_log("{name: three version: 123} is AVAILABLE", start=mark)
    assert served.post("/v1/models/three:predict", json={"inputs": [1.0]}).json() == {"outputs": [3.5]}
    assert served.post("/v1/models/two:predict", json={"instances": [1.0]}).json() == {"predictions": [2.5]}


def test_an_unreadable_remote_config_keeps_the_current_one(served, moto_store, bucket):
    mark = len(served.lines)
    moto_store.remove(moto_store.url(bucket, "models.config"))
    served.wait_for_log("Cannot read model config file s3://", start=mark)
    assert served.post("/v1/models/two:predict", json={"instances": [1.0]}).status_code == 200


def test_a_missing_remote_config_fails_startup(moto_store, bucket, env):
    url = moto_store.url(bucket, "absent.config")
    code, out = run_to_exit(f"--model_config_file={url}", env=env)
    assert code != 0
    assert f"Cannot read model config file {url}: No such file or directory" in out
    assert SECRET not in out


def test_a_missing_bucket_fails_startup(moto_store, env):
    url = moto_store.url("no-such-bucket-for-configs", "models.config")
    code, out = run_to_exit(f"--model_config_file={url}", env=env)
    assert code != 0
    assert f"Cannot read model config file {url}: The specified bucket does not exist" in out
    assert SECRET not in out


def test_a_missing_remote_batching_file_fails_startup(moto_store, bucket, env, testdata):
    url = moto_store.url(bucket, "batching.config")
    code, out = run_to_exit("--enable_batching", f"--batching_parameters_file={url}", "--model_name=two",
                             f"--model_base_path={testdata / 'saved_model_half_plus_two_cpu'}", env=env)
    assert code != 0
    assert f"Cannot read batching parameters file {url}: No such file or directory" in out
    assert SECRET not in out


def test_every_config_file_reader_reads_a_store(monkeypatch, moto_store, bucket, env):
    from pyserving.api.grpc.server import load_ssl_credentials
    from pyserving.batching.options import read_batching_parameters_file
    from pyserving.errors import StartupError
    from pyserving.model_server import _session_config
    from pyserving.monitoring.exporter import read_monitoring_config
    from pyserving.options import ServerOptions
    from pyserving.server.model_config import read_config_file

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    files = {
        "models": 'model_config_list { config { name: "m" base_path: "/models/m" } }',
        "monitoring": 'prometheus_config { enable: true path: "/metrics" }',
        "batching": "max_batch_size { value: 7 } num_batch_threads { value: 2 }",
        "ssl": 'custom_ca: "ca"',  # read and parsed, then refused for its missing key pair
        "session": "intra_op_parallelism_threads: 3",
    }
    url = {name: moto_store.url(bucket, "readers", f"{name}.config") for name in files}
    for name, text in files.items():
        moto_store.write(url[name], text)

    assert read_config_file(url["models"]).model_config_list.config[0].name == "m"
    assert read_monitoring_config(url["monitoring"]).path == "/metrics"
    assert read_batching_parameters_file(url["batching"]).max_batch_size == 7
    with pytest.raises(StartupError, match="must set server_key and server_cert"):
        load_ssl_credentials(url["ssl"])
    assert _session_config(ServerOptions(tensorflow_session_config_file=url["session"])).intra_op_parallelism_threads == 3
