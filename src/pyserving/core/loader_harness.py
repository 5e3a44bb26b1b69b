"""LoaderHarness: one version's loader, its state, and the handles held on it.

State moves forward only: START -> LOADING -> AVAILABLE -> UNLOADING -> END, or
START/LOADING -> END with an error. The manager changes `state`/`aspired` under its own
lock; the handles have their own condition so the request path never takes the
manager's lock.

Every handle is recorded with the deadline of the request holding it, so that draining
has a bound: it waits for the holders until the longest of their deadlines has passed
(plus `DRAIN_SLACK_SECONDS`, for the answer to be written), or `no_deadline_seconds` for a
holder without a deadline, then gives up and names the holders still there.
"""

from __future__ import annotations

import itertools
import threading
import time
from typing import Any, Callable

from pyserving.core.servable_id import ServableId
from pyserving.core.servable_state import ManagerState
from pyserving.errors import ServingError

__all__ = ["LoaderHarness", "DRAIN_SLACK_SECONDS"]

# What a drain waits beyond a holder's deadline: the request's error answer and the end of
# a model run bounded by that deadline.
DRAIN_SLACK_SECONDS = 1.0


class Holder:
    """One acquired handle: when, until when, and for whom (any object with a useful str)."""

    __slots__ = ("since", "deadline", "owner")

    def __init__(self, since: float, deadline: float | None, owner: object) -> None:
        self.since = since
        self.deadline = deadline
        self.owner = owner

    def describe(self, now: float) -> str:
        if self.deadline is None:
            due = "no deadline"
        elif self.deadline <= now:
            due = f"deadline passed {now - self.deadline:.1f} s ago"
        else:
            due = f"deadline in {self.deadline - now:.1f} s"
        return f"{self.owner or 'a request'} (held for {now - self.since:.1f} s, {due})"


class LoaderHarness:
    def __init__(self, id: ServableId, loader: Any | None, error: ServingError | None = None) -> None:
        self.id = id
        self.loader = loader
        self.state = ManagerState.END if error is not None else ManagerState.START
        self.error = error
        self.aspired = True
        self._cond = threading.Condition(threading.Lock())
        self._holders: dict[int, Holder] = {}  # guarded by _cond
        self._accepting = False               # guarded by _cond
        self._tokens = itertools.count()

    # -- request path -------------------------------------------------------------
    def try_acquire(self, deadline: float | None = None, owner: object = None) -> Callable[[], None] | None:
        """A release function for a new handle, or None when this version takes no more.

        `deadline` (a `time.monotonic()` time) bounds how long an unload waits for it."""
        with self._cond:
            if not self._accepting:
                return None
            token = next(self._tokens)
            self._holders[token] = Holder(time.monotonic(), deadline, owner)
        return lambda: self._release(token)

    def _release(self, token: int) -> None:
        with self._cond:
            if self._holders.pop(token, None) is not None and not self._holders:
                self._cond.notify_all()

    # -- lifecycle (manager only) ---------------------------------------------------
    def start_serving(self) -> None:
        with self._cond:
            self._accepting = True

    def stop_serving_and_drain(self, no_deadline_seconds: float | None = None) -> list[str]:
        """Refuse new handles, then block until every handle is released, or until the
        bound (see the module docstring) has passed. Returns a description of each holder
        still there (empty: drained). `no_deadline_seconds` None waits for holders without
        a deadline as long as they hold."""
        with self._cond:
            self._accepting = False
            while self._holders:
                bound = self._bound(no_deadline_seconds)
                now = time.monotonic()
                if bound is not None and bound <= now:
                    return [h.describe(now) for h in self._holders.values()]
                self._cond.wait(None if bound is None else bound - now)
            return []

    def _bound(self, no_deadline_seconds: float | None) -> float | None:
        latest = float("-inf")
        for h in self._holders.values():
            if h.deadline is not None:
                end = h.deadline
            elif no_deadline_seconds is None:
                return None
            else:
                end = h.since + no_deadline_seconds
            latest = max(latest, end)
        return latest + DRAIN_SLACK_SECONDS

    @property
    def in_flight(self) -> int:
        """Handles held now."""
        return len(self._holders)

    def servable(self) -> Any:
        assert self.loader is not None, "a harness without a loader has no servable"
        return self.loader.servable()
