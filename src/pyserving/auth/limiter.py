"""FailureLimiter: an address that fails authentication too often is refused for a while.

Counts failures per client address in a fixed window; once an address has `max_failures`
in its window, every request from it is refused (without checking its credentials) until
the window ends, so guessing keys costs a window per `max_failures` guesses. Bounded: at
most `max_addresses` are tracked, the oldest forgotten first, so a flood of addresses
costs memory in proportion to the bound, not to the flood. Task-safe on one event loop
(no await inside).
"""

from __future__ import annotations

import time
from typing import Callable

__all__ = ["FailureLimiter"]


class FailureLimiter:
    def __init__(self, max_failures: int, window_seconds: float, *, max_addresses: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_failures = max_failures
        self.window_seconds = window_seconds
        self._max_addresses = max_addresses
        self._clock = clock
        self._failures: dict[str, tuple[float, int]] = {}  # address -> (window start, failures in it)

    def configure(self, max_failures: int, window_seconds: float) -> None:
        self.max_failures = max_failures
        self.window_seconds = window_seconds

    def _current(self, address: str, now: float) -> tuple[float, int] | None:
        entry = self._failures.get(address)
        if entry is not None and now - entry[0] >= self.window_seconds:
            del self._failures[address]
            return None
        return entry

    def blocked(self, address: str) -> bool:
        if not self._failures:
            return False
        entry = self._current(address, self._clock())
        return entry is not None and entry[1] >= self.max_failures

    def failed(self, address: str) -> bool:
        """Count a failure; True when it is the one that blocks the address."""
        now = self._clock()
        entry = self._current(address, now)
        if entry is None:
            if len(self._failures) >= self._max_addresses:
                del self._failures[next(iter(self._failures))]
            entry = (now, 0)
        count = entry[1] + 1
        self._failures[address] = (entry[0], count)
        return count == self.max_failures
