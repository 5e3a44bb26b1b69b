"""ServerCore: the control plane (`ModelControl`: config, labels, source, status) wired
to this process's aspired-versions manager: every aspired set becomes loaders, and a
(name, version | label) request resolves to a pinned version.

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
from pyserving.core.servable_handle import ServableHandle, ServableRequest
from pyserving.core.servable_id import ServableId
from pyserving.core.servable_state import ManagerState, ServableState
from pyserving.errors import Code, ServingError
from pyserving.platforms import create_loader
from pyserving.server.model_config import ModelConfig
from pyserving.server.model_control import ModelControl, VersionStatus
from pyserving.sources.object_store import ModelStores, StoreObserver, store_settings

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
    # Where versions on object stores are copied ("": a private temporary folder).
    model_cache_dir: str = ""
    store_observer: StoreObserver | None = None


class ServerCore(ModelControl):
    def __init__(self, options: CoreOptions, *, own_source: bool = True) -> None:
        super().__init__(poll_wait_seconds=options.file_system_poll_wait_seconds,
                         allow_version_labels_for_unavailable_models=options.allow_version_labels_for_unavailable_models,
                         own_source=own_source,
                         stores=ModelStores(store_settings(
                             options.model_cache_dir, options.max_num_load_retries,
                             options.load_retry_interval_seconds, options.file_system_poll_wait_seconds),
                             options.store_observer))
        self.options = options
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
            on_change=self._changed_threadsafe,
        )
        self._changed: asyncio.Event | None = None
        self._reconcile_task: asyncio.Task[None] | None = None
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

    def _end_round(self) -> None:  # a change: reconcile first, then wake the waiters
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
            ModelControl._end_round(self)  # wake waiters: they re-check after every round

    # -- aspired versions (poll thread, or a worker's supervisor) -----------------------------
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

    def set_versions(self, name: str, versions: dict[int, str]) -> None:
        """Aspire exactly `versions` of `name` (a worker's supervisor decides them); blocking
        (makes loaders): call it on a thread."""
        self._on_versions(name, versions)

    def available_versions(self, name: str) -> list[int]:
        return self.manager.available_versions(name)

    # -- lifecycle --------------------------------------------------------------------
    async def start(self, models: list[ModelConfig], initial_names: set[str] | None = None) -> None:
        """Configure the initial models and start polling (returns at once)."""
        self._changed = asyncio.Event()
        await super().start(models, initial_names)
        self._reconcile_task = asyncio.create_task(self._reconcile_loop(), name="reconcile")

    async def stop(self, timeout: float | None = None) -> bool:
        """Stop polling and unload every version (each unload drains its requests, within
        their deadlines). Waits at most `timeout` seconds; False if something was still
        loading or unloading then (its thread is left behind, the process may exit)."""
        reconcile, self._reconcile_task = self._reconcile_task, None
        await self._stop_polling()
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

    # -- request path -----------------------------------------------------------------
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
