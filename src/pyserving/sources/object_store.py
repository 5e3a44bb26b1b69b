"""Versions on an object store, served from local snapshots.

A remote base path (`s3://bucket/models/mnist`) holds version "folders" as a local one
does: every object `<base>/<version>/<path>` belongs to the version the integer-named first
component names. An object store has no atomic rename, so what an upload in progress
looks like is guarded against by the listing itself:

* **Stable listings.** Each poll lists the base path once (one paginated, recursive list).
  A version is a candidate only when its listing (names, sizes, ETags) is the same as in
  the previous poll, and it looks whole: a `saved_model.pb` (`.pbtxt`) or `model.tflite`,
  and, once any variables file is listed, the checkpoint index with every data shard. On
  S3, a version with a multipart upload in progress (a big file, invisible until complete)
  waits too. A model's first poll lists twice, `settle_seconds` apart, so that a server
  starts without waiting a whole poll interval. A version still changing is as if not
  there yet.
* **Snapshots.** A selected version is copied into the cache (`ModelCache`): into a
  private temporary folder first, checked against the listing's sizes, then renamed into
  place, so a copy that fails or is interrupted leaves nothing behind. The manager loads
  the local copy; nothing reads it after the load.
* **What is aspired.** When every selected version is copied, the aspired set is exactly
  the selection (local paths). While one is not, the previously aspired versions stay
  aspired beside the ones copied, so a failing download never unloads what is served.
  A failed copy is tried again after `retry_interval_seconds`, at most `max_retries` more
  times for the same listing (TF Serving's `--max_num_load_retries` and
  `--load_retry_interval_micros`), then given up until the version's listing changes;
  the error is reported once given up.
* **What is kept.** After each poll the model's cache holds the aspired versions only: a
  version removed from the store, or no longer selected, is deleted from it.

A version already copied stays a candidate for as long as its folder exists in the store,
even if its objects are rewritten: like a local version folder, a version is immutable
once served.

Thread-safety: a `RemoteBasePath` is used by one poll at a time (the source's polls do
not overlap); `ModelStores.close()` may be called from any thread and makes a copy in
progress stop at its next chunk.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

from pyserving.errors import Code, ServingError
from pyserving.sources.stores import split_remote, store_error

__all__ = ["StoreSettings", "store_settings", "StoreObserver", "ModelCache", "ModelStores", "RemoteBasePath",
           "VersionListing", "RemoteFile", "parse_version"]

log = logging.getLogger("pyserving.source")

_LISTING_SUFFIX = ".listing.json"
_PARTIAL_PREFIX = ".partial-"


def parse_version(name: str) -> int | None:
    """The version a folder name denotes (`00000123` is 123), or None."""
    text = name.strip()
    if not text or not (text.isdigit() or (text[0] in "+-" and text[1:].isdigit())):
        return None
    value = int(text)
    if value < 0 or value >= 2**63:
        return None
    return value


@dataclass(frozen=True)
class RemoteFile:
    path: str  # below the version folder, '/'-separated
    size: int
    tag: str  # what changes when the content does: ETag, MD5, generation


@dataclass(frozen=True)
class VersionListing:
    folder: str  # the version folder's name as stored (`00000123`)
    files: tuple[RemoteFile, ...]  # sorted by path

    def to_json(self) -> str:
        return json.dumps({"folder": self.folder, "files": [[f.path, f.size, f.tag] for f in self.files]})

    @classmethod
    def from_json(cls, text: str) -> VersionListing:
        data = json.loads(text)
        return cls(str(data["folder"]), tuple(RemoteFile(str(p), int(s), str(t)) for p, s, t in data["files"]))

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)


@dataclass(frozen=True)
class StoreSettings:
    cache_dir: str = ""  # empty: a private folder under the system temp dir, removed at exit
    max_retries: int = 5
    retry_interval_seconds: float = 60.0
    settle_seconds: float = 1.0


def store_settings(cache_dir: str, max_num_load_retries: int, load_retry_interval_seconds: float,
                   poll_wait_seconds: float) -> StoreSettings:
    """From the server's flags: retries as for loads; a first listing settles for up to 1 s."""
    return StoreSettings(cache_dir=cache_dir, max_retries=max(0, max_num_load_retries),
                         retry_interval_seconds=max(0.0, load_retry_interval_seconds),
                         settle_seconds=min(1.0, poll_wait_seconds) if poll_wait_seconds > 0 else 1.0)


