"""How `rpc` records a call that grpc.aio cancelled: near its deadline it is DEADLINE_EXCEEDED
(the client's deadline reaches the server as a cancellation, slightly before the server's own
copy of the deadline, which started when the call arrived), otherwise CANCELLED."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry

from pyserving.api.grpc.servicers import rpc
from pyserving.monitoring.metrics import UNKNOWN_MODEL, ServingMetrics
from pyserving.server.admission import Admission, RequestGate


class _Context:
    def __init__(self, remaining: float | None) -> None:
        self.remaining = remaining

    def time_remaining(self) -> float | None:
        return self.remaining


class _Request:
    class model_spec:  # noqa: N801 - shaped like the proto field
        name = "m"


class _Servicer:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self._service = type("Service", (), {})()
        metrics, gate = ServingMetrics(self.registry), RequestGate()
        self._service.metrics, self._service.gate = metrics, gate
        self._service.begin = lambda *args: Admission(metrics, gate, *args)

    @rpc
    async def Predict(self, request, context):  # noqa: N802 - the gRPC method name
        raise asyncio.CancelledError()


@pytest.mark.parametrize("remaining, code", [(-0.01, "DEADLINE_EXCEEDED"), (0.004, "DEADLINE_EXCEEDED"),
                                             (5.0, "CANCELLED"), (None, "CANCELLED")])
def test_a_cancelled_call_is_recorded_by_how_close_its_deadline_was(remaining, code):
    servicer = _Servicer()
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(servicer.Predict(_Request(), _Context(remaining)))
    errors = {c: servicer.registry.get_sample_value("pyserving_request_errors_total",
                                                    {"model": UNKNOWN_MODEL, "code": c})
              for c in ("DEADLINE_EXCEEDED", "CANCELLED")}
    assert errors == {code: 1.0, **{c: None for c in errors if c != code}}
