"""AspiredVersionsManager: turns sources' aspired-version sets into loads and unloads.

Sources call `set_aspired_versions(name, versions)` with the full set of versions they
want served (each a `ServableData`: a loader, or the error that prevented making one).
`reconcile_once()` applies pending sets and starts at most one policy action per
servable; loads and unloads run on the injected `submit` / `submit_unload` executors
(thread pools in the server, inline in tests, so tests step the lifecycle without sleeps
or threads). Nothing here waits: a set that re-aspires a version still unloading stays
pending (TF Serving's rule) and is applied by the round after that unload ends, so the
version comes back; `reconcile_once()` returns True only when it changed something, so
calling it until False always ends.

An unload first drains the version's handles, with a bound (see `LoaderHarness`): past the
longest deadline of the requests still holding it, it logs them and unloads anyway. A load
still running after `load_timeout_seconds` (stuck on I/O, say) is reported as failed at
once; its thread cannot be stopped, so when it ends its result is unloaded and dropped.

Thread-safety: every public method may be called from any thread. `_lock` guards
`_harnesses` and `_pending`; `_serving` is an immutable snapshot swapped under `_lock`
and read without it (the request path takes no manager lock).
"""

from __future__ import annotations

import functools
import logging
import threading
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from pyserving.core.aspired_version_policy import (
    ActionKind,
    AspiredVersionInfo,
    availability_preserving,
)
from pyserving.core.event_bus import EventBus
from pyserving.core.loader_harness import LoaderHarness
from pyserving.core.servable_handle import ServableHandle, ServableRequest
from pyserving.core.servable_id import ServableId
from pyserving.core.servable_state import ManagerState, ServableState
from pyserving.errors import Code, ServingError

__all__ = ["ServableData", "AspiredVersionsManager"]

log = logging.getLogger("pyserving.manager")


@dataclass(frozen=True, slots=True)
class ServableData:
    """A version a source wants served: its loader, or why there is none."""

    id: ServableId
    loader: Any | None = None
    error: ServingError | None = None


def _as_serving_error(exc: BaseException) -> ServingError:
    if isinstance(exc, ServingError):
        return exc
    return ServingError(Code.UNKNOWN, f"{type(exc).__name__}: {exc}")


def _inline(fn: Callable[[], None]) -> None:
    fn()