class StoreObserver(Protocol):
    """Told of every listing and copy (metrics); called on the poll thread."""

    def store_listed(self, model: str, seconds: float, error: ServingError | None) -> None: ...

    def store_downloaded(self, model: str, files: int, nbytes: int, seconds: float,
                         error: ServingError | None) -> None: ...


class _NoObserver:
    def store_listed(self, model: str, seconds: float, error: ServingError | None) -> None:
        pass

    def store_downloaded(self, model: str, files: int, nbytes: int, seconds: float,
                         error: ServingError | None) -> None:
        pass


class _Aborted(Exception):
    pass


class _RetryPending(ServingError):
    """A failed copy whose next attempt is not due yet."""


def _tag(info: dict[str, Any]) -> str:
    for key in ("ETag", "etag", "md5Hash", "generation", "LastModified", "last_modified", "mtime"):
        value = info.get(key)
        if value:
            return str(value).strip('"')
    return ""


def _safe_relative(path: str) -> bool:
    parts = path.split("/")
    return bool(path) and all(p not in ("", ".", "..") for p in parts) and "\\" not in path and "\0" not in path


_SHARD = re.compile(r"variables/variables\.data-(\d+)-of-(\d+)$")


def _complete(listing: VersionListing) -> bool:
    """Whether the files look like a whole model: its graph or TFLite file, and, once any
    variables file is there, the checkpoint index and every data shard it is split into."""
    names = {f.path for f in listing.files}
    if not names & {"saved_model.pb", "saved_model.pbtxt", "model.tflite"}:
        return False
    shards = [m for m in map(_SHARD.match, names) if m is not None]
    if not shards and "variables/variables.index" not in names:
        return True
    if "variables/variables.index" not in names or not shards:
        return False
    count = int(shards[0].group(2))
    return {int(m.group(1)) for m in shards if int(m.group(2)) == count} == set(range(count))


class ModelCache:
    """The local folder remote versions are copied to: `<root>/<model>-<hash>/<version>/`.

    Made at first use. One process at a time: a lock file refuses a second server on the
    same folder (each would delete the other's copies). A private root (no
    `--model_cache_dir`) is removed by `close()`.
    """

    def __init__(self, root: str = "") -> None:
        self._configured = root
        self._root: Path | None = None
        self._lock_fd: int | None = None
        self._closed = False
        self._mutex = threading.Lock()

    def root(self) -> Path:
        with self._mutex:
            if self._closed:
                raise ServingError(Code.CANCELLED, "The server is stopping")
            if self._root is None:
                if self._configured:
                    path = Path(self._configured)
                    try:
                        path.mkdir(parents=True, exist_ok=True)
                    except OSError as exc:
                        raise ServingError(Code.FAILED_PRECONDITION, f"Cannot create the model cache directory "
                                           f"{path}: {exc.strerror or exc}") from None
                else:
                    path = Path(tempfile.mkdtemp(prefix="pyserving-models-"))
                fd = os.open(path / ".lock", os.O_CREAT | os.O_RDWR, 0o600)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    os.close(fd)
                    raise ServingError(Code.FAILED_PRECONDITION, f"The model cache directory {path} is in use by "
                                       "another process (give each server its own --model_cache_dir)") from None
                self._root, self._lock_fd = path, fd
            return self._root

    def model_dir(self, name: str, base_url: str) -> Path:
        readable = re.sub(r"[^A-Za-z0-9._-]", "_", name)[:64]
        digest = hashlib.sha256(f"{name}\0{base_url}".encode()).hexdigest()[:12]
        return self.root() / f"{readable}-{digest}"

    def close(self) -> None:
        with self._mutex:
            self._closed = True
            root, fd, self._root, self._lock_fd = self._root, self._lock_fd, None, None
        if root is not None and not self._configured:
            shutil.rmtree(root, ignore_errors=True)
        if fd is not None:
            os.close(fd)


