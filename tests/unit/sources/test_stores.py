"""sources/stores.py: the environment -> fsspec options mapping, paths, redaction and error
codes (pure), then reading and listing on the four real store servers (tests/object_stores.py)."""

import sys

import object_stores
import pytest

from pyserving.errors import Code, ServingError
from pyserving.sources import stores

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


# -- S3 -----------------------------------------------------------------------------------
def test_s3_endpoint_is_https_unless_told_otherwise():
    assert stores.s3_options({"S3_ENDPOINT": "minio:9000"})["endpoint_url"] == "https://minio:9000"
    assert stores.s3_options({"S3_ENDPOINT": "minio:9000", "S3_USE_HTTPS": "0"})["endpoint_url"] == "http://minio:9000"
    assert stores.s3_options({"S3_ENDPOINT": "minio:9000", "S3_USE_HTTPS": "false"})["endpoint_url"] == "http://minio:9000"
    assert stores.s3_options({"S3_ENDPOINT": "minio:9000", "S3_USE_HTTPS": "1"})["endpoint_url"] == "https://minio:9000"
    # a scheme already given is kept, whatever S3_USE_HTTPS says
    assert stores.s3_options({"S3_ENDPOINT": "http://minio:9000"})["endpoint_url"] == "http://minio:9000"


def test_s3_verify_ssl_off_only_when_asked():
    assert "verify" not in stores.s3_options({})["client_kwargs"]
    assert "verify" not in stores.s3_options({"S3_VERIFY_SSL": "1"})["client_kwargs"]
    assert stores.s3_options({"S3_VERIFY_SSL": "0"})["client_kwargs"]["verify"] is False


def test_s3_region():
    assert stores.s3_options({"AWS_REGION": "eu-west-3"})["client_kwargs"]["region_name"] == "eu-west-3"
    assert "region_name" not in stores.s3_options({})["client_kwargs"]


def test_s3_timeouts_are_milliseconds():
    config = stores.s3_options({"S3_CONNECT_TIMEOUT_MSEC": "2500", "S3_REQUEST_TIMEOUT_MSEC": "30000"})["config_kwargs"]
    assert (config["connect_timeout"], config["read_timeout"]) == (2.5, 30.0)
    defaults = stores.s3_options({"S3_CONNECT_TIMEOUT_MSEC": "soon"})["config_kwargs"]
    assert (defaults["connect_timeout"], defaults["read_timeout"]) == (10.0, 60.0)


@pytest.mark.parametrize("env, endpoint", [
    ({"S3_ENDPOINT": "minio:9000"}, "https://minio:9000"),
    ({"AWS_ENDPOINT_URL": "http://minio:9000"}, "http://minio:9000"),
    ({"AWS_ENDPOINT_URL_S3": "http://s3only:9000", "AWS_ENDPOINT_URL": "http://all:9000"}, "http://s3only:9000"),
    ({"S3_ENDPOINT": "tf:9000", "AWS_ENDPOINT_URL": "http://sdk:9000"}, "https://tf:9000"),
])
def test_a_custom_endpoint_is_addressed_path_style(env, endpoint):
    options = stores.s3_options(env)
    assert options["endpoint_url"] == endpoint
    assert options["config_kwargs"]["s3"] == {"addressing_style": "path"}


def test_aws_itself_is_addressed_as_the_sdk_chooses():
    options = stores.s3_options({"AWS_REGION": "us-east-1"})
    assert "endpoint_url" not in options and "s3" not in options["config_kwargs"]


def test_s3_credentials_come_from_the_given_environment():
    options = stores.s3_options({"AWS_ACCESS_KEY_ID": "AKIA", "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_SESSION_TOKEN": "tok"})
    assert (options["key"], options["secret"], options["token"]) == ("AKIA", SECRET, "tok")
    assert not {"key", "secret", "token"} & set(stores.s3_options({}))  # the SDK's own chain then


# -- GCS and Azure --------------------------------------------------------------------------
def test_gcs_emulator_is_anonymous_at_its_endpoint():
    assert stores.gcs_options({"STORAGE_EMULATOR_HOST": "http://127.0.0.1:9023"}) == {
        "endpoint_url": "http://127.0.0.1:9023", "token": "anon"}
    assert stores.gcs_options({"STORAGE_EMULATOR_HOST": "localhost:9023"})["endpoint_url"] == "http://localhost:9023"


def test_gcs_credentials_and_project():
    assert stores.gcs_options({"GOOGLE_APPLICATION_CREDENTIALS": "/k.json", "GOOGLE_CLOUD_PROJECT": "p"}) == {
        "token": "google_default", "project": "p"}
    assert stores.gcs_options({}) == {}


