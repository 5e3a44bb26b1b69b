"""RemoteBasePath and ModelCache on fsspec's in-memory filesystem: stable listings,
snapshots, retries, pruning, reuse and the cache lock."""

import threading
import uuid

import fsspec
import pytest

from pyserving.errors import Code, ServingError
from pyserving.sources.object_store import ModelCache, RemoteBasePath, StoreSettings


class Recorder:
    def __init__(self):
        self.lists, self.downloads = [], []

    def store_listed(self, model, seconds, error):
        self.lists.append(error)

    def store_downloaded(self, model, files, nbytes, seconds, error):
        self.downloads.append((files, nbytes, error))


class FlakyFs:
    """The memory filesystem whose copies fail while `failing` is set."""

    def __init__(self, fs):
        self.fs = fs
        self.failing = False
        self.gets = 0

    def find(self, *args, **kwargs):
        return self.fs.find(*args, **kwargs)

    def get(self, rpaths, lpaths, callback=None):
        self.gets += 1
        if self.failing:
            raise ConnectionError("the store went away")
        return self.fs.get(rpaths, lpaths, callback=callback)


@pytest.fixture
def store():
    fs = fsspec.filesystem("memory", skip_instance_cache=True)
    root = f"/bucket-{uuid.uuid4().hex}/models/m"
    yield FlakyFs(fs), root
    fs.rm(root.rsplit("/models", 1)[0], recursive=True)


def put(store, version, files):
    fs, root = store
    for name, data in files.items():
        fs.fs.pipe(f"{root}/{version}/{name}", data)


def make(store, cache, *, settings=None, observer=None, abort=None):
    fs, root = store
    settings = settings or StoreSettings(settle_seconds=0, max_retries=2, retry_interval_seconds=0)
    return RemoteBasePath("m", "s3://bucket/models/m", cache, settings, observer or Recorder(),
                          abort or threading.Event(), fs=(fs, root))


def cached(cache):
    return sorted(p.name for p in cache.root().glob("*/*") if not p.name.startswith("."))


def test_a_version_is_copied_once_two_listings_agree_and_served_from_the_copy(store, tmp_path):
    put(store, 1, {"saved_model.pb": b"graph", "variables/variables.index": b"ix",
                   "variables/variables.data-00000-of-00001": b"data"})
    cache = ModelCache(str(tmp_path / "cache"))
    remote = make(store, cache)
    stable = remote.stable_versions()  # first poll: two listings, settle_seconds apart
    assert list(stable) == [1]
    paths, error = remote.aspire(stable)
    assert error is None
    assert (tmp_path / "cache").joinpath(*[p for p in paths[1].split("/") if p][-2:]).is_dir()
    with open(f"{paths[1]}/variables/variables.index", "rb") as f:
        assert f.read() == b"ix"
    assert cached(cache) == ["1", "1.listing.json"]


def test_an_upload_in_progress_is_not_a_version_until_it_stops_changing(store, tmp_path):
    put(store, 1, {"saved_model.pb": b"one"})
    remote = make(store, ModelCache(str(tmp_path)))
    remote.aspire(remote.stable_versions())
    put(store, 2, {"saved_model.pb": b"two"})
    assert list(remote.stable_versions()) == [1]
    assert remote.changing == [2]
    put(store, 2, {"variables/variables.data-00000-of-00002": b"x" * 100})
    assert list(remote.stable_versions()) == [1]  # changed again
    assert list(remote.stable_versions()) == [1]  # unchanged, but the checkpoint is not whole
    put(store, 2, {"variables/variables.index": b"ix", "variables/variables.data-00001-of-00002": b"y"})
    assert list(remote.stable_versions()) == [1]
    assert sorted(remote.stable_versions()) == [1, 2]  # unchanged since the last poll
    assert remote.changing == []


def test_a_removed_version_is_unaspired_and_its_copy_deleted(store, tmp_path):
    put(store, 1, {"saved_model.pb": b"1"})
    put(store, 2, {"saved_model.pb": b"2"})
    cache = ModelCache(str(tmp_path))
    remote = make(store, cache)
    stable = remote.stable_versions()
    paths, _ = remote.aspire({2: stable[2]})  # latest 1
    assert list(paths) == [2] and cached(cache) == ["2", "2.listing.json"]
    store[0].fs.rm(f"{store[1]}/2", recursive=True)
    stable = remote.stable_versions()
    assert list(stable) == [1]
    paths, _ = remote.aspire(stable)  # rollback
    assert list(paths) == [1] and cached(cache) == ["1", "1.listing.json"]