class _Transfer:
    """fsspec's callback protocol for one copy: counts bytes, stops when aborted."""

    def __init__(self, abort: threading.Event) -> None:
        self.abort = abort
        self.nbytes = 0
        self.size: int | None = None
        self.value = 0
        self.hooks: dict[str, Any] = {}

    def __enter__(self) -> _Transfer:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def close(self) -> None:
        pass

    def set_size(self, size: int | None) -> None:
        pass

    def absolute_update(self, value: int) -> None:
        pass

    def relative_update(self, inc: int = 1) -> None:
        self.nbytes += inc
        if self.abort.is_set():
            raise _Aborted()

    def call(self, *args: Any, **kwargs: Any) -> None:
        pass

    def branched(self, path_1: str, path_2: str, **kwargs: Any) -> _Transfer:
        return self

    def branch_coro(self, fn: Any) -> Any:
        import functools

        @functools.wraps(fn)
        async def run(path_1: str, path_2: str, **kwargs: Any) -> Any:
            return await fn(path_1, path_2, callback=self, **kwargs)

        return run

    def wrap(self, iterable: Any) -> Any:
        return iterable


@dataclass
class _Failure:
    listing: VersionListing
    attempts: int
    last: float
    error: ServingError


class RemoteBasePath:
    """One model's base path on a store, with its versions' local copies."""

    def __init__(self, name: str, url: str, cache: ModelCache, settings: StoreSettings,
                 observer: StoreObserver, abort: threading.Event, fs: tuple[Any, str] | None = None) -> None:
        """`fs`: (filesystem, path in it) instead of the one `url` names (tests)."""
        self.name = name
        self.url = url.rstrip("/")
        # ServingError when the scheme's library is not installed
        self._fs, self._root = fs if fs is not None else split_remote(self.url)
        self._cache = cache
        self._settings = settings
        self._observer = observer
        self._abort = abort
        self._dir: Path | None = None
        self._previous: dict[int, VersionListing] | None = None
        self._copied: dict[int, VersionListing] = {}  # complete local copies
        self._failures: dict[int, _Failure] = {}
        self.aspired: dict[int, str] = {}
        self.changing: list[int] = []  # versions seen in the last listing but not yet stable

    # -- listing ------------------------------------------------------------------------------
    def _list(self) -> dict[int, VersionListing]:
        started = time.monotonic()
        try:
            entries = self._fs.find(self._root, detail=True)
        except Exception as exc:  # the libraries raise their own types for network failures
            error = store_error(exc, self.url)
            self._observer.store_listed(self.name, time.monotonic() - started, error)
            raise error from None
        self._observer.store_listed(self.name, time.monotonic() - started, None)
        prefix = self._root + "/"
        grouped: dict[int, tuple[str, list[RemoteFile]]] = {}
        for key, info in entries.items():
            if info.get("type", "file") != "file" or not key.startswith(prefix) or key.endswith("/"):
                continue
            folder, _, rest = key[len(prefix):].partition("/")
            version = parse_version(folder)
            if version is None or not rest:
                continue
            seen = grouped.setdefault(version, (folder, []))
            if seen[0] != folder:
                continue  # `1` and `001` both: the first one listed, as locally
            seen[1].append(RemoteFile(rest, int(info.get("size") or 0), _tag(info)))
        return {v: VersionListing(folder, tuple(sorted(files, key=lambda f: f.path)))
                for v, (folder, files) in grouped.items()}

    def stable_versions(self) -> dict[int, VersionListing]:
        """Versions whose listing did not change since the last poll (and those copied)."""
        now = self._list()
        previous = self._previous
        if previous is None:
            if self._abort.wait(self._settings.settle_seconds):
                raise ServingError(Code.CANCELLED, "The server is stopping")
            previous, now = now, self._list()
        self._previous = now
        stable = {v: listing for v, listing in now.items() if previous.get(v) == listing and _complete(listing)}
        if any(v not in self._copied for v in stable):
            for version in self._uploads_in_progress():
                stable.pop(version, None)
        stable.update({v: listing for v, listing in self._copied.items() if v in now})
        self.changing = sorted(v for v in now if v not in stable)
        return stable

    def _uploads_in_progress(self) -> set[int]:
        """Versions with an S3 multipart upload in progress: a big object the listing cannot
        show before it is complete (the SDKs upload anything over 8 MB that way). One call,
        made only when a version is about to be copied; other stores have no such listing."""
        call = getattr(self._fs, "call_s3", None)
        if call is None:
            return set()
        bucket, _, key = self._root.partition("/")
        prefix = key + "/" if key else ""
        try:
            answer = call("list_multipart_uploads", Bucket=bucket, Prefix=prefix)
        except Exception as exc:  # a store without the call: the listings alone decide
            log.debug("Cannot list the uploads in progress under %s: %s", self.url, exc)
            return set()
        versions = set()
        for upload in answer.get("Uploads") or []:
            version = parse_version(str(upload.get("Key", ""))[len(prefix):].partition("/")[0])
            if version is not None:
                versions.add(version)
        return versions

    # -- copies -------------------------------------------------------------------------------
    def _model_dir(self) -> Path:
        if self._dir is None:
            directory = self._cache.model_dir(self.name, self.url)
            directory.mkdir(parents=True, exist_ok=True)
            for stale in directory.glob(_PARTIAL_PREFIX + "*"):
                shutil.rmtree(stale, ignore_errors=True)  # an earlier run's interrupted copy
            self._dir = directory
        return self._dir

    def _local(self, version: int) -> Path:
        return self._model_dir() / str(version)

    def _reuse(self, version: int, listing: VersionListing) -> bool:
        """A copy left by an earlier run of this cache, of the same listing."""
        marker = self._local(version).with_name(f"{version}{_LISTING_SUFFIX}")
        try:
            return self._local(version).is_dir() and VersionListing.from_json(marker.read_text()) == listing
        except (OSError, ValueError, KeyError, TypeError):
            return False

    def _copy(self, version: int, listing: VersionListing) -> None:
        for f in listing.files:
            if not _safe_relative(f.path):
                raise ServingError(Code.INVALID_ARGUMENT, f"Version {version} of model {self.name} has an object "
                                   f"whose name leaves its folder: {f.path!r}")
        directory = self._model_dir()
        final = self._local(version)
        marker = final.with_name(f"{version}{_LISTING_SUFFIX}")
        partial = Path(tempfile.mkdtemp(prefix=f"{_PARTIAL_PREFIX}{version}-", dir=directory))
        transfer = _Transfer(self._abort)
        started = time.monotonic()
        try:
            remote = [f"{self._root}/{listing.folder}/{f.path}" for f in listing.files]
            local = [str(partial.joinpath(*PurePosixPath(f.path).parts)) for f in listing.files]
            self._fs.get(remote, local, callback=transfer)
            for f, path in zip(listing.files, local):
                size = os.path.getsize(path)
                if size != f.size:
                    raise ServingError(Code.UNAVAILABLE, f"{f.path} changed during the copy ({size} bytes "
                                       f"copied, {f.size} listed)")
            shutil.rmtree(final, ignore_errors=True)
            marker.unlink(missing_ok=True)
            os.rename(partial, final)
            marker.write_text(listing.to_json())
        except BaseException as exc:
            shutil.rmtree(partial, ignore_errors=True)
            if isinstance(exc, _Aborted) or (isinstance(exc, Exception) and self._abort.is_set()):
                error = ServingError(Code.CANCELLED, "The server is stopping")
            elif isinstance(exc, OSError) and getattr(exc, "filename", None) and str(partial) in str(exc.filename):
                error = ServingError(Code.INTERNAL, f"Cannot write to the model cache: {exc.strerror or exc}")
            elif isinstance(exc, Exception):
                error = store_error(exc, self.url)
            else:
                raise
            self._observer.store_downloaded(self.name, len(listing.files), transfer.nbytes,
                                            time.monotonic() - started, error)
            raise error from None
        seconds = time.monotonic() - started
        self._observer.store_downloaded(self.name, len(listing.files), listing.size, seconds, None)
        log.info("Copied version %d of model %s from %s: %d file(s), %d bytes in %.3f s", version, self.name,
                 self.url, len(listing.files), listing.size, seconds)

    def _ensure(self, version: int, listing: VersionListing) -> str:
        """The local copy of `version` (made now if needed); raises ServingError."""
        local = self._local(version)
        if self._copied.get(version) == listing and local.is_dir():
            return str(local)
        if self._reuse(version, listing):
            log.info("Version %d of model %s: reusing its copy in %s", version, self.name, local)
        else:
            failure = self._failures.get(version)
            if failure is not None and failure.listing == listing:
                if failure.attempts > self._settings.max_retries:
                    raise failure.error
                if time.monotonic() - failure.last < self._settings.retry_interval_seconds:
                    raise _RetryPending(Code.UNAVAILABLE, failure.error.message)
            try:
                self._copy(version, listing)
            except ServingError as err:
                if err.code == Code.CANCELLED:
                    raise
                attempts = (failure.attempts if failure is not None and failure.listing == listing else 0) + 1
                given_up = attempts > self._settings.max_retries
                message = (f"Failed to copy version {version} of model {self.name} from {self.url}"
                           f"{' after ' + str(attempts) + ' attempts' if given_up else ''}: {err.message}")
                self._failures[version] = _Failure(listing, attempts, time.monotonic(),
                                                   ServingError(err.code, message))
                if given_up:
                    log.error("%s", message)
                else:
                    log.warning("%s (attempt %d; retried in %.0f s)", message, attempts,
                                self._settings.retry_interval_seconds)
                raise ServingError(err.code, message) from None
        self._failures.pop(version, None)
        self._copied[version] = listing
        return str(local)

    def aspire(self, selected: dict[int, VersionListing]) -> tuple[dict[int, str], ServingError | None]:
        """(the versions to aspire: version -> local path, the error to report or None)."""
        ready: dict[int, str] = {}
        reported: ServingError | None = None
        complete = True
        for version in sorted(selected, reverse=True):
            try:
                ready[version] = self._ensure(version, selected[version])
            except ServingError as err:
                complete = False
                if err.code == Code.CANCELLED:
                    break
                failure = self._failures.get(version)
                if failure is None or failure.listing != selected[version]:
                    reported = reported or err  # not a copy (the cache folder): say it now
                elif failure.attempts > self._settings.max_retries:
                    reported = reported or failure.error  # given up
        if complete:
            aspired = ready
        else:
            aspired = {v: p for v, p in self.aspired.items() if Path(p).is_dir()}
            aspired.update(ready)
        self.aspired = aspired
        self._prune(set(aspired))
        return dict(aspired), reported

    def _prune(self, keep: set[int]) -> None:
        for version in [v for v in self._copied if v not in keep]:
            del self._copied[version]
        if self._dir is None:
            return
        for entry in self._dir.iterdir():
            name = entry.name
            if name.startswith(_PARTIAL_PREFIX):
                continue
            stem = name[: -len(_LISTING_SUFFIX)] if name.endswith(_LISTING_SUFFIX) else name
            if stem.isdigit() and int(stem) in keep:
                continue
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    entry.unlink()

    def forget(self) -> None:
        """The model is no longer polled from here: its copies go."""
        self.aspired = {}
        self._copied.clear()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


class ModelStores:
    """Every remote base path being polled, by model, and the cache they copy to."""

    def __init__(self, settings: StoreSettings | None = None, observer: StoreObserver | None = None) -> None:
        self.settings = settings or StoreSettings()
        self.observer: StoreObserver = observer or _NoObserver()
        self.cache = ModelCache(self.settings.cache_dir)
        self._abort = threading.Event()
        self._lock = threading.Lock()
        self._paths: dict[str, RemoteBasePath] = {}  # guarded by _lock

    def for_model(self, name: str, url: str) -> RemoteBasePath:
        with self._lock:
            current = self._paths.get(name)
            if current is not None and current.url == url.rstrip("/"):
                return current
        if current is not None:
            current.forget()
        path = RemoteBasePath(name, url, self.cache, self.settings, self.observer, self._abort)
        with self._lock:
            self._paths[name] = path
        return path

    def forget(self, name: str) -> None:
        with self._lock:
            path = self._paths.pop(name, None)
        if path is not None:
            path.forget()

    def close(self) -> None:
        """Stop copies in progress and remove a private cache."""
        self._abort.set()
        self.cache.close()