def test_azure_connection_string_wins():
    env = {"AZURE_STORAGE_CONNECTION_STRING": "AccountName=a;AccountKey=k", "AZURE_STORAGE_ACCOUNT": "other",
           "AZURE_STORAGE_KEY": "other-key"}
    assert stores.azure_options(env) == {"connection_string": "AccountName=a;AccountKey=k"}


@pytest.mark.parametrize("env", [
    {"AZURE_STORAGE_ACCOUNT": "acct", "AZURE_STORAGE_KEY": SECRET},
    {"AZURE_STORAGE_ACCOUNT_NAME": "acct", "AZURE_STORAGE_ACCOUNT_KEY": SECRET},
])
def test_azure_account_and_key(env):
    assert stores.azure_options(env) == {"account_name": "acct", "account_key": SECRET}


def test_azure_sas_token_and_default_chain():
    assert stores.azure_options({"AZURE_STORAGE_ACCOUNT": "acct", "AZURE_STORAGE_SAS_TOKEN": "sv=1&sig=x"}) == {
        "account_name": "acct", "sas_token": "sv=1&sig=x"}
    assert stores.azure_options({}) == {}


# -- paths ----------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["s3://b/m", "S3://b/m", "gs://b/m", "gcs://b/m", "az://c/m", "abfs://c/m",
                                  "abfss://c@acct.dfs.core.windows.net/m"])
def test_remote_paths(path):
    assert stores.is_remote(path)
    assert stores.local_path(path) == path


@pytest.mark.parametrize("path", ["/models/m", "models/m", "file:///models/m", "http://host/m", "s3:/b/m", ""])
def test_local_and_unknown_paths_are_not_remote(path):
    assert not stores.is_remote(path)


def test_local_path():
    assert stores.local_path("file:///models/m") == "/models/m"
    assert stores.local_path("file://models/m") == "/models/m"
    assert stores.local_path("/models/m") == "/models/m"
    assert stores.local_path("relative/m") == "relative/m"


# -- secrets and errors ---------------------------------------------------------------------
def test_redact_removes_secrets_of_the_environment():
    env = {"AWS_SECRET_ACCESS_KEY": SECRET, "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE"}
    text = stores.redact(f"signature computed with {SECRET} failed for AKIAEXAMPLE", env)
    assert SECRET not in text and "<redacted>" in text
    assert "AKIAEXAMPLE" in text  # an access key id names the key, it is no secret


def test_redact_removes_keys_and_signatures_in_messages():
    text = stores.redact("bad DefaultEndpointsProtocol=http;AccountName=a;AccountKey=c2VjcmV0a2V5;Blob... "
                         "and https://a.blob/c/x?sv=2020&sig=abc%2Fdef&se=1 and X-Amz-Signature=0123abcd", {})
    for secret in ("c2VjcmV0a2V5", "abc%2Fdef", "0123abcd"):
        assert secret not in text
    assert "AccountName=a" in text and "sv=2020" in text


def test_redact_removes_a_connection_strings_key_quoted_alone():
    env = {"AZURE_STORAGE_CONNECTION_STRING": f"AccountName=a;AccountKey={SECRET};EndpointSuffix=x"}
    assert SECRET not in stores.redact(f"cannot sign with '{SECRET}'", env)


def test_redact_reads_os_environ_by_default(monkeypatch):
    monkeypatch.setenv("AZURE_STORAGE_KEY", SECRET)
    assert SECRET not in stores.redact(f"key {SECRET}")


@pytest.mark.parametrize("exc, code", [
    (FileNotFoundError("The specified bucket does not exist"), Code.NOT_FOUND),
    (PermissionError("Access Denied"), Code.PERMISSION_DENIED),
    (ConnectionRefusedError(111, "Connection refused"), Code.UNAVAILABLE),
    (TimeoutError("read timed out"), Code.UNAVAILABLE),
    (RuntimeError("something else"), Code.UNAVAILABLE),
])
def test_store_error_codes(exc, code):
    err = stores.store_error(exc, "s3://b/m")
    assert err.code == code and err.message


class _HttpStatusError(Exception):
    def __init__(self, message, status_code):
        super().__init__(message)
        self.status_code = status_code


