"""RequestGate: the per-model bound, the drain refusal, and waiting for requests in flight."""

from __future__ import annotations

import asyncio

import pytest

from pyserving.errors import Code, ServingError
from pyserving.server.admission import RequestGate


def test_bound_applies_per_model_and_only_to_inference():
    gate = RequestGate(max_in_flight_per_model=2)
    gate.enter("a", bounded=True)
    gate.enter("a", bounded=True)
    with pytest.raises(ServingError) as err:
        gate.enter("a", bounded=True)
    assert err.value.code == Code.RESOURCE_EXHAUSTED
    assert "model a" in err.value.message and "--max_in_flight_requests_per_model" in err.value.message
    gate.enter("a", bounded=False)  # status / metadata are never refused for load
    gate.enter("b", bounded=True)   # another model has its own bound
    assert gate.in_flight() == {"a": 3, "b": 1}
    gate.leave("a")
    gate.leave("a")
    gate.enter("a", bounded=True)
    for model in ("a", "a", "b"):
        gate.leave(model)
    assert gate.in_flight() == {}


def test_zero_means_unbounded():
    gate = RequestGate(0)
    for _ in range(1000):
        gate.enter("a", bounded=True)
    assert gate.in_flight() == {"a": 1000}


def test_drain_refuses_new_requests_and_waits_for_the_others():
    async def scenario() -> None:
        gate = RequestGate()
        assert await gate.wait_idle(0)  # nothing in flight
        gate.enter("a", bounded=True)
        gate.start_drain()
        with pytest.raises(ServingError) as err:
            gate.enter("a", bounded=False)
        assert err.value.code == Code.UNAVAILABLE
        assert not await gate.wait_idle(0.01)  # still one in flight
        waiter = asyncio.create_task(gate.wait_idle(5))
        await asyncio.sleep(0)
        assert not waiter.done()
        gate.leave("a")
        assert await waiter

    asyncio.run(scenario())
