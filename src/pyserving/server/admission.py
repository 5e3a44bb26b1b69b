"""Request admission: what both front ends check before a request may start.

Kept apart from the inference service because admission is the server's policy (drain on
shutdown, per-model backpressure), while the service only runs what was admitted; the
health endpoints read the same gate to report draining.
"""

from __future__ import annotations

import asyncio

from pyserving.errors import Code, ServingError
from pyserving.monitoring.metrics import ServingMetrics, current_request

__all__ = ["RequestGate", "Admission"]


class RequestGate:
    """Admission control both front ends apply to every request; loop-only, no locks.

    `enter(model, bounded)` admits a request or raises `ServingError`: UNAVAILABLE while
    draining; RESOURCE_EXHAUSTED when `bounded` (inference) and `model` already has
    `max_in_flight_per_model` requests in flight (0: no bound). Each admitted request
    calls `leave(model)` exactly once. `start_drain()` refuses everything new;
    `wait_idle(timeout)` is True once nothing is in flight, False if the timeout passed.
    """

    def __init__(self, max_in_flight_per_model: int = 0) -> None:
        self.max_in_flight_per_model = max(0, max_in_flight_per_model)
        self.draining = False
        self._per_model: dict[str, int] = {}
        self._total = 0
        self._idle: asyncio.Event | None = None

    def enter(self, model: str, bounded: bool) -> None:
        if self.draining:
            raise ServingError(Code.UNAVAILABLE, "The server is shutting down and accepts no new requests")
        count = self._per_model.get(model, 0)
        limit = self.max_in_flight_per_model
        if bounded and limit and count >= limit:
            raise ServingError(
                Code.RESOURCE_EXHAUSTED,
                f"Too many requests in flight for model {model} (limit {limit}, "
                "--max_in_flight_requests_per_model); retry later",
            )
        self._per_model[model] = count + 1
        self._total += 1

    def leave(self, model: str) -> None:
        count = self._per_model.get(model, 0) - 1
        if count > 0:
            self._per_model[model] = count
        else:
            self._per_model.pop(model, None)
        self._total -= 1
        if self._total <= 0 and self._idle is not None:
            self._idle.set()

    def in_flight(self) -> dict[str, int]:
        """model -> requests in flight (a copy; safe to call from any thread)."""
        return dict(self._per_model)

    def start_drain(self) -> None:
        self.draining = True

    async def wait_idle(self, timeout: float | None) -> bool:
        if self._total <= 0:
            return True
        self._idle = asyncio.Event()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return False


class Admission:
    """One request's way through the server, the same for every front end: its metrics
    record starts (and is the request's `current_request`, which the service labels),
    `admit` passes the gate, `leave` gives the gate back once the work is done, and
    `finish` counts and times it. The front end only says when."""

    __slots__ = ("_metrics", "_gate", "record", "_token", "_admitted")

    def __init__(self, metrics: ServingMetrics, gate: RequestGate, entrypoint: str, api: str = "",
                 model: str = "", tf_api: str | None = None) -> None:
        self._metrics = metrics
        self._gate = gate
        self.record = metrics.start(entrypoint, api, model, tf_api=tf_api)
        self._token = current_request.set(self.record)
        self._admitted: str | None = None

    def admit(self, model: str, bounded: bool) -> None:
        """Pass the gate (UNAVAILABLE while draining, RESOURCE_EXHAUSTED past the bound)."""
        self._gate.enter(model, bounded)
        self._admitted = model

    def leave(self) -> None:
        if self._admitted is not None:
            self._gate.leave(self._admitted)
            self._admitted = None

    def finish(self, error: ServingError | None) -> None:
        """Once per request, in the context that created it; `error` None: it succeeded."""
        if self._admitted is not None:
            self.leave()
        current_request.reset(self._token)
        self._metrics.finish(self.record, error)
