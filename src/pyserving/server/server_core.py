"""ServerCore: wires source -> manager for every configured model, owns labels and
config reloads, and resolves a (name, version | label) request to a pinned version.

Runs on the server's event loop. Blocking work (file-system polls, loads, unloads)
runs on thread pools; the manager is reconciled on the loop whenever something changed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from pyserving.core.aspired_versions_manager import AspiredVersionsManager, ServableData
from pyserving.core.event_bus import EventBus
from pyserving.core.servable_handle import ServableHandle, ServableRequest
from pyserving.core.servable_id import ServableId
from pyserving.core.servable_state import ManagerState, ServableState
from pyserving.core.state_monitor import ServableStateMonitor
from pyserving.errors import Code, ServingError
from pyserving.platforms import create_loader
from pyserving.server.model_config import ModelConfig
from pyserving.sources.file_system import FileSystemStoragePathSource, ModelSource

__all__ = ["CoreOptions", "ServerCore", "VersionStatus"]

log = logging.getLogger("pyserving.core")

# Each step of a round applies a source's set or starts a load or unload; a round of a
# thousand servers' worth of versions takes far fewer.
_MAX_STEPS_PER_ROUND = 10_000


@dataclass(frozen=True)
class CoreOptions:
    file_system_poll_wait_seconds: float = 1.0
    max_num_load_retries: int = 5
    load_retry_interval_seconds: float = 60.0
    num_load_threads: int = 0
    num_unload_threads: int = 0
    # How long an unload waits for a request without a deadline still using the version.
    unload_drain_seconds: float = 300.0
    load_timeout_seconds: float = 0.0
    allow_version_labels_for_unavailable_models: bool = False
    loader_options: dict[str, Any] = field(default_factory=dict)
    # Applied to every new loader (batching; a benchmark's stand-in model), (loader, ServableId,
    # export_dir) -> loader.
    loader_wrapper: Callable[[Any, ServableId, str], Any] | None = None


@dataclass(frozen=True)
class VersionStatus:
    version: int
    state: ManagerState
    error_code: Code
    error_message: str


class ServerCore:
    _round_done: asyncio.Event  # made by start(), replaced after every reconcile round

    def __init__(self, options: CoreOptions) -> None:
        self.options = options
        self.bus: EventBus[ServableState] = EventBus()
        self.monitor = ServableStateMonitor(self.bus)
        workers = options.num_load_threads if options.num_load_threads > 0 else 4
        self._load_pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="load")
        # Unloads have their own threads: a drain waiting for a slow request never delays a load.
        unload_workers = options.num_unload_threads if options.num_unload_threads > 0 else 2
        self._unload_pool = concurrent.futures.ThreadPoolExecutor(unload_workers, thread_name_prefix="unload")
        self.manager = AspiredVersionsManager(
            self.bus,
            submit=self._load_pool.submit,
            submit_unload=self._unload_pool.submit,
            drain_no_deadline_seconds=options.unload_drain_seconds,
            load_timeout_seconds=options.load_timeout_seconds,
            max_num_load_retries=options.max_num_load_retries,
            load_retry_interval_seconds=options.load_retry_interval_seconds,
            on_change=self._notify_threadsafe,
        )
        self.source = FileSystemStoragePathSource(self._on_versions, self._on_source_error)
        self._models: dict[str, ModelConfig] = {}
        self._labels: dict[str, dict[str, int]] = {}
        self._source_errors: dict[str, ServingError] = {}
        self._initial_names: set[str] = set()
        self._initial_done = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed: asyncio.Event | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._reconcile_task: asyncio.Task[None] | None = None
        self._poll_lock = asyncio.Lock()
        # A poll runs on a thread that stop() cannot cancel: what it finds is aspired only
        # while the core is not stopped, decided under this lock, which stop() takes too.
        self._aspire_lock = threading.Lock()
        self._stopped = False
        self.bus.subscribe(self._log_state)

    # -- events ---------------------------------------------------------------------
    @staticmethod
    def _log_state(event: ServableState) -> None:
        if event.error is not None:
            log.error("Servable %s is %s with error: %s", event.id, event.state.name, event.error.message)
        else:
            log.info("Servable %s is %s", event.id, event.state.name)

    def _notify_threadsafe(self) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(self._notify)
        except RuntimeError:  # loop closing
            pass

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()

    async def _reconcile_loop(self) -> None:
        assert self._changed is not None
        while True:
            await self._changed.wait()
            self._changed.clear()
            for _ in range(_MAX_STEPS_PER_ROUND):
                if not self.manager.reconcile_once():
                    break
            else:  # a manager that never settles must not take the event loop with it
                log.error("The lifecycle did not settle in %d steps; waiting for the next change",
                          _MAX_STEPS_PER_ROUND)
            # wake waiters: they re-check after every round
            self._round_done.set()
            self._round_done = asyncio.Event()

    # -- source callbacks (poll thread) -------------------------------------------------
    def _on_versions(self, name: str, versions: dict[int, str]) -> None:
        model = self._models.get(name)
        data: list[ServableData] = []
        for version, path in versions.items():
            sid = ServableId(name, version)
            try:
                assert model is not None
                loader = create_loader(model.platform, path, **self.options.loader_options)
                if self.options.loader_wrapper is not None:
                    loader = self.options.loader_wrapper(loader, sid, path)
                data.append(ServableData(sid, loader))
            except ServingError as err:
                data.append(ServableData(sid, error=err))
        with self._aspire_lock:
            if self._stopped:  # nothing was loaded yet: the loaders are simply dropped
                return
            self.manager.set_aspired_versions(name, data)

    def _on_source_error(self, name: str, error: ServingError | None) -> None:
        if error is None:
            self._source_errors.pop(name, None)
        else:
            self._source_errors[name] = error
        self._notify_threadsafe()

    # -- lifecycle --------------------------------------------------------------------
    async def start(self, models: list[ModelConfig]) -> None:
        """Configure the initial models and start polling (returns at once)."""
        self._loop = asyncio.get_running_loop()
        self._changed = asyncio.Event()
        self._round_done = asyncio.Event()
        self._models = {m.name: m for m in models}
        self._labels = {m.name: dict(m.labels) for m in models}
        self._initial_names = set(self._models)
        self.source.set_models([ModelSource(m.name, m.base_path, m.policy) for m in models])
        self._reconcile_task = asyncio.create_task(self._reconcile_loop(), name="reconcile")
        self._tasks.append(asyncio.create_task(self._poll_loop(), name="poll"))

    async def poll_now(self) -> None:
        async with self._poll_lock:
            await asyncio.to_thread(self.source.poll_once)

    async def _poll_loop(self) -> None:
        wait = self.options.file_system_poll_wait_seconds
        await self.poll_now()
        if wait <= 0:
            return
        while True:
            await asyncio.sleep(wait)
            try:
                await self.poll_now()
            except Exception:  # never let one bad poll stop polling
                log.exception("file system poll failed")

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

    async def stop(self, timeout: float | None = None) -> bool:
        """Stop polling and unload every version (each unload drains its requests, within
        their deadlines). Waits at most `timeout` seconds; False if something was still
        loading or unloading then (its thread is left behind, the process may exit)."""
        reconcile, self._reconcile_task = self._reconcile_task, None
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        self.manager.stop_retries()
        with self._aspire_lock:
            self._stopped = True
            for name in list(self._models):
                self.manager.set_aspired_versions(name, [])
        self._models.clear()
        settled = True
        if reconcile is not None:
            deadline = None if timeout is None else time.monotonic() + timeout
            while not self.manager.is_settled() or self.manager.threads_working():
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    settled = False
                    break
                await self._wait_round(remaining)
            reconcile.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reconcile
        if not settled:
            busy = [f"{i.name}:{i.version}" for i in self.manager.busy_versions()]
            log.warning("Stopped with %s still loading or unloading after %g s", ", ".join(busy) or "nothing",
                        timeout)
        if self.manager.abandoned_loads():
            log.warning("%d load(s) that timed out still run on their threads; not waiting for them",
                        self.manager.abandoned_loads())
            settled = False
        for pool in (self._load_pool, self._unload_pool):
            pool.shutdown(wait=settled, cancel_futures=not settled)
        return settled

    # -- config reload --------------------------------------------------------------------
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
        self._models = {m.name: m for m in models}
        self._labels = new_labels
        for name in list(self._source_errors):
            if name not in self._models:
                self._source_errors.pop(name, None)
        self.source.set_models([ModelSource(m.name, m.base_path, m.policy) for m in models])
        log.info("Model config reloaded: %d model(s) (%s added)", len(models), ", ".join(added) or "none")
        await self.poll_now()
        if added and wait:
            await self._wait_models(added, wait_timeout)

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

    def _check_labels(self, labels: dict[str, dict[str, int]], *, initial: bool) -> None:
        allow = self.options.allow_version_labels_for_unavailable_models
        for name, mapping in labels.items():
            available = set(self.manager.available_versions(name))
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

    # -- request path -----------------------------------------------------------------
    def resolve(self, name: str, version: int | None, label: str | None) -> ServableRequest:
        if label:
            labels = self._labels.get(name)
            if labels is None or label not in labels:
                raise ServingError(Code.INVALID_ARGUMENT, f"Unrecognized servable version label: {label}")
            return ServableRequest.specific(name, labels[label])
        if version is not None:
            return ServableRequest.specific(name, version)
        return ServableRequest.latest(name)

    def _may_become_available(self, request: ServableRequest) -> bool:
        """True while a configured model is still loading what the request asks for."""
        if request.name not in self._models:
            return False
        states = self.monitor.versions(request.name)
        if not states:
            # configured, first poll not seen yet (or no versions at all)
            return request.name not in self._source_errors and not self._initial_done
        for s in states.values():
            if s.state in (ManagerState.START, ManagerState.LOADING):
                if request.version is None or request.version == s.id.version:
                    return True
        return False

    async def get_handle(
        self, name: str, version: int | None = None, label: str | None = None, *, deadline: float | None = None,
        owner: object = None,
    ) -> ServableHandle:
        """A pinned version; waits (until `deadline`, a monotonic time) while it is loading.
        `owner` names the request if an unload gives up waiting for it."""
        request = self.resolve(name, version, label)
        while True:
            try:
                return self.manager.get_handle(request, deadline, owner)
            except ServingError:
                if not self._may_become_available(request):
                    raise
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise ServingError(  # a request past its deadline is not run
                    Code.DEADLINE_EXCEEDED,
                    f"Servable {request} is still loading; not available before the request deadline",
                )
            await self._wait_round(remaining)

    # -- status -------------------------------------------------------------------------
    def model_status(self, name: str, version: int | None = None) -> list[VersionStatus]:
        states = self.monitor.versions(name)
        if not states:
            raise ServingError(Code.NOT_FOUND, f"Could not find any versions of model {name}")
        if version is not None:
            if version not in states:
                raise ServingError(Code.NOT_FOUND, f"Could not find version {version} of model {name}")
            states = {version: states[version]}
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

    def is_ready(self) -> tuple[bool, str]:
        """Every configured model has an AVAILABLE version (the readiness probe)."""
        missing = [n for n in self._models if not self.manager.available_versions(n)]
        if missing:
            return False, "model(s) without an AVAILABLE version: " + ", ".join(sorted(missing))
        return True, ""
