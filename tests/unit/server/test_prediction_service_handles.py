"""Who releases a handle, and when: the work that uses the servable, never the coroutine
that gave up on it (a client's cancellation, a deadline answered while the run goes on)."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from pyserving.core.aspired_versions_manager import ServableData
from pyserving.core.servable_id import ServableId
from pyserving.errors import Code, ServingError
from pyserving.platforms.base import Signature, TensorSpec
from pyserving.server.prediction_service import ModelSpec, PredictionService
from pyserving.server.server_core import CoreOptions, ServerCore

_SPEC = TensorSpec("x", "x:0", "DT_FLOAT", np.dtype(np.float32), (-1,))
_SIG = Signature("serving_default", "tensorflow/serving/predict", {"x": _SPEC}, {"y": _SPEC})


class GatedServable:
    """Runs block until `go` is set; `running` is set when a run has started."""

    signatures = {"serving_default": _SIG}
    runtime_name = "TF1"

    def __init__(self) -> None:
        self.go = threading.Event()
        self.running = threading.Event()
        self.runs = 0

    def run(self, signature, inputs, output_filter=(), timeout_ms=None):
        self.running.set()
        self.go.wait(10)
        self.runs += 1
        return {"y": inputs["x"] * 2}


class Loader:
    def __init__(self, servable):
        self._servable = servable

    def load(self):
        pass

    def unload(self):
        pass

    def servable(self):
        return self._servable


@pytest.fixture
def served():
    servable = GatedServable()
    core = ServerCore(CoreOptions(file_system_poll_wait_seconds=0))
    core.manager._submit = lambda fn: fn()  # loads inline: the test steps the lifecycle
    core.manager.set_aspired_versions("m", [ServableData(ServableId("m", 1), Loader(servable))])
    while core.manager.reconcile_once():
        pass
    service = PredictionService(core)
    yield core, service, servable
    servable.go.set()


def _in_use(core) -> int:
    return core.manager.handles_in_use()[ServableId("m", 1)]


def _decode(sig):
    return {"x": np.array([1.0, 2.0], np.float32)}


async def _until(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)


def test_a_cancelled_call_keeps_the_handle_until_its_run_ends(served):
    core, service, servable = served

    async def main():
        call = asyncio.create_task(service.predict(ModelSpec("m"), _decode))
        await asyncio.to_thread(servable.running.wait, 5)
        call.cancel()  # what grpc.aio does when the client cancels
        with pytest.raises(asyncio.CancelledError):
            await call
        assert _in_use(core) == 1  # the worker still runs the model with it
        servable.go.set()
        await _until(lambda: _in_use(core) == 0)

    asyncio.run(main())
    assert servable.runs == 1


def test_the_deadline_is_answered_while_the_run_goes_on_holding_the_handle(served):
    core, service, servable = served

    async def main():
        started = time.monotonic()
        with pytest.raises(ServingError) as err:
            await service.predict(ModelSpec("m"), _decode, deadline=time.monotonic() + 0.3)
        assert err.value.code == Code.DEADLINE_EXCEEDED
        assert time.monotonic() - started < 2
        assert _in_use(core) == 1
        servable.go.set()
        await _until(lambda: _in_use(core) == 0)

    asyncio.run(main())


def test_a_call_cancelled_before_its_work_started_releases_at_once(served):
    core, service, servable = served
    service._executor = __import__("concurrent.futures").futures.ThreadPoolExecutor(1)

    async def main():
        first = asyncio.create_task(service.predict(ModelSpec("m"), _decode))
        await asyncio.to_thread(servable.running.wait, 5)
        second = asyncio.create_task(service.predict(ModelSpec("m"), _decode))  # queued behind it
        await _until(lambda: _in_use(core) == 2)
        second.cancel()
        with pytest.raises(asyncio.CancelledError):
            await second
        assert _in_use(core) == 1  # its work never ran: nothing holds it any more
        servable.go.set()
        assert (await first).outputs["y"].tolist() == [2.0, 4.0]
        await _until(lambda: _in_use(core) == 0)

    asyncio.run(main())
    assert servable.runs == 1


def test_an_unload_waits_for_the_run_of_a_cancelled_call(served):
    core, service, servable = served
    unloaded = threading.Event()
    changed = threading.Event()
    core.manager._submit_unload = lambda fn: threading.Thread(target=fn, daemon=True).start()
    core.manager._on_change = changed.set
    core.bus.subscribe(lambda e: unloaded.set() if e.state.name == "END" else None)

    async def main():
        call = asyncio.create_task(service.predict(ModelSpec("m"), _decode))
        await asyncio.to_thread(servable.running.wait, 5)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        core.manager.set_aspired_versions("m", [])
        while core.manager.reconcile_once():
            pass
        assert not await asyncio.to_thread(unloaded.wait, 0.3)  # the run still uses it
        servable.go.set()
        assert await asyncio.to_thread(unloaded.wait, 5)

    asyncio.run(main())
