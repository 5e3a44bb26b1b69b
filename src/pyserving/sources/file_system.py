"""FileSystemStoragePathSource: polls each model's base path for version folders.

A child folder whose name parses as an integer is a version (`00000123` is 123); other
names are ignored. Each poll applies the model's version policy and hands the full set
of wanted versions (version -> path) to `callback(name, versions)`. Unlike TF Serving, a
model whose base path cannot be read reports the error through `on_error(name, error)`
and leaves every other model's poll alone; its served versions are kept.

A base path on an object store (`s3://`, `gs://`, `az://`, `abfs://`) is polled the same
way through `ModelStores` (sources/object_store.py): its versions are copied into a local
cache first, and the aspired paths are those copies. `file://` names a local path.

`poll_once()` is synchronous and does I/O: the server runs it on a worker thread;
tests call it directly.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from typing import Any, Callable

from pyserving.errors import Code, ServingError
from pyserving.sources.object_store import ModelStores, parse_version
from pyserving.sources.stores import is_remote, local_path
from pyserving.sources.version_policy import Specific, VersionPolicy, select_versions

__all__ = ["ModelSource", "FileSystemStoragePathSource", "list_versions"]

log = logging.getLogger("pyserving.source")


@dataclass(frozen=True)
class ModelSource:
    name: str
    base_path: str
    policy: VersionPolicy


def list_versions(base_path: str) -> dict[int, str]:
    """version -> folder path for every integer-named child folder of `base_path`.

    Raises ServingError(NOT_FOUND, <OS reason>) if the base path cannot be listed.
    """
    try:
        entries = list(os.scandir(base_path))
    except OSError as exc:
        raise ServingError(Code.NOT_FOUND, str(exc.strerror or exc)) from None
    versions: dict[int, str] = {}
    for entry in entries:
        version = parse_version(entry.name)
        if version is None:
            continue
        try:
            if not entry.is_dir():
                continue
        except OSError:
            continue
        if version in versions:
            log.warning("Duplicate version %d under %s: using %s", version, base_path, versions[version])
            continue
        versions[version] = entry.path
    return versions


Callback = Callable[[str, dict[int, str]], None]
ErrorCallback = Callable[[str, ServingError | None], None]


class FileSystemStoragePathSource:
    def __init__(self, callback: Callback, on_error: ErrorCallback | None = None,
                 stores: ModelStores | None = None) -> None:
        self._callback = callback
        self._on_error = on_error or (lambda name, err: None)
        self._lock = threading.Lock()
        self._models: dict[str, ModelSource] = {}  # guarded by _lock
        self.stores = stores if stores is not None else ModelStores()

    def set_models(self, models: list[ModelSource]) -> None:
        """Replace the polled models; a removed model is told it wants no version."""
        with self._lock:
            old = self._models
            self._models = {m.name: m for m in models}
        for name in [n for n in old if n not in self._models]:
            self._callback(name, {})
            self.stores.forget(name)
        for name, model in self._models.items():
            if name in old and old[name].base_path != model.base_path and not is_remote(model.base_path):
                self.stores.forget(name)  # moved off a store: its copies go once unaspired

    def models(self) -> list[ModelSource]:
        with self._lock:
            return list(self._models.values())

    def poll_once(self) -> None:
        for model in self.models():
            self.poll_model(model)

    def close(self) -> None:
        """Stop a copy in progress and remove a private cache (the server is stopping)."""
        self.stores.close()

    def poll_model(self, model: ModelSource) -> None:
        remote = None
        try:
            if is_remote(model.base_path):
                remote = self.stores.for_model(model.name, model.base_path)
                found: dict[int, Any] = remote.stable_versions()
            else:
                found = list_versions(local_path(model.base_path))
        except ServingError as err:
            if err.code == Code.CANCELLED:
                return
            message = f"Could not find base path {model.base_path} for servable {model.name} with error {err.message}"
            self._on_error(model.name, ServingError(Code.NOT_FOUND, message))
            log.error("FileSystemStoragePathSource encountered a filesystem access error: %s", message)
            return
        selected = select_versions(model.policy, found)
        if isinstance(model.policy, Specific):
            for missing in sorted(model.policy.versions - set(found)):
                if remote is not None and missing in remote.changing:
                    continue
                log.warning(
                    "Version %d of servable %s, which was requested to be served as a 'specific' "
                    "version in the servable's version policy, was not found in the file system",
                    missing, model.name,
                )
        if remote is not None and remote.changing:
            log.info("Servable %s: version(s) %s under %s still changing; waiting for two equal listings",
                     model.name, ", ".join(map(str, remote.changing)), model.base_path)
        if not found:
            if remote is not None and remote.changing:
                return  # an upload in progress: nothing to say yet
            message = (
                f"No versions of servable {model.name} found under base path {model.base_path}. "
                "Did you forget to name your leaf directory as a number (eg. '/1/')?"
            )
            self._on_error(model.name, ServingError(Code.NOT_FOUND, message))
            log.warning("%s", message)
            if remote is not None:
                remote.aspire({})
            self._callback(model.name, {})
            return
        if remote is None:
            self._on_error(model.name, None)
            self._callback(model.name, {v: found[v] for v in selected})
            return
        paths, error = remote.aspire({v: found[v] for v in selected})
        self._on_error(model.name, error)
        self._callback(model.name, paths)
