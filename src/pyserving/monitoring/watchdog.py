"""LoopWatchdog: measures the event loop's lag, and says so while the loop is blocked.

Every request, lifecycle round and health probe runs on one event loop, so a loop that
is blocked (a busy loop, a blocking call by mistake) stops the whole server. A thread of
its own hands the loop a probe every `interval` seconds and times how late the loop runs
it (`pyserving_event_loop_lag_seconds`). A probe still waiting after `warn_after_seconds`
logs a WARNING at once, with what the loop's thread is doing (its stack), and again every
`repeat_seconds` while it stays blocked; a later one reports how long the block lasted.

The thread sleeps on an event between probes: two wake-ups a second when idle.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import threading
import time
import traceback
from typing import Callable

__all__ = ["LoopWatchdog"]

log = logging.getLogger("pyserving.watchdog")


class LoopWatchdog:
    def __init__(self, observe: Callable[[float], None], *, interval: float = 0.5,
                 warn_after_seconds: float = 1.0, repeat_seconds: float = 10.0) -> None:
        self._observe = observe
        self._interval = interval
        self._warn_after = warn_after_seconds
        self._repeat = repeat_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0

    def start(self) -> None:
        """Watch the running loop (call on it)."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._thread = threading.Thread(target=self._run, name="loop-watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        loop = self._loop
        assert loop is not None
        while not self._stop.wait(self._interval):
            ran = threading.Event()
            sent = time.monotonic()
            lag = [0.0]

            def probe(sent: float = sent, lag: list[float] = lag, ran: threading.Event = ran) -> None:
                lag[0] = time.monotonic() - sent
                ran.set()

            try:
                loop.call_soon_threadsafe(probe)
            except RuntimeError:  # the loop has closed
                return
            if not ran.wait(self._warn_after):
                while not self._stop.is_set():
                    log.warning("The event loop has not run for %.1f s; every request waits. Its thread is "
                                "at:\n%s", time.monotonic() - sent, self._loop_stack())
                    if ran.wait(self._repeat):
                        break
            if ran.is_set():
                self._observe(lag[0])
                if lag[0] >= self._warn_after:
                    log.warning("The event loop was blocked for %.1f s", lag[0])

    def _loop_stack(self) -> str:
        with contextlib.suppress(Exception):
            frame = sys._current_frames().get(self._loop_thread)
            if frame is not None:
                return "".join(traceback.format_stack(frame)).rstrip()
        return "(unknown)"
