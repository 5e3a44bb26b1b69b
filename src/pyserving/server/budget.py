"""MemoryBudget: how many bytes of request data the server lets requests make it hold.

A request's tensors are counted before they are allocated: a gRPC tensor by the size its
shape and dtype declare (one `float_val` may be broadcast to a shape of billions of
elements, TF's parsing rule), a REST body chunk by chunk as it arrives, a model's outputs
before they are encoded. Two bounds, each refused with RESOURCE_EXHAUSTED before anything
is allocated:

- per request (`per_request_bytes`): a request over it can never run: `RequestTooLargeError`
  (REST 413);
- all requests in flight together (`total_bytes`): a request that would take the total over
  it is refused while the others hold their bytes: plain RESOURCE_EXHAUSTED (REST 429 with
  Retry-After), so one client's large requests cannot take the memory of all.

Each request holds one `Claim`, released exactly once when everything that uses its data
has ended (the worker thread's work included, see `PredictionService`). 0 disables a bound.
Thread-safe: claims are added to on the loop and on worker threads.
"""

from __future__ import annotations

import threading
from typing import Callable

from pyserving.errors import Code, RequestTooLargeError, ServingError

__all__ = ["MemoryBudget", "Claim"]


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


class MemoryBudget:
    def __init__(self, per_request_bytes: int = 0, total_bytes: int = 0) -> None:
        self.per_request_bytes = max(0, per_request_bytes)
        self.total_bytes = max(0, total_bytes)
        self._lock = threading.Lock()
        self._held = 0  # guarded by _lock

    @property
    def held(self) -> int:
        """Bytes claimed by requests in flight now."""
        return self._held

    def claim(self) -> "Claim":
        return Claim(self)

    def _take(self, claim: "Claim", nbytes: int, what: str) -> None:
        wanted = claim.bytes + nbytes
        per_request = self.per_request_bytes
        total = self.total_bytes
        if per_request and wanted > per_request:
            raise RequestTooLargeError(
                f"{what} needs {wanted} bytes ({_mib(wanted)}), over the limit of {per_request} bytes "
                "per request (--max_request_tensor_bytes)")
        if total and wanted > total:
            raise RequestTooLargeError(
                f"{what} needs {wanted} bytes ({_mib(wanted)}), over the limit of {total} bytes for all "
                "requests in flight (--max_in_flight_tensor_bytes)")
        with self._lock:
            if total and self._held + nbytes > total:
                raise ServingError(
                    Code.RESOURCE_EXHAUSTED,
                    f"{what} needs {_mib(nbytes)} more while requests in flight hold {_mib(self._held)} of the "
                    f"{_mib(total)} they may (--max_in_flight_tensor_bytes); retry later")
            self._held += nbytes
        claim.bytes = wanted

    def _give_back(self, nbytes: int) -> None:
        with self._lock:
            self._held -= nbytes


class Claim:
    """One request's bytes: `add` before allocating, then `release` once. After `transfer`
    the request's worker releases it when its work ends (and may still `add`, decoding)."""

    __slots__ = ("_budget", "bytes", "_released", "_transferred")

    def __init__(self, budget: MemoryBudget) -> None:
        self._budget = budget
        self.bytes = 0
        self._released = False
        self._transferred = False

    def add(self, nbytes: int, what: str = "The request") -> None:
        if nbytes > 0 and not self._released:
            self._budget._take(self, nbytes, what)

    def release(self) -> None:
        if not self._transferred:
            self._release()

    def transfer(self) -> Callable[[], None]:
        self._transferred = True
        return self._release

    def _release(self) -> None:
        if not self._released:
            self._released = True
            held, self.bytes = self.bytes, 0
            if held:
                self._budget._give_back(held)