@pytest.mark.parametrize("exc, code", [
    (_HttpStatusError("Server failed to authenticate the request", 403), Code.PERMISSION_DENIED),
    (_HttpStatusError("The specified container does not exist", 404), Code.NOT_FOUND),
    (_HttpStatusError("Service unavailable", 503), Code.UNAVAILABLE),
    (OSError("Forbidden: b/o/models.config\nanonymous caller"), Code.PERMISSION_DENIED),
])
def test_store_error_codes_from_http_statuses(exc, code):
    assert stores.store_error(exc, "az://c/m").code == code


def test_store_error_is_one_line_without_a_response_body():
    exc = _HttpStatusError("Operation returned an invalid status 'Forbidden'\nErrorCode:AuthorizationFailure\n"
                           "Content: <?xml version=\"1.0\"?>\n<Error><Code>AuthorizationFailure</Code></Error>", 403)
    assert stores.store_error(exc, "az://c/m").message == (
        "Operation returned an invalid status 'Forbidden' ErrorCode:AuthorizationFailure")
    assert len(stores.store_error(RuntimeError("x" * 5000), "s3://b").message) < 600


def test_store_error_keeps_the_stores_message_without_secrets():
    env = {"AWS_SECRET_ACCESS_KEY": SECRET}
    err = stores.store_error(PermissionError(f"SignatureDoesNotMatch for {SECRET}"), "s3://b/m", env)
    assert err.message.startswith("SignatureDoesNotMatch") and SECRET not in err.message


def test_a_bare_path_or_url_says_no_such_file():
    for reason in ("b/m/1", "s3://b/m/1", "http://127.0.0.1:1/download/storage/v1/b/b/o/m?alt=media"):
        assert stores.store_error(FileNotFoundError(reason), "s3://b/m/1").message == "No such file or directory"


def test_store_error_passes_serving_errors_through():
    err = ServingError(Code.FAILED_PRECONDITION, "no library")
    assert stores.store_error(err, "s3://b") is err


def test_missing_library_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "gcsfs", None)
    monkeypatch.setitem(sys.modules, "gcsfs.core", None)
    with pytest.raises(ServingError) as caught:
        stores.split_remote("gs://b/m", env={})
    assert caught.value.code == Code.FAILED_PRECONDITION and "pyserving[gcs]" in caught.value.message
    with pytest.raises(OSError, match=r"pyserving\[gcs\]"):
        stores.read_text("gs://b/models.config", env={})


def test_read_local_files(tmp_path):
    (tmp_path / "models.config").write_text("model_config_list {}")
    assert stores.read_text(str(tmp_path / "models.config")) == "model_config_list {}"
    assert stores.read_bytes(f"file://{tmp_path}/models.config") == b"model_config_list {}"
    with pytest.raises(FileNotFoundError):
        stores.read_text(str(tmp_path / "missing.config"))


def test_filesystems_are_shared_per_options():
    env = {"S3_ENDPOINT": "127.0.0.1:1", "S3_USE_HTTPS": "0", "AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b"}
    fs, inner = stores.split_remote("s3://bucket/models/m/", env=env)
    assert inner == "bucket/models/m"
    assert stores.split_remote("s3://other/x", env=dict(env))[0] is fs
    assert stores.split_remote("s3://bucket/x", env={**env, "AWS_SECRET_ACCESS_KEY": "c"})[0] is not fs
    assert stores.split_remote("s3://bucket/x", env={**env, "S3_ENDPOINT": "127.0.0.1:2"})[0] is not fs


# -- on the real servers --------------------------------------------------------------------
def test_read_text_of_an_uploaded_file(any_store, tmp_path):
    bucket = any_store.new_bucket()
    (tmp_path / "models.config").write_text("model_config_list { config { name: 'm' } }\n")
    any_store.upload_dir(tmp_path, any_store.url(bucket, "configs"))
    url = any_store.url(bucket, "configs", "models.config")
    assert stores.read_text(url, env=any_store.env) == "model_config_list { config { name: 'm' } }\n"


def test_recursive_listing_has_sizes_and_etags(any_store, tmp_path):
    bucket = any_store.new_bucket()
    (tmp_path / "1" / "variables").mkdir(parents=True)
    (tmp_path / "1" / "saved_model.pb").write_bytes(b"p" * 10)
    (tmp_path / "1" / "variables" / "variables.data-00000-of-00001").write_bytes(b"v" * 1000)
    (tmp_path / "2").mkdir()
    (tmp_path / "2" / "saved_model.pb").write_bytes(b"q" * 10)
    any_store.upload_dir(tmp_path, any_store.url(bucket, "models", "m"))

    fs, inner = stores.split_remote(any_store.url(bucket, "models", "m"), env=any_store.env)
    found = fs.find(inner, detail=True)
    sizes = {name[len(inner) + 1:]: info["size"] for name, info in found.items()}
    assert sizes == {"1/saved_model.pb": 10, "1/variables/variables.data-00000-of-00001": 1000, "2/saved_model.pb": 10}
    etags = {name: {k.lower(): v for k, v in info.items()}.get("etag") for name, info in found.items()}
    assert all(etags.values()), found
    # the two identical-sized files differ in content, and so do their tags
    assert etags[f"{inner}/1/saved_model.pb"] != etags[f"{inner}/2/saved_model.pb"]


