"""`BatchingServable`: a `Servable` whose runs go through the shared batch scheduler.

An explicit wrapper (no monkey-patching): it implements the `Servable` protocol by
delegating ``signatures`` and ``signature_def_map`` to the wrapped servable and turning
each ``run`` into a task of the queue for (signature, output set); the batch thread merges
the tasks' inputs, runs the wrapped servable once, and hands every caller exactly its own
rows (see `batch` for the rules). `BatchingLoader` wraps a platform `Loader` so that the
version it loads is served through a `BatchingServable`, and closes its queues on unload.

Which requests share a batch: same queue, and the same non-batch dimensions for every
input (different ones are never merged, unless ``pad_variable_length_inputs``; TF Serving
instead fails the whole batch). A request that does not match its signature (other input
names, another dtype, a known dimension that differs) runs alone, so its error stays its
own. A request larger than ``max_batch_size`` is INVALID_ARGUMENT unless
``enable_large_batch_splitting``; a full queue is UNAVAILABLE at once.

Two ways to wait, same semantics:
- `run` (the protocol, blocking): for worker threads; waits on an event until done or until
  ``timeout_ms``.
- `run_async` (a coroutine, on the event loop): no thread is held while queued; the batch
  thread resolves the futures of a whole batch with one ``call_soon_threadsafe``.
In adaptive mode (``--batching_mode=adaptive``) `run_async` holds its queue's open batch
until the event loop has gone two turns without queueing another request to it (or the
batch is full, or at its timeout): the requests the loop has at hand join one batch. A
request that finds its model idle, with no burst to wait for, is not held at all. When the
policy then waits for the rest of a burst, one loop timer per servable releases the batch
at the time it names, so that the batch thread sleeps until the batch is due.
Either way a caller never waits past its deadline: a task still queued is withdrawn and
never runs (DEADLINE_EXCEEDED ``Run() timeout exceeded while waiting in batching
queue``); the batch itself runs with the largest remaining timeout of its tasks.

Thread-safety: `run` may be called from any number of threads, `run_async` from event
loops; `close` (called by the loader on unload, after every handle was released) blocks
until the queues drained.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import math
import os
import threading
import time
import weakref
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from pyserving.batching import batch as batch_ops
from pyserving.batching.adaptive import warm_batch_sizes
from pyserving.batching.options import (
    PER_MODEL_FILE_NAME,
    BatchingConfig,
    BatchingOptions,
    read_batching_parameters_file,
)
from pyserving.batching.scheduler import (
    QUEUE_TIMEOUT_MESSAGE,
    BatchQueue,
    BatchScheduler,
    BatchTask,
)
from pyserving.errors import Code, ServingError
from pyserving.platforms.base import MAX_LENIENT_RANK, Loader, Servable, Signature

__all__ = ["BatchingServable", "BatchingLoader", "loader_wrapper"]

log = logging.getLogger("pyserving.batching")

_RUNNING_TIMEOUT_MESSAGE = "Deadline exceeded while the batch holding this request was running"
# How long an unload waits for a version's batches to finish (the requests in them were
# drained already: this is a batch still running past its deadlines).
_CLOSE_WAIT_SECONDS = 60.0


def _deadline_error(started: bool) -> ServingError:
    return ServingError(Code.DEADLINE_EXCEEDED, _RUNNING_TIMEOUT_MESSAGE if started else QUEUE_TIMEOUT_MESSAGE)


class _Request:
    """What one caller waits for: every piece's outputs, or the first error.

    Completed exactly once, from a batch thread (or the loop, for a deadline). Sync callers
    wait on ``event``; async ones own ``future`` on ``loop``.
    """

    __slots__ = ("pieces", "parts", "left", "lock", "outputs", "error", "event", "loop", "future", "__weakref__")

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.pieces: list[_Piece] = []
        self.parts: list[dict[str, np.ndarray] | None] = []
        self.left = 1
        self.lock: threading.Lock | None = None
        self.outputs: dict[str, np.ndarray] | None = None
        self.error: ServingError | None = None
        self.loop = loop
        self.event = threading.Event() if loop is None else None
        self.future: asyncio.Future[dict[str, np.ndarray]] | None = (
            loop.create_future() if loop is not None else None
        )

    def piece_done(self, index: int, outputs: dict[str, np.ndarray] | None,
                   error: ServingError | None) -> bool:
        """Record one piece; True when this completed the request."""
        if self.lock is None:  # a single piece
            if self.left == 0:
                return False
            self.left = 0
            self.outputs, self.error = outputs, error
            return True
        with self.lock:
            if self.left == 0:
                return False
            if error is not None:
                self.left = 0
                self.error = error
                return True
            self.parts[index] = outputs
            self.left -= 1
            if self.left:
                return False
        self.outputs = batch_ops.concat_rows(self.parts)  # type: ignore[arg-type]
        return True

    def signal(self) -> None:
        """Wake a sync waiter (async ones are resolved by `_resolve_all`)."""
        if self.event is not None:
            self.event.set()


def _resolve_all(requests: list[_Request]) -> None:
    """On the loop: resolve the futures of completed requests (one call per batch)."""
    for request in requests:
        future = request.future
        if future is None or future.done():
            continue
        if request.error is not None:
            future.set_exception(request.error)
        else:
            future.set_result(request.outputs)  # type: ignore[arg-type]


# Adaptive mode: loop turns without a new task before a held batch may run. One turn is
# not enough: requests read in a turn get their handler's first step after this check.
_QUIET_TURNS = 2

# The event loop's timers fire to the millisecond (libuv), maybe a little early: a deadline
# this close is due, instead of re-arming the timer for what is left of it.
_TIMER_RESOLUTION = 0.001


class _Deadlines:
    """The deadlines of one event loop's queued `run_async` requests, kept by one timer.

    A timer per request (``loop.call_at`` and its cancel) cost ~3 µs of the loop's time per
    batched request; here a request costs a heap push (~0.4 µs, bench/RESULTS.md). The single
    timer fires at the earliest deadline, fails whatever is due and still waiting, drops
    what has finished and re-arms for the next one. Entries hold their request weakly, so
    a finished request's inputs and outputs are not kept until its deadline."""

    __slots__ = ("loop", "_heap", "_seq", "_timer", "_armed_at", "_compact_at")

    _MIN_COMPACT = 1024

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._heap: list[tuple[float, int, weakref.ref[_Request], BatchQueue]] = []
        self._seq = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._armed_at = math.inf
        self._compact_at = self._MIN_COMPACT

    def add(self, deadline: float, request: _Request, queue: BatchQueue) -> None:
        heap = self._heap
        heapq.heappush(heap, (deadline, next(self._seq), weakref.ref(request), queue))
        if deadline < self._armed_at:
            self._arm(deadline)
        if len(heap) >= self._compact_at:  # long deadlines: drop finished entries now
            heap[:] = [e for e in heap if _waiting(e[2]())]
            heapq.heapify(heap)
            self._compact_at = max(self._MIN_COMPACT, 2 * len(heap))

    def _arm(self, deadline: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._armed_at = deadline
        self._timer = self.loop.call_at(self.loop.time() + (deadline - time.monotonic()), self._fire)

    def _fire(self) -> None:
        self._timer, self._armed_at = None, math.inf
        heap = self._heap
        due = time.monotonic() + _TIMER_RESOLUTION
        while heap:
            deadline, _, ref, queue = heap[0]
            request = ref()
            if not _waiting(request):
                heapq.heappop(heap)
            elif deadline <= due:
                heapq.heappop(heap)
                _expire(queue, request)  # type: ignore[arg-type]
            else:
                self._arm(deadline)
                break


def _waiting(request: _Request | None) -> bool:
    return request is not None and request.future is not None and not request.future.done()


def _expire(queue: BatchQueue, request: _Request) -> None:
    """The request's deadline passed: withdraw it if still queued, fail its future."""
    future = request.future
    if future is not None and not future.done():
        started = not queue.cancel(request.pieces)
        future.set_exception(_deadline_error(started))


class _Piece(BatchTask):
    """A request, or one piece of a split request, as queued."""

    __slots__ = ("request", "index", "inputs")

    def __init__(self, request: _Request, index: int, inputs: dict[str, np.ndarray], size: int,
                 merge_key: object, deadline: float | None) -> None:
        super().__init__(size, merge_key, deadline)
        self.request = request
        self.index = index
        self.inputs = inputs

    def split(self, sizes: Sequence[int]) -> list[BatchTask]:
        request = self.request
        request.lock = threading.Lock()
        request.left = len(sizes)
        request.parts = [None] * len(sizes)
        pieces: list[BatchTask] = []
        start = 0
        for i, size in enumerate(sizes):
            inputs = batch_ops.slice_rows(self.inputs, start, start + size)
            pieces.append(_Piece(request, i, inputs, size, self.merge_key, self.deadline))
            start += size
        request.pieces = pieces  # type: ignore[assignment]
        return pieces

    def fail(self, error: ServingError) -> None:
        if self.request.piece_done(self.index, None, error):
            _deliver([self.request])

    def finish(self, outputs: dict[str, np.ndarray] | None, error: ServingError | None) -> bool:
        return self.request.piece_done(self.index, outputs, error)


def _deliver(requests: list[_Request]) -> None:
    """Hand completed requests to their waiters: events now, futures one call per loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[_Request]] = {}
    for request in requests:
        if request.loop is None:
            request.signal()
        else:
            by_loop.setdefault(request.loop, []).append(request)
    for loop, batch in by_loop.items():
        try:
            loop.call_soon_threadsafe(_resolve_all, batch)
        except RuntimeError:  # loop closed: nobody is waiting any more
            pass


class BatchingServable:
    """A loaded version whose runs are batched; see the module docstring."""

    def __init__(self, wrapped: Any, scheduler: BatchScheduler, options: BatchingOptions,
                 name: str, model_name: str = "") -> None:
        """``name`` names the queues in logs and metrics ("model:version");
        ``model_name`` is passed to the scheduler's observers."""
        options.validate()
        self._wrapped = wrapped
        self._model_name = model_name
        self._scheduler = scheduler
        self._options = options
        self._name = name
        self._lock = threading.Lock()  # guards creation of _queues entries and _closed
        self._queues: dict[tuple[str, frozenset[str] | None], BatchQueue] = {}
        self._closed = False
        self._deadlines: _Deadlines | None = None  # run_async's, on the loop that calls it
        # adaptive: queues run_async holds while the loop has requests at hand, with the
        # arrivals count last seen and the quiet turns since (touched on the loop only)
        self._held: dict[BatchQueue, tuple[int, int]] = {}
        # ... and those whose policy waits for the rest of a burst: when to look again,
        # kept by one loop timer
        self._timed: dict[BatchQueue, float] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf

    # -- Servable protocol ------------------------------------------------------------
    @property
    def signatures(self) -> Mapping[str, Signature]:
        return self._wrapped.signatures

    def signature_def_map(self) -> Any:
        return self._wrapped.signature_def_map()

    @property
    def runtime_name(self) -> str:
        return self._wrapped.runtime_name

    @property
    def model_platform(self) -> str:
        return getattr(self._wrapped, "model_platform", "tensorflow_savedmodel")

    @property
    def wrapped(self) -> Servable:
        """The servable that actually runs the batches."""
        return self._wrapped

    @property
    def options(self) -> BatchingOptions:
        return self._options

    def run(
        self,
        signature: Signature,
        inputs: Mapping[str, np.ndarray],
        output_filter: Sequence[str] = (),
        timeout_ms: int | None = None,
    ) -> dict[str, np.ndarray]:
        """Blocking run through the batch queue (`Servable.run`'s contract)."""
        if timeout_ms is not None and timeout_ms < 0:
            raise ServingError(Code.DEADLINE_EXCEEDED, "Deadline exceeded before running")
        deadline = time.monotonic() + timeout_ms / 1000.0 if timeout_ms else None
        request = _Request()
        queue = self._enqueue(request, signature, inputs, output_filter, deadline)
        assert request.event is not None
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        if not request.event.wait(remaining):
            started = not queue.cancel(request.pieces)
            if not request.event.is_set():
                raise _deadline_error(started)
        if request.error is not None:
            raise request.error
        return request.outputs  # type: ignore[return-value]

    async def run_async(
        self,
        signature: Signature,
        inputs: Mapping[str, np.ndarray],
        output_filter: Sequence[str] = (),
        deadline: float | None = None,
    ) -> dict[str, np.ndarray]:
        """`run` for the event loop: awaits the batch without holding a thread.

        ``deadline`` is a ``time.monotonic()`` time (None: none). Admission errors (full
        queue, too large, bad shapes) raise at once; cancelling the awaiting task withdraws
        the request if it has not started.
        """
        loop = asyncio.get_running_loop()
        if deadline is not None and deadline <= time.monotonic():
            raise ServingError(Code.DEADLINE_EXCEEDED, "Deadline exceeded before running")
        request = _Request(loop)
        hold = self._options.adaptive
        queue = self._enqueue(request, signature, inputs, output_filter, deadline, hold)
        future = request.future
        assert future is not None
        if hold and queue.held:
            if not self._held:
                loop.call_soon(self._end_of_turn, loop)
            self._held.setdefault(queue, (-1, 0))
        if deadline is not None:
            deadlines = self._deadlines
            if deadlines is None or deadlines.loop is not loop:
                deadlines = self._deadlines = _Deadlines(loop)
            deadlines.add(deadline, request, queue)
        try:
            return await future
        except asyncio.CancelledError:
            queue.cancel(request.pieces)
            raise

    def close(self, timeout: float | None = None) -> bool:
        """Close this version's queues and wait until what is queued has run (call from a
        worker thread; the manager unloads only after every handle was released). False if
        `timeout` seconds passed first (a queue still leaves once it is empty)."""
        with self._lock:
            self._closed = True
            queues = list(self._queues.values())
        deadline = None if timeout is None else time.monotonic() + timeout
        drained = True
        for queue in queues:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            drained = queue.close(remaining) and drained
        return drained

    # -- internals ------------------------------------------------------------------------
    def _queue(self, signature: Signature, output_filter: Sequence[str]) -> BatchQueue:
        outputs = frozenset(output_filter) if output_filter else None
        if outputs is not None and len(outputs) != len(output_filter):
            duplicate = next(a for i, a in enumerate(output_filter) if a in output_filter[:i])
            raise ServingError(Code.INVALID_ARGUMENT, f"duplicate output tensor alias: {duplicate}")
        key = (signature.name, outputs)
        queue = self._queues.get(key)
        if queue is not None:
            return queue
        with self._lock:
            if self._closed:
                raise ServingError(Code.UNAVAILABLE, f"Servable {self._name} has been unloaded")
            queue = self._queues.get(key)
            if queue is None:
                name = f"{self._name}:{signature.name}"
                if outputs is not None:
                    name += ":" + ",".join(sorted(outputs))
                filter_ = tuple(a for a in signature.outputs if a in outputs) if outputs else ()
                if outputs is not None and len(filter_) != len(outputs):
                    filter_ = tuple(output_filter)  # unknown aliases: the wrapped run says so
                process = self._processor(signature, filter_)
                queue = self._scheduler.add_queue(name, self._options, process, self._model_name)
                self._queues[key] = queue
        return queue

    def _end_of_turn(self, loop: asyncio.AbstractEventLoop) -> None:
        """Release a held queue once the loop went through `_QUIET_TURNS` turns without
        queueing a task to it: while the loop keeps reading requests for the model, they
        join the batch (on a core the loop shares with the model, running a batch would
        only slow the loop down); once it has none at hand, the batch runs, or, when the
        policy waits for the rest of a burst, it is released by a loop timer then."""
        held = self._held
        for queue, (seen, quiet) in list(held.items()):
            arrivals = queue.arrivals
            if arrivals != seen:
                held[queue] = (arrivals, 0)
            elif quiet + 1 >= _QUIET_TURNS:
                del held[queue]
                self._release(queue, loop)
            else:
                held[queue] = (seen, quiet + 1)
        if held:
            loop.call_soon(self._end_of_turn, loop)

    def _release(self, queue: BatchQueue, loop: asyncio.AbstractEventLoop, due_by: float = 0.0) -> None:
        at = queue.release(due_by)
        if at is None:
            self._timed.pop(queue, None)
        else:
            self._timed[queue] = at
            self._arm(at, loop)

    def _arm(self, at: float, loop: asyncio.AbstractEventLoop) -> None:
        if at < self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = at
            self._timer = loop.call_at(loop.time() + (at - time.monotonic()), self._on_timer, loop)

    def _on_timer(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer, self._timer_at = None, math.inf
        due = time.monotonic() + _TIMER_RESOLUTION
        for queue, at in list(self._timed.items()):
            if at <= due:
                self._release(queue, loop, at)
            else:
                self._arm(at, loop)

    def _enqueue(self, request: _Request, signature: Signature, inputs: Mapping[str, np.ndarray],
                 output_filter: Sequence[str], deadline: float | None, hold: bool = False) -> BatchQueue:
        arrays = {alias: v if type(v) is np.ndarray else np.asarray(v) for alias, v in inputs.items()}
        merge_key: object
        if self._matches(signature, arrays):
            size = batch_ops.batch_size_of(arrays)
            # Same names (checked), in signature order: what must agree to concatenate.
            if self._options.pad_variable_length_inputs:
                merge_key = tuple(arrays[a].ndim for a in signature.inputs)
            else:
                merge_key = tuple(arrays[a].shape[1:] for a in signature.inputs)
        else:
            # Let the wrapped servable judge it, alone (its error stays this request's).
            # With the signature's input names, TF's batching checks still come first.
            names_match = len(arrays) == len(signature.inputs) and all(
                a in signature.inputs for a in arrays)
            size = batch_ops.batch_size_of(arrays) if names_match else 1
            merge_key = None
        queue = self._queue(signature, output_filter)
        piece = _Piece(request, 0, arrays, size, merge_key, deadline)
        request.pieces = [piece]
        queue.schedule(piece, hold)
        return queue

    @staticmethod
    def _matches(signature: Signature, arrays: Mapping[str, np.ndarray]) -> bool:
        """Inputs exactly the signature's, each of its dtype and known non-batch dims."""
        specs = signature.inputs
        if len(arrays) != len(specs):
            return False
        for alias, value in arrays.items():
            spec = specs.get(alias)
            if spec is None or spec.np_dtype is None or value.dtype != spec.np_dtype:
                return False
            shape = spec.shape
            if shape is None or value.ndim == 0:
                continue
            if value.ndim != len(shape):
                if len(shape) > MAX_LENIENT_RANK:
                    return False
                continue
            for want, got in zip(shape[1:], value.shape[1:]):
                if want >= 0 and want != got:
                    return False
        return True

    def _processor(self, signature: Signature, output_filter: tuple[str, ...]
                   ) -> Callable[[list[BatchTask], int], None]:
        wrapped = self._wrapped
        pad_variable = self._options.pad_variable_length_inputs

        def process(tasks: list[BatchTask], padded_size: int) -> None:
            pieces: list[_Piece] = tasks  # type: ignore[assignment]
            now = time.monotonic()
            deadlines = [p.deadline for p in pieces if p.deadline is not None]
            if len(deadlines) < len(pieces):  # one piece without a deadline: the batch has none
                timeout_ms = None
            else:
                timeout_ms = max(1, math.ceil((max(deadlines) - now) * 1000))
            done: list[_Request] = []
            try:
                if pieces[0].merge_key is None:  # a request that runs alone, as sent
                    outputs = wrapped.run(signature, pieces[0].inputs, output_filter, timeout_ms)
                    results = [outputs]
                else:
                    rows = sum(p.size for p in pieces)
                    merged = batch_ops.merge_inputs(
                        [p.inputs for p in pieces], padded_size - rows, pad_variable)
                    outputs = wrapped.run(signature, merged, output_filter, timeout_ms)
                    results = batch_ops.split_outputs(outputs, [p.size for p in pieces], padded_size)
            except ServingError as err:
                for piece in pieces:
                    if piece.finish(None, err):
                        done.append(piece.request)
            else:
                for piece, result in zip(pieces, results):
                    if piece.finish(result, None):
                        done.append(piece.request)
            _deliver(done)

        return process


class BatchingLoader:
    """Wraps a platform `Loader`: the version it loads is served through batching.

    The version's options: ``config.options``, or with per-model parameters the version
    directory's ``batching_params.pbtxt`` (no file: not batched). Invalid options fail the
    load with TF Serving's message, before the model is loaded. Same `Loader` contract as
    the wrapped loader (blocking, never concurrent for one loader).
    """

    def __init__(self, inner: Any, scheduler: BatchScheduler, config: BatchingConfig,
                 export_dir: str, model_name: str, version: int) -> None:
        self._inner = inner
        self._scheduler = scheduler
        self._config = config
        self._export_dir = export_dir
        self._model_name = model_name
        self._name = f"{model_name}:{version}"
        self._servable: Servable | None = None

    @property
    def export_dir(self) -> str:
        return self._export_dir

    def _options(self) -> BatchingOptions | None:
        if not self._config.per_model:
            return self._config.options
        path = os.path.join(self._export_dir, PER_MODEL_FILE_NAME)
        if not os.path.isfile(path):
            return None
        return self._config.with_server_choices(read_batching_parameters_file(path))

    def load(self) -> None:
        if self._servable is not None:
            return
        options = self._options()
        if options is not None:
            options.validate()
        # TF Serving wraps the session for batching before it replays the warmup file, so
        # warmup requests go through the batch queue (and warm what batching runs).
        warm_here = options is not None and hasattr(self._inner, "warmup")
        if warm_here:
            self._inner.defer_warmup = True
        self._inner.load()
        servable = self._inner.servable()
        if options is not None:
            servable = BatchingServable(servable, self._scheduler, options, self._name,
                                        self._model_name)
            log.info(
                "Batching %s: max_batch_size=%d batch_timeout_micros=%d max_enqueued_batches=%d "
                "allowed_batch_sizes=%s pad_variable_length_inputs=%s "
                "enable_large_batch_splitting=%s max_execution_batch_size=%d thread_pool=%s(%d) mode=%s",
                self._name, options.max_batch_size, options.batch_timeout_micros,
                options.max_enqueued_batches, list(options.allowed_batch_sizes),
                options.pad_variable_length_inputs, options.enable_large_batch_splitting,
                options.execution_batch_size, self._scheduler.thread_pool_name,
                self._scheduler.num_batch_threads, options.mode,
            )
            if warm_here:
                try:
                    self._inner.warmup(servable)
                except BaseException:
                    servable.close()
                    self._inner.unload()  # a failed warmup fails the load
                    raise
            if options.adaptive:
                _warm_batch_sizes(servable, options, self._name)
        self._servable = servable

    def unload(self) -> None:
        servable, self._servable = self._servable, None
        if isinstance(servable, BatchingServable) and not servable.close(_CLOSE_WAIT_SECONDS):
            log.warning("Batch queues of %s still busy after %g s; unloading anyway", self._name,
                        _CLOSE_WAIT_SECONDS)
        self._inner.unload()

    def servable(self) -> Servable:
        if self._servable is None:
            raise ServingError(Code.FAILED_PRECONDITION, f"Servable {self._name} is not loaded")
        return self._servable


# Warming the batch sizes stops once it has taken this long (a big model at a large
# max_batch_size): what is left is warmed by the traffic.
_SIZE_WARMUP_SECONDS = 30.0
_SIZE_WARMUP_RUNS = 3  # per size: the first run of a shape sets up kernels


def _warm_batch_sizes(servable: BatchingServable, options: BatchingOptions, name: str) -> None:
    """Run every signature whose inputs can be made up (numeric, known non-batch dims) at
    the batch sizes adaptive batching will use, through the batch queue: the first runs
    of a new size are slow, and the measured times seed the queue's cost model. Zeros
    as inputs; a model that rejects them keeps its load (warmup records are the real
    test), the sizes are just not warmed."""
    sizes = warm_batch_sizes(options.allowed_batch_sizes, options.execution_batch_size)
    stop_at = time.monotonic() + _SIZE_WARMUP_SECONDS
    for signature in servable.signatures.values():
        specs = signature.inputs
        if not specs or any(spec.np_dtype is None or spec.np_dtype.kind not in "biuf"
                            or spec.shape is None or len(spec.shape) == 0
                            or any(d < 0 for d in spec.shape[1:]) for spec in specs.values()):
            continue
        shapes = {alias: tuple(spec.shape or ())[1:] for alias, spec in specs.items()}
        try:
            for size in sizes:
                inputs = {alias: np.zeros((size, *shapes[alias]), spec.np_dtype)
                          for alias, spec in specs.items()}
                for _ in range(_SIZE_WARMUP_RUNS):
                    if time.monotonic() > stop_at:
                        return
                    servable.run(signature, inputs)
        except ServingError as err:
            log.info("Batching %s: batch sizes of signature %s not warmed (%s)", name,
                     signature.name, err.message)


def loader_wrapper(scheduler: BatchScheduler, config: BatchingConfig
                   ) -> Callable[[Any, Any, str], BatchingLoader]:
    """The factory `ServerCore` applies to every new loader: ``(loader, servable_id,
    export_dir) -> BatchingLoader``."""

    def wrap(loader: Loader, servable_id: Any, export_dir: str) -> BatchingLoader:
        return BatchingLoader(loader, scheduler, config, export_dir, servable_id.name,
                              servable_id.version)

    return wrap