def test_a_failing_copy_keeps_what_is_aspired_retries_then_gives_up_until_the_listing_changes(store, tmp_path):
    observer = Recorder()
    put(store, 1, {"saved_model.pb": b"1"})
    remote = make(store, ModelCache(str(tmp_path)), observer=observer)
    first, error = remote.aspire(remote.stable_versions())
    assert list(first) == [1] and error is None
    put(store, 2, {"saved_model.pb": b"2"})
    remote.stable_versions()
    store[0].failing = True
    for attempt in range(3):  # the first try and max_retries=2 more
        stable = remote.stable_versions()
        paths, error = remote.aspire({2: stable[2]})
        assert paths == first  # version 1 stays aspired while 2 cannot be copied
        assert error is None if attempt < 2 else error.code == Code.UNAVAILABLE
    assert "Failed to copy version 2 of model m from s3://bucket/models/m after 3 attempts" in error.message
    assert "the store went away" in error.message
    gets = store[0].gets
    paths, error = remote.aspire({2: remote.stable_versions()[2]})
    assert store[0].gets == gets and error is not None  # given up: not tried again
    assert [e for _, _, e in observer.downloads][-1].code == Code.UNAVAILABLE
    assert not [p for p in tmp_path.rglob("*") if ".partial-" in p.name]  # no trace of the failures
    store[0].failing = False
    put(store, 2, {"assets/vocab": b"new file"})  # a new listing: tried again
    remote.stable_versions()
    paths, error = remote.aspire({2: remote.stable_versions()[2]})
    assert list(paths) == [2] and error is None


def test_retries_wait_for_the_retry_interval(store, tmp_path):
    put(store, 1, {"saved_model.pb": b"1"})
    settings = StoreSettings(settle_seconds=0, max_retries=5, retry_interval_seconds=3600)
    remote = make(store, ModelCache(str(tmp_path)), settings=settings)
    store[0].failing = True
    stable = remote.stable_versions()
    assert remote.aspire(stable) == ({}, None)
    assert remote.aspire(remote.stable_versions()) == ({}, None)
    assert store[0].gets == 1


def test_a_copy_from_an_earlier_run_of_the_same_cache_is_reused(store, tmp_path):
    put(store, 3, {"saved_model.pb": b"3"})
    cache = ModelCache(str(tmp_path))
    make(store, cache).aspire({3: make(store, cache).stable_versions()[3]})
    cache.close()
    again = ModelCache(str(tmp_path))
    remote = make(store, again)
    store[0].failing = True  # no copy needed
    paths, error = remote.aspire(remote.stable_versions())
    assert list(paths) == [3] and error is None and store[0].gets == 1


def test_a_cache_directory_serves_one_process_at_a_time(tmp_path):
    first = ModelCache(str(tmp_path))
    first.root()
    with pytest.raises(ServingError) as err:
        ModelCache(str(tmp_path)).root()
    assert err.value.code == Code.FAILED_PRECONDITION and "in use by another process" in err.value.message
    first.close()
    ModelCache(str(tmp_path)).root()


def test_a_private_cache_is_removed_at_close():
    cache = ModelCache()
    root = cache.root()
    assert root.is_dir()
    cache.close()
    assert not root.exists()
    with pytest.raises(ServingError) as err:
        cache.root()
    assert err.value.code == Code.CANCELLED


def test_an_object_name_that_leaves_its_folder_is_refused(store, tmp_path):
    put(store, 1, {"saved_model.pb": b"g", "a/../../../escape": b"x"})
    remote = make(store, ModelCache(str(tmp_path)), settings=StoreSettings(settle_seconds=0, max_retries=0))
    paths, error = remote.aspire(remote.stable_versions())
    assert paths == {} and error.code == Code.INVALID_ARGUMENT and "leaves its folder" in error.message


def test_an_abort_stops_a_copy_and_leaves_nothing(store, tmp_path):
    put(store, 1, {"saved_model.pb": b"x" * 1000})
    abort = threading.Event()
    remote = make(store, ModelCache(str(tmp_path)), abort=abort)
    stable = remote.stable_versions()
    abort.set()
    paths, error = remote.aspire(stable)
    assert paths == {} and error is None
    assert not [p for p in tmp_path.rglob("*") if p.name not in (".lock",) and p.is_file()]


@pytest.mark.parametrize("names, whole", [
    (["saved_model.pb"], True),  # a graph without variables (TF1 constants)
    (["saved_model.pbtxt", "assets/vocab.txt"], True),
    (["model.tflite"], True),
    (["variables/variables.index", "variables/variables.data-00000-of-00001"], False),  # no graph yet
    (["saved_model.pb", "variables/variables.data-00000-of-00001"], False),  # no index yet
    (["saved_model.pb", "variables/variables.index"], False),  # no data yet
    (["saved_model.pb", "variables/variables.index", "variables/variables.data-00000-of-00002"], False),
    (["saved_model.pb", "variables/variables.index", "variables/variables.data-00000-of-00002",
      "variables/variables.data-00001-of-00002", "fingerprint.pb"], True),
])
def test_a_version_looks_whole_with_its_graph_and_a_complete_checkpoint(names, whole):
    from pyserving.sources.object_store import RemoteFile, VersionListing, _complete

    assert _complete(VersionListing("1", tuple(RemoteFile(n, 1, "") for n in names))) is whole