def test_a_missing_bucket_is_not_found(any_store):
    url = any_store.url("no-such-bucket-here", "models.config")
    with pytest.raises(FileNotFoundError):
        stores.read_text(url, env=any_store.env)
    fs, inner = stores.split_remote(url, env=any_store.env)
    with pytest.raises(Exception) as caught:
        fs.ls("no-such-bucket-here")
    assert stores.store_error(caught.value, url, any_store.env).code == Code.NOT_FOUND


def test_a_missing_object_is_not_found(any_store):
    bucket = any_store.new_bucket()
    with pytest.raises(FileNotFoundError) as caught:
        stores.read_text(any_store.url(bucket, "models.config"), env=any_store.env)
    assert str(caught.value)  # the store's reason, never empty


def test_a_restarted_store_is_reached_again(any_store):
    bucket = any_store.new_bucket()
    url = any_store.url(bucket, "models.config")
    any_store.write(url, "first")
    assert stores.read_text(url, env=any_store.env) == "first"
    any_store.stop()  # not read meanwhile: gcsfs and the Azure SDK retry for 30 to 90 s
    any_store.start()
    # the same cached filesystem reaches the new server
    if any_store.persistent:
        assert stores.read_text(url, env=any_store.env) == "first"
    else:
        with pytest.raises(FileNotFoundError, match="bucket does not exist"):
            stores.read_text(url, env=any_store.env)


def test_wrong_credentials_are_permission_denied_without_the_secret(s3rver_store):
    bucket = s3rver_store.new_bucket()
    url = s3rver_store.url(bucket, "models.config")
    s3rver_store.write(url, "x")
    wrong_secret = "not-the-S3RVER-secret-0123456789"
    env = {**s3rver_store.env, "AWS_ACCESS_KEY_ID": "NOT-S3RVER", "AWS_SECRET_ACCESS_KEY": wrong_secret}
    with pytest.raises(PermissionError) as caught:
        stores.read_text(url, env=env)
    assert wrong_secret not in str(caught.value)
    fs, inner = stores.split_remote(url, env=env)
    with pytest.raises(Exception) as listing:
        fs.find(bucket)
    err = stores.store_error(listing.value, url, env)
    assert err.code == Code.PERMISSION_DENIED
    assert "Access Key Id" in err.message and wrong_secret not in err.message


def test_a_wrong_azure_key_is_permission_denied_without_the_key(azurite_store):
    bucket = azurite_store.new_bucket()
    url = azurite_store.url(bucket, "models.config")
    azurite_store.write(url, "x")
    wrong_key = "V3JvbmdLZXlXcm9uZ0tleVdyb25nS2V5V3JvbmdLZXlXcm9uZ0tleVdyb25nS2V5V3Jvbmc="
    env = {"AZURE_STORAGE_CONNECTION_STRING":
           azurite_store.env["AZURE_STORAGE_CONNECTION_STRING"].replace(object_stores.AZURITE_KEY, wrong_key)}
    fs, inner = stores.split_remote(url, env=env)
    with pytest.raises(Exception) as caught:
        fs.info(inner)
    err = stores.store_error(caught.value, url, env)
    assert err.code == Code.PERMISSION_DENIED and wrong_key not in err.message
    with pytest.raises(PermissionError) as read:
        stores.read_text(url, env=env)
    assert wrong_key not in str(read.value)


# -- the fixtures themselves ----------------------------------------------------------------
@pytest.mark.parametrize("in_ci, outcome", [(False, pytest.skip.Exception), (True, pytest.fail.Exception)])
def test_a_missing_store_server_skips_but_fails_in_ci(monkeypatch, tmp_path, in_ci, outcome):
    monkeypatch.setattr(object_stores, "NODE_BIN", tmp_path)
    monkeypatch.setattr(object_stores, "IN_CI", in_ci)
    with pytest.raises(outcome) as caught:
        object_stores.started("s3rver", tmp_path)
    message = str(caught.value)
    assert "s3rver not found" in message and "scripts/setup dev" in message and "\n" not in message
