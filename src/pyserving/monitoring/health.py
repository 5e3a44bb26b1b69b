"""Liveness and readiness: `GET /healthz`, `GET /readyz` and what gRPC health reports.

- Liveness (`/healthz`): 200 `{"status": "alive"}` whenever the event loop answers, during
  startup and during a drain too (a liveness failure would get the pod killed mid-drain).
- Readiness (`/readyz`): 200 `{"status": "ready"}` once the initial load has finished,
  while every configured model has an AVAILABLE version and the server is not draining;
  otherwise 503 `{"error": "Not ready: <reason>"}` (TF Serving's error shape).
- `watch(on_change)` calls `on_change(ready)` whenever readiness flips (woken by every
  `ServableState` event, and re-checked every `interval` seconds for changes no event
  announces, such as a config reload); the `Server` feeds it to the gRPC health service.

Everything here runs on the event loop; `core` is a `ServerCore` (`is_ready`, `models`,
`bus`) and `gate` anything with a `draining` attribute (the `RequestGate`).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Awaitable, Callable

import orjson

__all__ = ["Health", "HEALTHZ_PATH", "READYZ_PATH"]

HEALTHZ_PATH = "/healthz"
READYZ_PATH = "/readyz"
_JSON = [(b"content-type", b"application/json")]
_ALIVE = orjson.dumps({"status": "alive"})
_READY = orjson.dumps({"status": "ready"})

Response = tuple[int, list[tuple[bytes, bytes]], bytes]


class Health:
    def __init__(self, core: Any, gate: Any) -> None:
        self._core = core
        self._gate = gate
        self._started = False
        self._wake: asyncio.Event | None = None
        self._stopped = False

    def mark_started(self) -> None:
        """The initial load has finished (called once, before the ready line)."""
        self._started = True
        self.refresh()

    def refresh(self) -> None:
        """Re-check readiness now (loop thread only)."""
        if self._wake is not None:
            self._wake.set()

    def readiness(self) -> tuple[bool, str]:
        """(ready, reason when not)."""
        if self._gate.draining:
            return False, "the server is shutting down"
        if not self._started:
            return False, "loading the initial models (" + ", ".join(sorted(self._core.models)) + ")"
        return self._core.is_ready()

    async def healthz(self) -> Response:
        return 200, _JSON, _ALIVE

    async def readyz(self) -> Response:
        ready, reason = self.readiness()
        if ready:
            return 200, _JSON, _READY
        return 503, _JSON, orjson.dumps({"error": f"Not ready: {reason}"})

    def routes(self) -> dict[str, Callable[[], Awaitable[Response]]]:
        """Exact-path handlers for `RestApp.extra_routes`."""
        return {HEALTHZ_PATH: self.healthz, READYZ_PATH: self.readyz}

    def stop(self) -> None:
        """End `watch` (loop thread). Cancelling it is not enough on Python 3.10 and 3.11:
        `asyncio.wait_for` drops a cancellation that arrives as the event it waits for is
        set, and a worker's readiness is nudged just then, while the server stops."""
        self._stopped = True
        self.refresh()

    async def watch(self, on_change: Callable[[bool], Awaitable[None]], interval: float = 1.0) -> None:
        """Call `on_change(ready)` at once and on every flip; runs until `stop()`."""
        loop = asyncio.get_running_loop()
        wake = self._wake = asyncio.Event()

        def nudge(_event: object) -> None:  # bus subscriber: any thread
            with contextlib.suppress(RuntimeError):  # loop already closed
                loop.call_soon_threadsafe(wake.set)

        unsubscribe = self._core.bus.subscribe(nudge)
        last: bool | None = None
        try:
            while not self._stopped:
                wake.clear()
                ready, _ = self.readiness()
                if ready != last:
                    last = ready
                    await on_change(ready)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(wake.wait(), interval)
        finally:
            unsubscribe()
            self._wake = None
