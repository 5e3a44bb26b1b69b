"""The memory budget: per-request and in-flight bounds, claims released exactly once."""

import pytest

from pyserving.errors import Code, RequestTooLargeError, ServingError
from pyserving.server.budget import MemoryBudget


def test_a_request_over_the_per_request_bound_can_never_run():
    budget = MemoryBudget(per_request_bytes=100, total_bytes=1000)
    claim = budget.claim()
    claim.add(60)
    with pytest.raises(RequestTooLargeError) as err:
        claim.add(41, "The request's input tensors")
    assert err.value.code == Code.RESOURCE_EXHAUSTED
    assert "The request's input tensors needs 101 bytes" in err.value.message
    assert "--max_request_tensor_bytes" in err.value.message
    claim.release()
    assert budget.held == 0


def test_requests_in_flight_share_the_total_and_get_it_back():
    budget = MemoryBudget(per_request_bytes=0, total_bytes=100)
    a, b = budget.claim(), budget.claim()
    a.add(70)
    with pytest.raises(ServingError) as err:
        b.add(40)
    assert not isinstance(err.value, RequestTooLargeError)  # retrying later can work: 429
    assert "retry later" in err.value.message
    a.release()
    a.release()  # once only
    b.add(40)
    assert budget.held == 40
    b.release()
    assert budget.held == 0


def test_one_request_bigger_than_the_total_is_too_large_not_busy():
    budget = MemoryBudget(total_bytes=100)
    with pytest.raises(RequestTooLargeError):
        budget.claim().add(101)
    assert budget.held == 0


def test_a_transferred_claim_is_released_by_its_new_owner_only():
    budget = MemoryBudget(total_bytes=100)
    claim = budget.claim()
    claim.add(10)
    release = claim.transfer()
    claim.release()  # the coroutine's finally: no longer its duty
    assert budget.held == 10
    claim.add(5)  # the worker decoding
    release()
    release()
    assert budget.held == 0
    claim.add(50)  # nothing counted after the release
    assert budget.held == 0


def test_zero_means_no_bound():
    budget = MemoryBudget(0, 0)
    claim = budget.claim()
    claim.add(1 << 50)
    claim.release()
    assert budget.held == 0


def test_declared_bytes_counts_a_broadcast_before_allocating():
    from tensorflow.core.framework import tensor_pb2, types_pb2

    from pyserving.protos.tensor_codec import decode_inputs, declared_bytes

    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=[1.0])
    proto.tensor_shape.dim.add().size = 250_000_000
    proto.tensor_shape.dim.add().size = 1
    assert declared_bytes(proto) == 1_000_000_000
    budget = MemoryBudget(per_request_bytes=512 << 20)
    with pytest.raises(RequestTooLargeError):
        decode_inputs({"x": proto}, ("x",), budget.claim())
    strings = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, string_val=[b"abc", b"de"])
    strings.tensor_shape.dim.add().size = 2
    assert declared_bytes(strings) == 2 * 8 + 5
