import os
import sys
from pathlib import Path
from typing import Iterator

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import object_stores  # noqa: E402
from support import SHARED, TFSERVING_TESTDATA, shared_skip_reason  # noqa: E402


@pytest.fixture(scope="session")
def testdata(tmp_path_factory) -> Path:
    """TF Serving's test data tree (its half_plus_two family of exports, config files and
    expected metadata), written once per session by tests/tfserving_testdata.py."""
    import tfserving_testdata

    return tfserving_testdata.write_tree(tmp_path_factory.mktemp("tfserving"))


@pytest.fixture(scope="session")
def tfserving_testdata() -> Path:
    """TF Serving's own files of that tree, an extra oracle for the generated one."""
    if not TFSERVING_TESTDATA.is_dir():
        pytest.skip(shared_skip_reason("TF Serving's own test data", TFSERVING_TESTDATA))
    return TFSERVING_TESTDATA


@pytest.fixture(params=["generated", "tf_serving"])
def each_testdata(request) -> Path:
    """Both trees in turn: the generated one, then TF Serving's own (skips if absent)."""
    return request.getfixturevalue("testdata" if request.param == "generated" else "tfserving_testdata")


@pytest.fixture(scope="session")
def seeds() -> Path:
    path = SHARED / "seeds"
    if not path.is_dir():
        pytest.skip(shared_skip_reason("The seed documents", path))
    return path


@pytest.fixture(scope="session")
def model_zoo(tmp_path_factory) -> Path:
    """Every generated test model, once per session: <zoo>/<name>/1."""
    import modelgen

    root = tmp_path_factory.mktemp("zoo")
    for name, make in modelgen.ALL_GENERATORS.items():
        if name in ("broken", "slow"):
            continue
        make(root / name, 1)
    return root


def _store(kind: str, tmp_path_factory) -> Iterator[object_stores.ObjectStore]:
    store = object_stores.started(kind, tmp_path_factory.mktemp(f"store-{kind}"))
    try:
        yield store
    finally:
        store.stop()


@pytest.fixture(scope="session")
def moto_store(tmp_path_factory) -> Iterator[object_stores.ObjectStore]:
    """moto's S3 server on loopback, for the session (in memory: a restart loses all)."""
    yield from _store("moto", tmp_path_factory)


@pytest.fixture(scope="session")
def s3rver_store(tmp_path_factory) -> Iterator[object_stores.ObjectStore]:
    """s3rver (S3, from npm) on loopback, for the session; credentials S3RVER / S3RVER."""
    yield from _store("s3rver", tmp_path_factory)


@pytest.fixture(scope="session")
def gcs_store(tmp_path_factory) -> Iterator[object_stores.ObjectStore]:
    """gcp-storage-emulator (GCS) on loopback, for the session."""
    yield from _store("gcs", tmp_path_factory)


@pytest.fixture(scope="session")
def azurite_store(tmp_path_factory) -> Iterator[object_stores.ObjectStore]:
    """Azurite's Blob service (Azure) on loopback, for the session."""
    yield from _store("azurite", tmp_path_factory)


@pytest.fixture(params=list(object_stores.STORES))
def any_store(request) -> object_stores.ObjectStore:
    """Each of the four stores in turn (see tests/object_stores.py)."""
    return request.getfixturevalue(f"{request.param}_store")
