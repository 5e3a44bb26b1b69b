"""ModelControl: the control plane of the lifecycle, whoever loads the versions.

It holds the model configuration (the initial one and every reload), the version labels,
the source that polls each model's base path, and answers model status and readiness
from a `ServableStateMonitor` fed by `bus`. What an aspired set becomes is a subclass's
business: `ServerCore` turns it into loaders for this process's manager; the worker
supervisor sends it to its worker processes and feeds `bus` with their merged states.

Runs on the event loop; source polls run on a thread (`_on_versions` is called there).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from pyserving.core.event_bus import EventBus
from pyserving.core.servable_handle import ServableRequest
from pyserving.core.servable_state import ManagerState, ServableState
from pyserving.core.state_monitor import ServableStateMonitor
from pyserving.errors import Code, ServingError
from pyserving.server.model_config import ModelConfig
from pyserving.sources.file_system import FileSystemStoragePathSource, ModelSource
from pyserving.sources.object_store import ModelStores

__all__ = ["ModelControl", "VersionStatus", "pick_status"]

log = logging.getLogger("pyserving.core")


@dataclass(frozen=True)
class VersionStatus:
    version: int
    state: ManagerState
    error_code: Code
    error_message: str


def pick_status(name: str, version: int | None, table: list[VersionStatus]) -> list[VersionStatus]:
    """Every version's status (newest first), or the one asked for; NOT_FOUND as TF Serving says it."""
    if not table:
        raise ServingError(Code.NOT_FOUND, f"Could not find any versions of model {name}")
    if version is None:
        return table
    found = [s for s in table if s.version == version]
    if not found:
        raise ServingError(Code.NOT_FOUND, f"Could not find version {version} of model {name}")
    return found


