"""Models served from object stores, against real S3-compatible, GCS and Azure servers on
loopback (tests/object_stores.py) and the real pyserving process.

Versions are half_plus_two exports whose intercept is their version number, so a
prediction tells which version answered: y = 0.5 x + version.
"""

import threading
import time

import pytest
import requests

from modelgen import make_half_plus_two
from support import ServerProcess, free_port, run_to_exit

pytestmark = pytest.mark.slow

POLL = "--file_system_poll_wait_seconds=1"


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """Local exports of versions 1, 2 and 3 of half_plus_two (intercept = version)."""
    root = tmp_path_factory.mktemp("exports")
    for version in (1, 2, 3):
        make_half_plus_two(root, version, intercept=float(version))
    return root


def predict(server, x=1.0, timeout=30):
    response = server.post("/v1/models/hpt:predict", json={"instances": [x]}, timeout=timeout)
    assert response.status_code == 200, response.text
    return response.json()["predictions"][0]


def statuses(server):
    body = server.get("/v1/models/hpt").json()
    return {int(v["version"]): v for v in body.get("model_version_status", [])}


def wait_for(condition, timeout=60, what="condition"):
    """Polls `condition` (a server's answers) until true: the server has no push signal for
    a store's changes, so the test watches what a client sees."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {timeout}s")
        time.sleep(0.05)


def gone(server, version):
    """Unloaded (END, as TF Serving keeps reporting it) or never known."""
    return statuses(server).get(version, {}).get("state", "END") == "END"


def available(server, version):
    return statuses(server).get(version, {}).get("state") == "AVAILABLE" and predict(server) == 0.5 + version


class Clients:
    """Predicts without pause from a thread; counts what did not succeed."""

    def __init__(self, server):
        self.server, self.ok, self.failures, self.seen = server, 0, [], set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        session = requests.Session()
        while not self._stop.is_set():
            try:
                r = session.post(self.server.url + "/v1/models/hpt:predict", json={"instances": [1.0]}, timeout=30)
                if r.status_code == 200:
                    self.ok += 1
                    self.seen.add(r.json()["predictions"][0])
                else:
                    self.failures.append(r.text)
            except requests.RequestException as exc:
                self.failures.append(repr(exc))

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(60)


def serve(store, url, *args, cache=None, env=None):
    extra = [f"--model_cache_dir={cache}"] if cache is not None else []
    return ServerProcess("--model_name=hpt", f"--model_base_path={url}", POLL, *extra, *args,
                         env={**store.env, **(env or {})})


def test_a_slow_upload_is_loaded_only_once_complete_then_swaps_in_without_a_failed_request(
        moto_store, exports, tmp_path):
    store, bucket = moto_store, "swap"
    store.make_bucket(bucket)
    base = store.url(bucket, "models", "hpt")
    store.upload_dir(exports / "1", store.url(bucket, "models", "hpt", "1"))
    cache = tmp_path / "cache"
    monitoring = tmp_path / "monitoring.config"
    monitoring.write_text('prometheus_config { enable: true path: "/monitoring/prometheus/metrics" }\n')
    with serve(store, base, f"--monitoring_config_file={monitoring}", cache=cache) as server:
        assert predict(server) == 1.5
        seen_during_upload = set()
        uploading = threading.Event()
        uploading.set()

        def watch():
            while uploading.is_set():
                seen_during_upload.update(statuses(server))

        watcher = threading.Thread(target=watch, daemon=True)
        with Clients(server) as clients:
            watcher.start()
            # file by file, each pause shorter than a poll: consecutive listings differ
            store.upload_dir(exports / "2", store.url(bucket, "models", "hpt", "2"), pause_seconds=0.6)
            uploading.clear()
            watcher.join(30)
            wait_for(lambda: available(server, 2), what="version 2")
            assert clients.ok > 0
        assert clients.failures == []
        assert seen_during_upload == {1}  # version 2 not even LOADING before its last file
        assert server.output.count("Copied version 2 of model hpt") == 1
        assert sorted(p.name for p in cache.glob("hpt-*/*")) == ["2", "2.listing.json"]

        # the newest version removed from the store: rollback, and its copy goes
        store.remove(store.url(bucket, "models", "hpt", "2"))
        wait_for(lambda: predict(server) == 1.5 and gone(server, 2), what="rollback to 1")
        assert sorted(p.name for p in cache.glob("hpt-*/*")) == ["1", "1.listing.json"]
        page = server.get("/monitoring/prometheus/metrics").text
        assert 'pyserving_model_store_downloads_total{model="hpt",result="OK"} 3\n' in page
        assert 'pyserving_model_store_lists_total{model="hpt",result="OK"}' in page
        assert 'pyserving_model_store_download_bytes_total{model="hpt"}' in page


@pytest.mark.parametrize("kind", ["s3rver", "gcs", "azurite"])
def test_each_store_serves_swaps_and_rolls_back(kind, request, exports):
    store = request.getfixturevalue(f"{kind}_store")
    bucket = "each"
    store.make_bucket(bucket)
    base = store.url(bucket, "models", "hpt")
    store.upload_dir(exports / "1", store.url(bucket, "models", "hpt", "1"))
    with serve(store, base) as server:
        assert predict(server) == 1.5
        store.upload_dir(exports / "3", store.url(bucket, "models", "hpt", "3"))
        wait_for(lambda: available(server, 3), what="version 3")
        store.remove(store.url(bucket, "models", "hpt", "3"))
        wait_for(lambda: predict(server) == 1.5 and gone(server, 3), what="rollback to 1")
    store.delete_bucket(bucket)


def test_the_store_stopped_while_serving_costs_no_request_and_polling_recovers(s3rver_store, exports):
    store, bucket = s3rver_store, "outage"
    store.make_bucket(bucket)
    store.upload_dir(exports / "1", store.url(bucket, "models", "hpt", "1"))
    with serve(store, store.url(bucket, "models", "hpt")) as server:
        with Clients(server) as clients:
            store.stop()
            try:
                mark = len(server.lines)
                server.wait_for_log("encountered a filesystem access error", start=mark, timeout=60)
                status = statuses(server)[1]
                assert status["state"] == "AVAILABLE"  # still served, its status tells why not fresh
                assert "Could not find base path" in status["status"]["error_message"]
                time.sleep(10)  # the outage itself: ten seconds of requests against a dead store
            finally:
                store.start()
            wait_for(lambda: statuses(server)[1]["status"]["error_code"] == "OK", what="recovery")
        assert clients.failures == [] and clients.ok > 0
        store.upload_dir(exports / "2", store.url(bucket, "models", "hpt", "2"))
        wait_for(lambda: available(server, 2), what="version 2 after the outage")


def test_a_bucket_that_disappears_and_comes_back(moto_store, exports):
    store, bucket = moto_store, "vanishing"
    store.make_bucket(bucket)
    store.upload_dir(exports / "1", store.url(bucket, "models", "hpt", "1"))
    with serve(store, store.url(bucket, "models", "hpt")) as server:
        store.delete_bucket(bucket)
        wait_for(lambda: "bucket does not exist" in statuses(server)[1]["status"]["error_message"],
                 what="the store's error in the status")
        assert predict(server) == 1.5
        store.make_bucket(bucket)
        store.upload_dir(exports / "2", store.url(bucket, "models", "hpt", "2"))
        wait_for(lambda: available(server, 2), what="version 2 in the new bucket")
        assert statuses(server)[2]["status"]["error_code"] == "OK"


def test_wrong_credentials_at_start_fail_with_the_stores_message_and_no_secret(s3rver_store):
    store = s3rver_store
    store.make_bucket("creds")
    secret = "not-the-secret-4a5b6c7d"
    code, output = run_to_exit("--model_name=hpt", f"--model_base_path={store.url('creds', 'models', 'hpt')}",
                               env={**store.env, "AWS_ACCESS_KEY_ID": "WRONGKEY", "AWS_SECRET_ACCESS_KEY": secret})
    assert code != 0
    assert "Failed to start server" in output
    assert "Access Key Id you provided does not exist" in output
    assert secret not in output


@pytest.mark.parametrize("what", ["missing bucket", "empty prefix", "unreachable endpoint"])
def test_a_base_path_that_cannot_be_served_at_start_fails_the_start(what, moto_store):
    store = moto_store
    env = {}
    if what == "missing bucket":
        url, expected = store.url("no-such-bucket", "models", "hpt"), "The specified bucket does not exist"
    elif what == "empty prefix":
        store.make_bucket("empty")
        url, expected = store.url("empty", "models", "hpt"), "No versions of servable hpt found under base path"
    else:
        url, expected = store.url("any", "models", "hpt"), "Could not connect to the endpoint URL"
        env = {"S3_ENDPOINT": f"127.0.0.1:{free_port()}"}
    code, output = run_to_exit("--model_name=hpt", f"--model_base_path={url}", env={**store.env, **env})
    assert code != 0
    assert "Failed to start server" in output and expected in output


def test_workers_share_one_copy_made_by_the_supervisor(moto_store, exports, tmp_path):
    store, bucket = moto_store, "workers"
    store.make_bucket(bucket)
    store.upload_dir(exports / "1", store.url(bucket, "models", "hpt", "1"))
    cache = tmp_path / "cache"
    with serve(store, store.url(bucket, "models", "hpt"), "--workers=2", cache=cache) as server:
        assert predict(server) == 1.5
        store.upload_dir(exports / "2", store.url(bucket, "models", "hpt", "2"))
        wait_for(lambda: available(server, 2), what="version 2")
        assert server.output.count("Copied version 2 of model hpt") == 1
        assert sorted(p.name for p in cache.glob("hpt-*/*")) == ["2", "2.listing.json"]


class Blackhole:
    """A TCP relay to a store that can turn silent: connections stay open, no byte moves
    either way (a store or network that hangs instead of refusing)."""

    def __init__(self, target_port):
        import socket
        self.target = ("127.0.0.1", target_port)
        self.silent = threading.Event()
        self.swallowed = threading.Event()  # a request came while silent
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._sockets = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        import socket
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            self._sockets += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client), daemon=True).start()

    def _pipe(self, source, sink):
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                return
            if not data:
                return
            if self.silent.is_set():
                self.swallowed.set()
                continue  # swallowed: the other side waits for an answer that never comes
            try:
                sink.sendall(data)
            except OSError:
                return

    def close(self):
        self.listener.close()
        for s in self._sockets:
            s.close()


def test_sigterm_while_a_poll_waits_on_a_silent_store_exits_at_once(moto_store, exports):
    store, bucket = moto_store, "silent"
    store.make_bucket(bucket)
    store.upload_dir(exports / "1", store.url(bucket, "models", "hpt", "1"))
    relay = Blackhole(int(store.env["S3_ENDPOINT"].rsplit(":", 1)[1]))
    try:
        server = serve(store, store.url(bucket, "models", "hpt"),
                       env={"S3_ENDPOINT": f"127.0.0.1:{relay.port}"}).start()
        assert predict(server) == 1.5
        relay.silent.set()
        mark = len(server.lines)
        assert relay.swallowed.wait(30)  # a poll now waits on the store (60 s read timeout, retried)
        assert predict(server) == 1.5
        server.proc.send_signal(15)
        started = time.monotonic()
        assert server.wait_exit(120) == 0
        # Exit waits for the drain (no request in flight) and not for the poll: a minute at least.
        assert time.monotonic() - started < 30, server.lines[mark:]
    finally:
        relay.close()


def test_a_version_waits_for_its_multipart_upload_in_progress(moto_store, exports):
    """A big file uploads in parts and is invisible until complete: the version is not
    copied while an upload under it is in progress, however long it takes."""
    import boto3

    store, bucket = moto_store, "multipart"
    store.make_bucket(bucket)
    store.upload_dir(exports / "1", store.url(bucket, "models", "hpt", "1"))
    with serve(store, store.url(bucket, "models", "hpt")) as server:
        s3 = boto3.client("s3", endpoint_url="http://" + store.env["S3_ENDPOINT"], region_name="us-east-1",
                          aws_access_key_id=store.env["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=store.env["AWS_SECRET_ACCESS_KEY"])
        # All of version 2 is there and looks whole, but for an asset still uploading.
        key = "models/hpt/2/assets/large_vocabulary.txt"
        upload = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
        part = s3.upload_part(Bucket=bucket, Key=key, UploadId=upload, PartNumber=1, Body=b"token\n" * 1000)
        store.upload_dir(exports / "2", store.url(bucket, "models", "hpt", "2"))
        mark = len(server.lines)
        server.wait_for_log("still changing", start=mark)
        server.wait_for_log("still changing", start=server.wait_for_log("still changing", start=mark) + 1)
        assert "Copied version 2" not in server.output and gone(server, 2)
        s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload,
                                     MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]})
        wait_for(lambda: available(server, 2), what="version 2 once its upload completed")