class AspiredVersionsManager:
    def __init__(
        self,
        bus: EventBus[ServableState],
        *,
        submit: Callable[[Callable[[], None]], Any] = _inline,
        submit_unload: Callable[[Callable[[], None]], Any] | None = None,
        drain_no_deadline_seconds: float | None = None,
        load_timeout_seconds: float = 0.0,
        max_num_load_retries: int = 5,
        load_retry_interval_seconds: float = 60.0,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self._bus = bus
        self._submit = submit
        self._submit_unload = submit_unload or submit
        self._drain_no_deadline_seconds = drain_no_deadline_seconds
        self._load_timeout = max(0.0, load_timeout_seconds)
        self._working = 0  # loads and unloads running on their threads; guarded by _lock
        self._abandoned: set[LoaderHarness] = set()  # timed-out loads still running; guarded by _lock
        self._max_retries = max(0, max_num_load_retries)
        self._retry_interval = max(0.0, load_retry_interval_seconds)
        self._on_change = on_change or (lambda: None)
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._harnesses: dict[str, dict[int, LoaderHarness]] = {}  # guarded by _lock
        self._pending: dict[str, list[ServableData]] = {}          # guarded by _lock
        # name -> ((version, harness), ...) highest first; replaced, never mutated
        self._serving: Mapping[str, tuple[tuple[int, LoaderHarness], ...]] = {}

    # -- sources --------------------------------------------------------------------
    def set_aspired_versions(self, name: str, versions: list[ServableData]) -> None:
        """Replace the aspired set of `name` (applied on the next reconcile)."""
        with self._lock:
            self._pending[name] = list(versions)
        self._on_change()

    # -- request path ---------------------------------------------------------------
    def get_handle(self, request: ServableRequest, deadline: float | None = None,
                   owner: object = None) -> ServableHandle:
        """A handle on an AVAILABLE version, or NOT_FOUND in TF Serving's wording.

        `deadline` (`time.monotonic()`) is the request's: an unload waits for this handle
        until it has passed; `owner` names the request in the log of a drain that gave up."""
        for _ in range(3):  # a version may be unloading between the lookup and acquire
            entries = self._serving.get(request.name)
            harness = None
            if entries:
                if request.version is None:
                    harness = entries[0][1]
                else:
                    for version, h in entries:
                        if version == request.version:
                            harness = h
                            break
            if harness is None:
                break
            release = harness.try_acquire(deadline, owner)
            if release is not None:
                return ServableHandle(harness.id, harness.servable(), release)
        raise ServingError(Code.NOT_FOUND, f"Servable not found for request: {request}")

    def available_versions(self, name: str) -> list[int]:
        return [v for v, _ in self._serving.get(name, ())]

    def handles_in_use(self) -> dict[ServableId, int]:
        """Handles held now on each loaded or unloading version (watchdog metrics)."""
        with self._lock:
            harnesses = [h for by_version in self._harnesses.values() for h in by_version.values()
                         if h.state in (ManagerState.AVAILABLE, ManagerState.UNLOADING)]
        return {h.id: h.in_flight for h in harnesses}

    # -- reconciliation -------------------------------------------------------------
    def reconcile_once(self) -> bool:
        """Apply pending aspired sets, then start one action per servable.

        Returns True if anything changed (call again until it returns False to settle). A
        set kept pending, because it re-aspires a version still unloading, is no change:
        the end of that unload calls `on_change`.
        """
        events: list[ServableState] = []
        work: list[tuple[ActionKind, LoaderHarness]] = []
        applied = False
        with self._lock:
            pending, self._pending = self._pending, {}
            for name, data in pending.items():
                if self._apply_aspired(name, data, events):
                    applied = True
                else:
                    self._pending.setdefault(name, data)  # a newer set may have arrived
            for name, by_version in self._harnesses.items():
                action = availability_preserving(
                    AspiredVersionInfo(v, h.state, h.aspired, h.error is not None)
                    for v, h in by_version.items()
                )
                if action is None:
                    continue
                h = by_version[action.version]
                if action.kind is ActionKind.LOAD:
                    h.state = ManagerState.LOADING
                else:
                    h.state = ManagerState.UNLOADING
                    self._rebuild_serving_locked()
                events.append(ServableState(h.id, h.state))
                work.append((action.kind, h))
            changed_names = self._flush_locked()
        for event in events:
            self._publish(event)
        for kind, h in work:
            if kind is ActionKind.LOAD:
                self._submit(functools.partial(self._load, h))
            else:
                self._submit_unload(functools.partial(self._unload, h))
        return bool(applied or work or events or changed_names)

    def _apply_aspired(self, name: str, data: list[ServableData], events: list[ServableState]) -> bool:
        by_version = self._harnesses.setdefault(name, {})
        wanted = {d.id.version: d for d in data}
        for d in wanted.values():
            h = by_version.get(d.id.version)
            if h is not None and h.state == ManagerState.UNLOADING:
                return False  # re-aspired while unloading: applied once the unload has ended
        for version, h in list(by_version.items()):
            if version in wanted:
                continue
            h.aspired = False
            if h.state == ManagerState.START:  # never started: nothing to undo
                h.state = ManagerState.END
                events.append(ServableState(h.id, h.state))
        for version, d in wanted.items():
            h = by_version.get(version)
            if h is not None and h.state != ManagerState.END:
                h.aspired = True
                continue
            if h is not None and h.error is not None and h.aspired:
                continue  # failed and still aspired: not retried (as TF Serving)
            h = LoaderHarness(d.id, d.loader, d.error)
            by_version[version] = h
            if d.error is not None:
                log.error("Servable %s cannot be loaded: %s", d.id, d.error.message)
            events.append(ServableState(h.id, h.state, h.error))
        return True

    def _flush_locked(self) -> list[str]:
        changed = []
        for name, by_version in list(self._harnesses.items()):
            for version, h in list(by_version.items()):
                if h.state == ManagerState.END and not h.aspired:
                    del by_version[version]
                    changed.append(name)
            if not by_version and name not in self._pending:
                del self._harnesses[name]
        return changed

    def _rebuild_serving_locked(self) -> None:
        serving: dict[str, tuple[tuple[int, LoaderHarness], ...]] = {}
        for name, by_version in self._harnesses.items():
            entries = sorted(
                ((v, h) for v, h in by_version.items() if h.state == ManagerState.AVAILABLE),
                key=lambda e: -e[0],
            )
            if entries:
                serving[name] = tuple(entries)
        self._serving = serving

    # -- workers (run on the submit executor) ---------------------------------------------
    def _load(self, h: LoaderHarness) -> None:
        with self._lock:
            self._working += 1
        timer = None
        if self._load_timeout:
            timer = threading.Timer(self._load_timeout, self._load_timed_out, (h,))
            timer.daemon = True
            timer.start()
        try:
            self._load_and_report(h)
        finally:
            if timer is not None:
                timer.cancel()
            with self._lock:
                if h in self._abandoned:
                    self._abandoned.discard(h)
                else:
                    self._working -= 1
            self._on_change()

    def _load_timed_out(self, h: LoaderHarness) -> None:
        with self._lock:
            if h.state != ManagerState.LOADING:
                return
            self._working -= 1  # nobody waits for it any more: it may never end
            self._abandoned.add(h)
            h.state = ManagerState.END
            h.error = ServingError(
                Code.DEADLINE_EXCEEDED,
                f"Loading did not finish within {self._load_timeout:g} s (--load_timeout_seconds); "
                "what it loads later is discarded")
        log.error("Loading servable %s failed: %s", h.id, h.error.message)
        self._publish(ServableState(h.id, h.state, h.error))
        self._on_change()

    def _load_and_report(self, h: LoaderHarness) -> None:
        attempt = 0
        error: ServingError | None = None
        while True:
            try:
                assert h.loader is not None  # harnesses without one are errors, never loaded
                h.loader.load()
                error = None
                break
            except BaseException as exc:  # noqa: BLE001 - a load error is data, never a crash
                error = _as_serving_error(exc)
            if attempt >= self._max_retries or not h.aspired or self._stopping.is_set():
                break
            attempt += 1
            log.warning(
                "Loading servable %s failed (%s); retry %d of %d in %.3g s",
                h.id, error.message, attempt, self._max_retries, self._retry_interval,
            )
            if self._stopping.wait(self._retry_interval):
                break
        with self._lock:
            timed_out = h.state != ManagerState.LOADING
            if timed_out:
                pass
            elif error is None:
                h.state = ManagerState.AVAILABLE
                h.start_serving()
                self._rebuild_serving_locked()
            else:
                h.state = ManagerState.END
                h.error = error
        if timed_out:  # reported as failed already: drop what it loaded
            log.warning("Servable %s finished loading after it timed out; unloading it", h.id)
            if error is None:
                try:
                    assert h.loader is not None
                    h.loader.unload()
                except BaseException:  # noqa: BLE001
                    log.exception("Unloading servable %s failed", h.id)
            return
        if error is not None:
            log.error("Loading servable %s failed: %s", h.id, error.message)
        self._publish(ServableState(h.id, h.state, h.error))

    def _unload(self, h: LoaderHarness) -> None:
        with self._lock:
            self._working += 1
        try:
            self._drain_and_unload(h)
        finally:
            with self._lock:
                self._working -= 1
            self._on_change()

    def _drain_and_unload(self, h: LoaderHarness) -> None:
        still_held = h.stop_serving_and_drain(self._drain_no_deadline_seconds)
        if still_held:
            log.warning(
                "Unloading servable %s without waiting longer for %d request(s) past their deadline "
                "still holding it: %s", h.id, len(still_held), "; ".join(still_held),
            )
        try:
            if h.loader is not None:
                h.loader.unload()
        except BaseException:  # noqa: BLE001
            log.exception("Unloading servable %s failed", h.id)
        with self._lock:
            h.state = ManagerState.END
        self._publish(ServableState(h.id, h.state))

    def _publish(self, event: ServableState) -> None:
        self._bus.publish(event)

    # -- shutdown -------------------------------------------------------------------
    def stop_retries(self) -> None:
        """Abort pending load retries (shutdown)."""
        self._stopping.set()

    def threads_working(self) -> int:
        """Loads and unloads running on their threads (not the timed-out loads)."""
        with self._lock:
            return self._working

    def abandoned_loads(self) -> int:
        """Loads that timed out and still run on their threads."""
        with self._lock:
            return len(self._abandoned)

    def busy_versions(self) -> list[ServableId]:
        """Versions loading or unloading now."""
        with self._lock:
            return [h.id for by_version in self._harnesses.values() for h in by_version.values()
                    if h.state in (ManagerState.LOADING, ManagerState.UNLOADING)]

    def is_settled(self) -> bool:
        """No pending sets, no load/unload in progress, nothing left to do."""
        with self._lock:
            if self._pending:
                return False
            for by_version in self._harnesses.values():
                infos = []
                for v, h in by_version.items():
                    if h.state in (ManagerState.LOADING, ManagerState.UNLOADING):
                        return False
                    infos.append(AspiredVersionInfo(v, h.state, h.aspired))
                if availability_preserving(infos) is not None:
                    return False
        return True