async def _in_daemon_thread(fn: Callable[[], None]) -> None:
    """`fn()` on a thread of its own that the interpreter does not wait for at exit: a poll
    of a store that does not answer (an SDK retrying for minutes) never delays a shutdown,
    as one on the loop's executor would (its threads are joined before the loop closes)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def settle(error: BaseException | None) -> None:
        if done.done():
            return
        if error is not None:
            done.set_exception(error)
        else:
            done.set_result(None)

    def run() -> None:
        try:
            fn()
        except BaseException as exc:  # handed to the awaiting task
            error: BaseException | None = exc
        else:
            error = None
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(settle, error)

    threading.Thread(target=run, name="poll", daemon=True).start()
    await done


class ModelControl:
    _round_done: asyncio.Event  # made by start(), replaced after every round of changes

    def __init__(self, *, poll_wait_seconds: float, allow_version_labels_for_unavailable_models: bool,
                 own_source: bool = True, stores: ModelStores | None = None) -> None:
        self.poll_wait_seconds = poll_wait_seconds
        self.allow_version_labels_for_unavailable_models = allow_version_labels_for_unavailable_models
        # Without its own source, a control is told its versions (a worker by its supervisor).
        self.own_source = own_source
        self.bus: EventBus[ServableState] = EventBus()
        self.monitor = ServableStateMonitor(self.bus)
        # Remote base paths: their listings and local copies (sources/object_store.py).
        self.source = FileSystemStoragePathSource(self._on_versions, self._on_source_error, stores)
        self._models: dict[str, ModelConfig] = {}
        self._labels: dict[str, dict[str, int]] = {}
        self._source_errors: dict[str, ServingError] = {}
        self._initial_names: set[str] = set()
        self._initial_done = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._poll_lock = asyncio.Lock()

    # -- what a subclass decides ----------------------------------------------------------
    def _on_versions(self, name: str, versions: dict[int, str]) -> None:
        """The source's aspired set for `name` (version -> path); called on the poll thread."""
        raise NotImplementedError

    def _configured(self, models: list[ModelConfig]) -> None:
        """A new model list is in effect (before the source polls it); loop thread."""

    def available_versions(self, name: str) -> list[int]:
        return sorted(v for v, s in self.monitor.versions(name).items() if s.state == ManagerState.AVAILABLE)

    def _changed_threadsafe(self) -> None:
        """Something the waiters read changed (any thread): end a round."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # loop closing
            loop.call_soon_threadsafe(self._end_round)

    def _end_round(self) -> None:
        """Wake everyone waiting for a change; they re-check (loop thread)."""
        self._round_done.set()
        self._round_done = asyncio.Event()

    # -- source ---------------------------------------------------------------------------
    def _on_source_error(self, name: str, error: ServingError | None) -> None:
        if error is None:
            self._source_errors.pop(name, None)
        else:
            self._source_errors[name] = error
        self._changed_threadsafe()

    async def start(self, models: list[ModelConfig], initial_names: set[str] | None = None) -> None:
        """Configure the initial models and start polling (returns at once). The initial
        load waits for `initial_names` (default every model)."""
        self._loop = asyncio.get_running_loop()
        self._round_done = asyncio.Event()
        self._set_models(models)
        self._initial_names = set(self._models) if initial_names is None else set(initial_names)
        if self.own_source:
            self.source.set_models([ModelSource(m.name, m.base_path, m.policy) for m in models])
            self._tasks.append(asyncio.create_task(self._poll_loop(), name="poll"))

    def _set_models(self, models: list[ModelConfig]) -> None:
        self._models = {m.name: m for m in models}
        self._labels = {m.name: dict(m.labels) for m in models}
        for name in list(self._source_errors):
            if name not in self._models:
                self._source_errors.pop(name, None)
        self._configured(models)

    def configure(self, models: list[ModelConfig]) -> None:
        """Take a model list decided elsewhere (a worker's, from its supervisor), unchecked."""
        self._set_models(models)
        self._end_round()

    async def poll_now(self) -> None:
        async with self._poll_lock:
            await _in_daemon_thread(self.source.poll_once)

    async def _poll_loop(self) -> None:
        wait = self.poll_wait_seconds
        await self.poll_now()
        if wait <= 0:
            return
        while True:
            await asyncio.sleep(wait)
            try:
                await self.poll_now()
            except Exception:  # never let one bad poll stop polling
                log.exception("file system poll failed")

    async def _stop_polling(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        # A poll still running on its thread stops copying at its next chunk; a private
        # cache goes now (the versions loaded from it no longer read it).
        self.source.close()

    # -- waiting ----------------------------------------------------------------------------
    async def wait_initial_load(self) -> None:
        """Until every initial model has an AVAILABLE version; raise on a failure."""
        try:
            await self._wait_models(sorted(self._initial_names), None)
            self._check_labels(self._labels, initial=True)
        finally:
            self._initial_done = True

    async def _wait_round(self, timeout: float | None = None) -> bool:
        event = self._round_done
        try:
            await asyncio.wait_for(event.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return False

    def _load_failures(self, names: list[str]) -> tuple[list[str], bool]:
        """(failures, pending) for models that should become available."""
        failures: list[str] = []
        pending = False
        for name in names:
            states = list(self.monitor.versions(name).values())
            if any(s.state < ManagerState.AVAILABLE for s in states):
                pending = True  # wait for every aspired version, as TF Serving does
                continue
            if self.monitor.has_available(name):
                continue
            if name in self._source_errors:
                failures.append(f"{{name: {name}}} due to error: {self._source_errors[name].message}")
                continue
            if not states:
                pending = True
                continue
            failures.extend(
                f"{s.id} due to error: {s.error.message}" for s in states if s.error is not None
            )
        return failures, pending

    async def _wait_models(self, names: list[str], timeout: float | None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            failures, pending = self._load_failures(names)
            if failures:
                raise ServingError(
                    Code.UNKNOWN,
                    f"{len(failures)} servable(s) did not become available: {{" + ", ".join(failures) + ", }",
                )
            if not pending:
                return
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise ServingError(Code.DEADLINE_EXCEEDED, "Timed out waiting for models to load: " + ", ".join(names))
            await self._wait_round(remaining)

    # -- config reload ----------------------------------------------------------------------
    @property
    def models(self) -> dict[str, ModelConfig]:
        return dict(self._models)

    def is_configured(self, name: str) -> bool:
        """Whether `name` is a model of the current config (any thread; no copy)."""
        return name in self._models

    async def reload_config(self, models: list[ModelConfig], *, wait_timeout: float | None = None,
                            wait: bool = True) -> None:
        """Apply a whole new model list: add, remove, change policies and labels.

        Labels are checked first (an invalid label rejects the reload and keeps the old
        config). Then, with `wait`, waits up to `wait_timeout` until every newly added
        model has an AVAILABLE version or failed; raises UNKNOWN listing the failures (the
        new config stays in effect, as in TF Serving). Without `wait` it returns once the
        new config is in effect (the loads' outcomes are logged as they happen).
        """
        new_labels = {m.name: dict(m.labels) for m in models}
        self._check_labels(new_labels, initial=False)
        old = self._models
        for m in models:
            if m.name in old and old[m.name].platform != m.platform:
                raise ServingError(
                    Code.INVALID_ARGUMENT,
                    f"Illegal to change a model's platform. For model {m.name} platform was "
                    f"{old[m.name].platform} and new platform requested is {m.platform}",
                )
        added = [m.name for m in models if m.name not in old]
        self._set_models(models)
        self.source.set_models([ModelSource(m.name, m.base_path, m.policy) for m in models])
        log.info("Model config reloaded: %d model(s) (%s added)", len(models), ", ".join(added) or "none")
        await self.poll_now()
        if added and wait:
            await self._wait_models(added, wait_timeout)

    def _check_labels(self, labels: dict[str, dict[str, int]], *, initial: bool) -> None:
        allow = self.allow_version_labels_for_unavailable_models
        for name, mapping in labels.items():
            available = set(self.available_versions(name))
            current = self._labels.get(name, {}) if not initial else {}
            for label, version in mapping.items():
                if version in available:
                    continue
                if allow and current.get(label, version) == version:
                    continue  # a new label (or unchanged) may point at an unavailable version
                raise ServingError(
                    Code.FAILED_PRECONDITION,
                    f"Request to assign label to version {version} of model {name}, which is not "
                    "currently available for inference",
                )

    def resolve(self, name: str, version: int | None, label: str | None) -> ServableRequest:
        if label:
            labels = self._labels.get(name)
            if labels is None or label not in labels:
                raise ServingError(Code.INVALID_ARGUMENT, f"Unrecognized servable version label: {label}")
            return ServableRequest.specific(name, labels[label])
        if version is not None:
            return ServableRequest.specific(name, version)
        return ServableRequest.latest(name)

    # -- status -------------------------------------------------------------------------------
    def status_table(self, name: str) -> list[VersionStatus]:
        """Every known version of `name`, newest first (empty when none)."""
        states = self.monitor.versions(name)
        source_error = self._source_errors.get(name)
        result = []
        for v in sorted(states, reverse=True):
            s = states[v]
            err = s.error
            if err is None and source_error is not None and s.state == ManagerState.AVAILABLE:
                err = source_error  # still serving, but its base path is in trouble
            result.append(
                VersionStatus(v, s.state, err.code if err else Code.OK, err.message if err else "")
            )
        return result

    def model_status(self, name: str, version: int | None = None) -> list[VersionStatus]:
        return pick_status(name, version, self.status_table(name))

    def is_ready(self) -> tuple[bool, str]:
        """Every configured model has an AVAILABLE version (the readiness probe)."""
        missing = [n for n in self._models if not self.available_versions(n)]
        if missing:
            return False, "model(s) without an AVAILABLE version: " + ", ".join(sorted(missing))
        return True, ""
