"""Readiness from the server's state; `watch` reports flips (what gRPC health follows)."""

from __future__ import annotations

import asyncio

import orjson

from pyserving.core.event_bus import EventBus
from pyserving.monitoring.health import Health
from pyserving.server.admission import RequestGate


class FakeCore:
    """What Health reads from ServerCore: `models`, `is_ready()`, `bus`."""

    def __init__(self) -> None:
        self.models = {"m": object()}
        self.missing: list[str] = []
        self.bus: EventBus[object] = EventBus()

    def is_ready(self) -> tuple[bool, str]:
        if self.missing:
            return False, "model(s) without an AVAILABLE version: " + ", ".join(self.missing)
        return True, ""


def answer(handler) -> tuple[int, dict]:
    status, headers, body = asyncio.run(handler())
    assert dict(headers)[b"content-type"] == b"application/json"
    return status, orjson.loads(body)


def test_readiness_through_startup_model_loss_and_drain():
    core, gate = FakeCore(), RequestGate()
    health = Health(core, gate)
    assert answer(health.healthz) == (200, {"status": "alive"})
    assert answer(health.readyz) == (503, {"error": "Not ready: loading the initial models (m)"})
    health.mark_started()
    assert answer(health.readyz) == (200, {"status": "ready"})
    core.missing = ["m"]
    assert answer(health.readyz) == (503, {"error": "Not ready: model(s) without an AVAILABLE version: m"})
    core.missing = []
    gate.start_drain()
    assert answer(health.readyz) == (503, {"error": "Not ready: the server is shutting down"})
    assert answer(health.healthz) == (200, {"status": "alive"})  # alive while draining
    assert set(health.routes()) == {"/healthz", "/readyz"}


def test_watch_reports_every_flip_woken_by_servable_events():
    core, gate = FakeCore(), RequestGate()
    health = Health(core, gate)

    async def scenario() -> list[bool]:
        seen: list[bool] = []
        changed = asyncio.Event()

        async def on_change(ready: bool) -> None:
            seen.append(ready)
            changed.set()

        async def next_flip() -> None:
            await asyncio.wait_for(changed.wait(), 5)
            changed.clear()

        task = asyncio.create_task(health.watch(on_change, interval=60))  # only events wake it
        await next_flip()                      # initial state: not ready
        health.mark_started()
        await next_flip()                      # ready
        core.missing = ["m"]
        core.bus.publish(object())             # a ServableState event (from any thread)
        await next_flip()                      # not ready
        core.missing = []
        await asyncio.to_thread(core.bus.publish, object())
        await next_flip()                      # ready again
        task.cancel()
        return seen

    assert asyncio.run(scenario()) == [False, True, False, True]
