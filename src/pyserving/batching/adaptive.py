"""The adaptive batching policy (`--batching_mode=adaptive`): when a queue's open batch runs.

TF Serving's rule (``fixed``) holds every batch until it is full or its oldest task waited
``batch_timeout_micros``, so a lone request on an idle model pays the whole timeout. The
adaptive rule instead runs a batch as soon as the model is free, and waits for more rows
only when a cost model says the wait pays for itself:

- **Cost model** (`CostModel`): a batch of n rows takes ``a + b * n`` seconds, fitted online
  by least squares over the measured batch times with exponential forgetting (recent
  batches count most; a model whose cost drifts, e.g. after a new version or under CPU
  contention, is followed within a few dozen batches). It also keeps the measured time of
  every size it has run, which decides padding.
- **Arrivals** (`AdaptivePolicy.arrived`): exponentially weighted gap between tasks and rows
  per task. A long idle gap pulls the gap estimate up at once, so the first requests of a
  burst after idleness never wait.
- **Decision** (`AdaptivePolicy.wait_seconds`, `AdaptivePolicy.run_at`): when tasks arrive
  ``g`` seconds apart and ``g`` is shorter than a batch's fixed cost ``a``, the tasks of a
  burst are worth one batch: the batch runs once no task came for two typical gaps (the
  burst is over), when it is full, or at its bounds. When ``g >= a`` (a lone client, light
  traffic) it runs at once, unless the process is using most of the CPU it may run on
  (`AdaptivePolicy.saturated`) and tasks keep finding others queued or running (several
  clients at once; a lone client's next request only comes once this one is answered).
  Why not less: with the model on the core the front end also runs on (the server pinned
  to one core), a batch started while requests are still arriving pays ``a`` again for
  them *and* takes the CPU from the event loop that is reading them, so every request in
  flight waits for it. (The myopic rule "wait for one more task iff ``(m + 1) g + m b r <
  a``", the latency sum of the queued tasks and the next one for a model with a core of its
  own, measured no better at 64 clients and stops short of full batches when ``a`` is
  small.)
  While saturated, two silences do not end a burst: the one while a batch runs (the
  front end barely gets the CPU, so nothing arrives: silence counts from the batch's end),
  and one during which the process kept working (other requests' answers, a protocol that
  hands the loop one request per turn: the burst is over when the front end went quiet,
  not merely this queue). Requests that never pause are then batched up to the bounds, as
  TF Serving's rule would. ``batch_timeout_micros`` (from the oldest task's arrival) and
  ``max_latency`` (the oldest task's wait plus the batch's estimated run time) bound every
  wait, and so does the earliest deadline in the batch.
- **Padding** (`CostModel.padded_size`): a batch is padded up to an allowed batch size only if
  that size was measured faster than the batch's own size (measured, or estimated by the
  fit when never run): a new shape can cost more than its rows on first runs.

Pure arithmetic on times handed in (monotonic seconds; the process's CPU seconds through a
callable the scheduler passes): no clock of its own, no lock, no thread. The scheduler
calls it under its own lock.
"""

from __future__ import annotations

import logging
import math
from typing import Callable, Sequence

__all__ = ["CostModel", "AdaptivePolicy", "warm_batch_sizes"]

log = logging.getLogger("pyserving.batching")

# Weight of the newest batch in the fit, and of the newest arrival in the gap estimate.
_FIT_DECAY = 0.95
_ARRIVAL_WEIGHT = 0.2
# Samples before the fit (or the arrival estimate) is trusted for a wait; until then, no wait.
_MIN_SAMPLES = 3
# A burst of arrivals is over when no task came for this many typical gaps.
_SILENCE_GAPS = 2.0
# While saturated, a silence counts only if the process used less than this share of it
# (of one CPU) in CPU time.
_BUSY = 0.5
# Tasks count as arriving in company once, weighted, this many others were queued or running.
_COMPANY = 0.5
# A parameter logged again once it moved by this factor from the last logged value.
_LOG_FACTOR = 2.0
_LOG_AFTER_SAMPLES = 32


