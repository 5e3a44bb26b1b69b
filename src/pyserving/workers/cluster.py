"""ClusterStates: every worker's version states, and the one state the supervisor reports.

A version is AVAILABLE once every counted worker has it AVAILABLE; it is LOADING while
one of them still loads it (a worker that has not reported an aspired version yet counts
as START); UNLOADING as soon as one worker unloads it (it is no longer served everywhere);
END when all have ended it; END with the error when it failed anywhere.

Counted workers are the ones the server started with, and any other once it has joined
(finished loading what it was started with): a replacement worker that is still loading
does not make a served version look unavailable. When no counted worker is left, the
last merged states stand until one is.

Pure bookkeeping, one thread (the supervisor's loop); `publish` gets a `ServableState`
for every change of a merged state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from pyserving.core.servable_id import ServableId
from pyserving.core.servable_state import ManagerState, ServableState

__all__ = ["ClusterStates", "merge"]


def merge(states: list[ServableState | None], aspired: bool) -> ServableState | None:
    """The merged state of one version over the counted workers' states (None: the worker
    has not reported it); None when no worker knows the version."""
    known = [s for s in states if s is not None]
    if not known:
        return None
    sid = known[0].id
    for s in known:
        if s.state == ManagerState.END and s.error is not None:
            return ServableState(sid, ManagerState.END, s.error)
    ranks = [s.state for s in known]
    if aspired and len(known) < len(states):
        ranks.append(ManagerState.START)
    if all(r == ManagerState.END for r in ranks):
        return ServableState(sid, ManagerState.END)
    if any(r in (ManagerState.UNLOADING, ManagerState.END) for r in ranks):
        return ServableState(sid, ManagerState.UNLOADING)
    return ServableState(sid, min(ranks))


@dataclass
class _Worker:
    counted: bool
    joined: bool = False
    states: dict[ServableId, ServableState] = field(default_factory=dict)


class ClusterStates:
    def __init__(self, publish: Callable[[ServableState], None], is_aspired: Callable[[ServableId], bool]) -> None:
        self._publish = publish
        self._is_aspired = is_aspired
        self._workers: dict[int, _Worker] = {}
        self._merged: dict[ServableId, ServableState] = {}

    def add(self, worker: int, *, counted: bool) -> None:
        """A live worker; `counted` at once (one the server starts with) or once it joins."""
        self._workers[worker] = _Worker(counted)

    def remove(self, worker: int) -> None:
        if self._workers.pop(worker, None) is not None:
            self._recompute(None)

    def join(self, worker: int) -> None:
        entry = self._workers.get(worker)
        if entry is not None and not entry.joined:
            entry.joined = entry.counted = True
            self._recompute(None)

    def update(self, worker: int, event: ServableState) -> None:
        entry = self._workers.get(worker)
        if entry is None:  # a late event of a worker already gone
            return
        entry.states[event.id] = event
        self._recompute([event.id])

    def refresh(self) -> None:
        """Re-merge everything (the aspired sets changed)."""
        self._recompute(None)

    def counted(self) -> list[int]:
        return [k for k, w in self._workers.items() if w.counted]

    def joined(self) -> int:
        return sum(1 for w in self._workers.values() if w.joined)

    def state(self, sid: ServableId) -> ServableState | None:
        return self._merged.get(sid)

    def worker_state(self, worker: int, sid: ServableId) -> ServableState | None:
        entry = self._workers.get(worker)
        return None if entry is None else entry.states.get(sid)

    def _recompute(self, ids: list[ServableId] | None) -> None:
        counted = [self._workers[k] for k in self.counted()]
        if not counted:  # nothing serves; the last merged states stand until a worker is back
            return
        if ids is None:
            every: set[ServableId] = set(self._merged)
            for w in counted:
                every.update(w.states)
            ids = sorted(every)
        for sid in ids:
            merged = merge([w.states.get(sid) for w in counted], self._is_aspired(sid))
            if merged is None:
                continue
            before = self._merged.get(sid)
            if before is None or before.state != merged.state or _message(before) != _message(merged):
                self._merged[sid] = merged
                self._publish(merged)


def _message(state: ServableState) -> str | None:
    return None if state.error is None else state.error.message