class CostModel:
    """``seconds = a + b * rows``, fitted online; plus the measured time per exact size."""

    __slots__ = ("_s0", "_sx", "_sy", "_sxx", "_sxy", "samples", "a", "b", "_by_size")

    def __init__(self) -> None:
        self._s0 = self._sx = self._sy = self._sxx = self._sxy = 0.0
        self.samples = 0
        self.a = 0.0
        self.b = 0.0
        self._by_size: dict[int, float] = {}

    def observe(self, rows: int, seconds: float) -> None:
        """One batch of ``rows`` (padding included) ran in ``seconds``."""
        if rows <= 0 or not math.isfinite(seconds) or seconds < 0:
            return
        d = _FIT_DECAY
        x = float(rows)
        self._s0 = d * self._s0 + 1.0
        self._sx = d * self._sx + x
        self._sy = d * self._sy + seconds
        self._sxx = d * self._sxx + x * x
        self._sxy = d * self._sxy + x * seconds
        self.samples += 1
        mean_x = self._sx / self._s0
        mean_y = self._sy / self._s0
        var_x = self._sxx / self._s0 - mean_x * mean_x
        if var_x > 1e-9 * max(1.0, mean_x * mean_x):
            b = (self._sxy / self._s0 - mean_x * mean_y) / var_x
            b = max(0.0, b)
            a = mean_y - b * mean_x
            if a < 0.0:  # the data say "no fixed cost": keep the line through the mean
                a, b = 0.0, mean_y / mean_x
        else:  # one size seen so far: all of it counts as fixed cost (waiting looks dearest)
            a, b = mean_y, 0.0
        self.a, self.b = a, b
        previous = self._by_size.get(rows)
        # Down at once, up slowly: a size's first runs (kernel setup) and a busy CPU only
        # ever add time, so the lower measurements are the size's own cost.
        if previous is None or seconds < previous:
            self._by_size[rows] = seconds
        else:
            self._by_size[rows] = previous + 0.1 * (seconds - previous)

    def estimate(self, rows: int) -> float:
        """Estimated seconds for a batch of ``rows`` (the measured time if this size ran)."""
        measured = self._by_size.get(rows)
        return measured if measured is not None else self.a + self.b * rows

    def padded_size(self, rows: int, allowed: int) -> int:
        """``allowed`` (>= rows) if that size was measured faster than ``rows``, else ``rows``."""
        if allowed <= rows:
            return rows
        padded = self._by_size.get(allowed)
        if padded is not None and padded < self.estimate(rows):
            return allowed
        return rows


class AdaptivePolicy:
    """One queue's adaptive state: the cost model, the arrival estimate, what was chosen.

    ``timeout`` and ``max_latency`` are seconds (0: no bound from that side). Not
    thread-safe: the scheduler calls it under its lock.
    """

    __slots__ = ("cost", "timeout", "max_latency", "_last_arrival", "_gap", "_rows", "_arrivals",
                 "chosen_wait", "_logged", "name", "saturated", "_company", "_last_free",
                 "_cpu_at_arrival", "_cpu_at_free")

    def __init__(self, timeout: float, max_latency: float = 0.0, name: str = "") -> None:
        self.cost = CostModel()
        self.timeout = timeout
        self.max_latency = max_latency
        self.name = name
        self._last_arrival: float | None = None
        self._last_free = -math.inf  # when the last batch finished
        self._cpu_at_arrival = math.nan  # the process's CPU seconds at the last arrival
        self._cpu_at_free = math.nan  # ... and when the last batch finished
        self._gap = math.inf
        self._rows = 1.0
        self._arrivals = 0
        self.chosen_wait = 0.0  # the wait planned for the last batch taken (seconds)
        self._company = 0.0  # other tasks queued or running at an arrival (weighted)
        # Set by the scheduler: the process used (nearly) all the CPU it may run on lately.
        # Tasks then come as fast as the front end can make them, not as clients send
        # them: a slow gap says nothing about the clients, and a batch started early
        # takes the CPU from the front end, so bursts are waited for however slow.
        self.saturated = False
        self._logged: tuple[float, float] | None = None

    @property
    def gap(self) -> float:
        """The estimated seconds between two tasks (inf until two arrived)."""
        return self._gap

    def arrived(self, now: float, rows: int, others: int = 0, cpu: float = math.nan) -> None:
        """A task of ``rows`` rows was queued at ``now``, finding ``others`` tasks queued or
        running, when the process had used ``cpu`` seconds of CPU (NaN: not read)."""
        self._company += _ARRIVAL_WEIGHT * (others - self._company)
        last = self._last_arrival
        self._last_arrival = now
        self._cpu_at_arrival = cpu
        self._rows += _ARRIVAL_WEIGHT * (rows - self._rows)
        if last is None:
            return
        gap = max(0.0, now - last)
        self._arrivals += 1
        if not math.isfinite(self._gap) or gap > self._gap:
            # A gap longer than the estimate counts in full: after idleness, no wait.
            self._gap = gap
        else:
            self._gap += _ARRIVAL_WEIGHT * (gap - self._gap)

    def wait_seconds(self) -> float:
        """How long after the last arrival a free model waits for more tasks (0: none)."""
        if self.timeout <= 0.0 or self._arrivals < _MIN_SAMPLES or self.cost.samples < _MIN_SAMPLES:
            return 0.0
        gap = self._gap
        # While saturated, bursts are waited for only if tasks come in company: one client
        # at a time (a sequential client on a busy CPU) never sends another request while
        # its last is queued, so waiting for one would be lost time.
        busy = self.saturated and self._company >= _COMPANY
        if gap >= self.cost.a and not busy:
            return 0.0
        return _SILENCE_GAPS * gap

    def run_at(self, start: float, rows: int, deadline: float | None, now: float = 0.0,
               cpu: Callable[[], float] | None = None) -> float:
        """When an open batch that started at ``start`` (its oldest task's arrival) should run
        if the model is free, asked at ``now``: 0.0 for now, else a monotonic time. ``cpu``
        reads the process's CPU seconds (called only while saturated)."""
        wait = self.wait_seconds()
        last = self._last_arrival
        if wait <= 0.0 or last is None:
            return 0.0
        at = last + wait
        if self.saturated:
            # The silence starts at the last arrival or the last batch's end, whichever
            # came later, and so does the CPU it is judged by (a batch's own run is work).
            if self._last_free > last:
                quiet_from, quiet_cpu = self._last_free, self._cpu_at_free
            else:
                quiet_from, quiet_cpu = last, self._cpu_at_arrival
            at = quiet_from + wait
            if cpu is not None and now >= at and cpu() - quiet_cpu > _BUSY * (now - quiet_from):
                at = now + wait  # the process is still working: look again later
        at = min(at, start + self.timeout)
        run = self.cost.estimate(rows + max(1, round(self._rows)))
        if self.max_latency > 0.0:
            at = min(at, start + self.max_latency - run)
        if deadline is not None:
            at = min(at, deadline - run)
        return at if at > start else 0.0

    def batch_taken(self, start: float, taken_at: float) -> None:
        """A batch whose oldest task arrived at ``start`` was taken at ``taken_at``."""
        self.chosen_wait = max(0.0, taken_at - start)

    def batch_ran(self, rows: int, seconds: float, finished_at: float = -math.inf,
                  cpu: float = math.nan) -> None:
        """A batch of ``rows`` rows (padding included) ran in ``seconds``, ending at
        ``finished_at``, when the process had used ``cpu`` seconds of CPU (NaN: not read)."""
        self._last_free = finished_at
        self._cpu_at_free = cpu
        cost = self.cost
        cost.observe(rows, seconds)
        if cost.samples < _LOG_AFTER_SAMPLES:  # the warmed sizes and first batches settle it
            return
        logged = self._logged
        if logged is None or _moved(logged[0], cost.a) or _moved(logged[1], cost.b):
            self._logged = (cost.a, cost.b)
            log.info("Adaptive batching %s: batch cost now %.0f us + %.1f us/row, task gap %.0f us",
                     self.name, cost.a * 1e6, cost.b * 1e6,
                     self._gap * 1e6 if math.isfinite(self._gap) else -1)


def _moved(old: float, new: float) -> bool:
    # Tiny values (a few microseconds) move by large factors on noise alone.
    floor = 20e-6
    lo, hi = sorted((max(old, floor), max(new, floor)))
    return hi > _LOG_FACTOR * lo


def warm_batch_sizes(allowed: Sequence[int], largest: int) -> list[int]:
    """The batch sizes adaptive batching runs most: the allowed sizes if any, else the
    powers of two up to ``largest`` and ``largest`` itself."""
    if allowed:
        return [s for s in allowed if s <= largest]
    sizes = []
    size = 1
    while size < largest:
        sizes.append(size)
        size *= 2
    sizes.append(largest)
    return sizes
