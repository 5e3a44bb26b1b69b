"""The shared batch scheduler: one pool of batch threads serving many bounded queues.

Modelled on TF's ``SharedBatchScheduler`` (what TF Serving builds once per server):

- `BatchScheduler` owns ``num_batch_threads`` threads. Each queue (`add_queue`; pyserving
  makes one per model version x signature x output set) has its own `BatchingOptions`.
  Threads take batches round-robin across queues, so a busy queue cannot starve another;
  a batch only ever holds tasks of one queue.
- A queue is a FIFO of batches; the last one is "open". A task joins the open batch if it
  fits (``execution_batch_size``) and has the open batch's ``merge_key`` (tasks whose
  arrays cannot be concatenated never share a batch), else it starts a new batch.
  With ``enable_large_batch_splitting`` a task larger than the open batch's free room is
  split (`BatchTask.split`): the first piece fills the open batch, the rest go to new
  batches of ``max_execution_batch_size``.
- The open batch becomes runnable when it is full, when its oldest task has waited
  ``batch_timeout_micros``, or when its queue is closing; older batches are runnable at
  once. With a 0 timeout a free thread takes whatever is queued: batches grow only while
  every thread is busy, which is what adapts batch sizes to the load.
- In adaptive mode (``BatchingOptions.mode``) a queue runs one batch at a time (the model
  is free when its previous batch finished), and its front batch runs as soon as the model
  is free unless `AdaptivePolicy` says waiting for more rows pays (never past
  ``batch_timeout_micros``). A task scheduled with ``hold`` keeps the open batch back
  until `BatchQueue.release` finds it due (called when an event loop's turns went quiet,
  and again at the time the policy named) or until its bound; a released batch stays due,
  and later tasks join it. Padding up to an allowed batch size happens only when the
  policy's cost model measured the padded size as cheaper.
- Wake-ups: a waiting batch thread is woken only for a batch due before it would wake by
  itself. On one core every wake-up of a thread that finds nothing to do costs the event
  loop a GIL hand-off, and a waiting batch's time moves at each arrival.
- Admission (`BatchQueue.schedule`, never blocks): a task larger than ``max_batch_size``
  is INVALID_ARGUMENT ``Task size N is larger than maximum input batch size M``; a queue
  holding ``max_enqueued_batches`` batches answers UNAVAILABLE ``The batch scheduling
  queue to which this task was submitted is full ...`` at once (TF's messages and rules).
- Deadlines (monotonic seconds): when a thread takes a batch, tasks whose deadline has
  passed are failed with DEADLINE_EXCEEDED and never run, as are tasks their waiter
  cancelled (`BatchQueue.cancel`). Waiters enforce their own deadline too, so nobody waits
  past it even while every thread is busy.

Threads: ``num_batch_threads`` are started unless the scheduler is built with
``start_threads=False``; then `BatchScheduler.run_once` runs what is due on the calling
thread (a steppable scheduler, for tests with a fake clock).

Thread-safety: every method may be called from any thread. One lock guards all queue
state (the attributes listed on `BatchQueue`); batches are processed outside it.
``process`` callbacks run on batch threads, one batch at a time per thread, and may block
(they run the model); observers run on the calling or batch thread and must be quick.

Observer hook (metrics): `BatchObserver.on_enqueue(model_name, queue_name, task_size,
queue_depth)` after a task is admitted (TF's ``input_batch_size``, ``wrapped_run_count``),
`BatchObserver.on_batch(stats)` after each batch was processed (`BatchStats`: queuing
latency per task, batch and padded sizes, run time, queue depth). Register observers with
the constructor or `BatchScheduler.add_observer`.
"""

from __future__ import annotations

import collections
import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

from pyserving.batching.adaptive import AdaptivePolicy
from pyserving.batching.options import BatchingOptions, schedulable_cpus
from pyserving.errors import Code, ServingError

__all__ = [
    "BatchTask",
    "BatchStats",
    "BatchObserver",
    "BatchQueue",
    "BatchScheduler",
    "QUEUED",
    "RUNNING",
    "CANCELLED",
    "DONE",
    "QUEUE_TIMEOUT_MESSAGE",
]

log = logging.getLogger("pyserving.batching")

QUEUED, RUNNING, CANCELLED, DONE = range(4)
# Adaptive mode: the process's CPU use is measured over windows of this length, and a
# share of the CPUs it may run on this high counts as saturated.
_CPU_WINDOW_SECONDS = 0.1
_SATURATED = 0.75
QUEUE_TIMEOUT_MESSAGE = "Run() timeout exceeded while waiting in batching queue"


class BatchTask:
    """One unit of work in a queue; subclasses say how to split and fail it.

    The creator sets ``size`` (rows), ``merge_key`` (tasks share a batch only if their keys
    are equal; None: never shares) and ``deadline`` (monotonic seconds, None: none). The
    queue sets ``enqueued_at`` and ``state`` (QUEUED -> RUNNING -> DONE, or CANCELLED /
    DONE while queued), under the scheduler's lock.
    """

    __slots__ = ("size", "merge_key", "deadline", "enqueued_at", "state")

    def __init__(self, size: int, merge_key: object, deadline: float | None) -> None:
        self.size = size
        self.merge_key = merge_key
        self.deadline = deadline
        self.enqueued_at = 0.0
        self.state = QUEUED

    def split(self, sizes: Sequence[int]) -> list["BatchTask"]:
        """Pieces of ``sizes`` rows (in order, summing to ``size``) that complete this task
        together. Called under the scheduler's lock: must not block or call back."""
        raise NotImplementedError

    def fail(self, error: ServingError) -> None:
        """Complete the task with ``error``; a no-op if it is already complete."""
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class BatchStats:
    """One processed batch, for metrics (`BatchObserver.on_batch`)."""

    thread_pool_name: str
    model_name: str
    queue_name: str
    num_tasks: int
    batch_size: int  # rows of the tasks
    padded_size: int  # rows run (with padding up to an allowed batch size)
    queuing_micros: tuple[float, ...]  # per task: enqueue -> taken by a batch thread
    run_seconds: float  # the process callback's duration
    queue_depth: int  # tasks still queued when the batch was taken
    # Adaptive mode only: the cost model after this batch, and how long the batch's oldest
    # task waited before it was taken.
    adaptive: bool = False
    cost_a_seconds: float = 0.0
    cost_b_seconds: float = 0.0
    chosen_wait_seconds: float = 0.0


class BatchObserver(Protocol):
    """Metrics hook. Both methods may be called concurrently from many threads; they must
    be fast and must not raise (an exception is logged and otherwise ignored)."""

    def on_enqueue(self, model_name: str, queue_name: str, task_size: int, queue_depth: int) -> None: ...

    def on_batch(self, stats: BatchStats) -> None: ...


ProcessBatch = Callable[[list[BatchTask], int], None]
"""``process(tasks, padded_size)``: run one batch and complete (or fail) every task."""


class _Batch:
    __slots__ = ("tasks", "size", "start", "merge_key", "deadline", "padded")

    def __init__(self) -> None:
        self.tasks: list[BatchTask] = []
        self.size = 0
        self.start = 0.0
        self.merge_key: object = None
        self.deadline: float | None = None  # the earliest of its tasks'
        self.padded = 0  # rows it runs with, set when taken

    def add(self, task: BatchTask, now: float) -> None:
        if not self.tasks:
            self.start = now
            self.merge_key = task.merge_key
        self.tasks.append(task)
        self.size += task.size
        if task.deadline is not None and (self.deadline is None or task.deadline < self.deadline):
            self.deadline = task.deadline

    def accepts(self, task: BatchTask, limit: int) -> bool:
        if not self.tasks:
            return True
        return (
            task.merge_key is not None
            and task.merge_key == self.merge_key
            and self.size + task.size <= limit
        )


class BatchQueue:
    """One queue of the shared scheduler (handed out by `BatchScheduler.add_queue`).

    Guarded by the scheduler's lock: ``_batches`` (FIFO, last = open batch), ``_closed``,
    ``_in_flight`` (batches being processed), ``_depth`` (tasks queued).
    """

    def __init__(self, scheduler: "BatchScheduler", name: str, options: BatchingOptions,
                 process: ProcessBatch, model_name: str = "") -> None:
        self.name = name
        self.model_name = model_name
        self.options = options
        self._scheduler = scheduler
        self._process = process
        self._exec_size = options.execution_batch_size
        self._max_batches = options.effective_max_enqueued_batches
        self._timeout = options.batch_timeout_micros / 1e6
        self._batches: collections.deque[_Batch] = collections.deque([_Batch()])
        self._closed = False
        self._in_flight = 0
        self._depth = 0
        self._policy = (AdaptivePolicy(self._timeout, options.max_latency_ms / 1e3, name)
                        if options.adaptive else None)
        self._held = False  # adaptive: the open batch waits for `release`
        self._due = False  # adaptive: `release` found the front batch due: it runs next
        self._running = 0  # tasks in the batches being processed
        self.arrivals = 0  # tasks ever scheduled (read without the lock: a hint)

    # -- admission --------------------------------------------------------------------
    def schedule(self, task: BatchTask, hold: bool = False) -> None:
        """Enqueue ``task`` (never blocks). Raises INVALID_ARGUMENT (too large),
        UNAVAILABLE (queue full, or closed because the model is being unloaded).

        ``hold`` (adaptive mode): the open batch waits for `release` (or its bound) before
        it runs, so that an event loop can queue every request it has at hand first."""
        opts = self.options
        if task.size > opts.max_batch_size:
            raise ServingError(
                Code.INVALID_ARGUMENT,
                f"Task size {task.size} is larger than maximum input batch size "
                f"{opts.max_batch_size}",
            )
        sched = self._scheduler
        with sched._lock:
            if self._closed:
                raise ServingError(
                    Code.UNAVAILABLE,
                    f"The batch scheduling queue {self.name} is closed (the servable is "
                    "being unloaded)",
                )
            now = sched._clock()
            batches = self._batches
            open_batch = batches[-1]
            fits = open_batch.accepts(task, self._exec_size)
            if opts.enable_large_batch_splitting:
                if not open_batch.tasks:
                    room = self._exec_size
                elif task.merge_key is not None and task.merge_key == open_batch.merge_key:
                    room = self._exec_size - open_batch.size
                else:
                    room = 0  # cannot share the open batch: only new batches count
                capacity = (self._max_batches - len(batches)) * self._exec_size + room
                if task.size > capacity:
                    raise ServingError(
                        Code.UNAVAILABLE,
                        "The batch scheduling queue to which this task was submitted is full; "
                        f"task size is {task.size} but scheduling capacity is only {capacity} "
                        f"(num_enqueued_batches={len(batches)}, max_enqueued_batches="
                        f"{self._max_batches}, open_batch_size={open_batch.size}, "
                        f"max_execution_batch_size={self._exec_size})",
                    )
                pieces = self._pieces(task, room)
            else:
                if not fits and len(batches) >= self._max_batches:
                    raise ServingError(
                        Code.UNAVAILABLE,
                        "The batch scheduling queue to which this task was submitted is full; "
                        f"currently {len(batches)} batches enqueued and max_enqueued_batches "
                        f"is {self._max_batches}",
                    )
                pieces = [task]
            started = False
            for piece in pieces:
                open_batch = batches[-1]
                if not open_batch.accepts(piece, self._exec_size):
                    open_batch = _Batch()
                    batches.append(open_batch)
                started |= not open_batch.tasks
                piece.enqueued_at = now
                piece.state = QUEUED
                open_batch.add(piece, now)
            self._depth += len(pieces)
            self.arrivals += 1
            depth = self._depth
            policy = self._policy
            if policy is not None:
                others = depth - len(pieces) + self._running
                policy.arrived(now, task.size, others,
                               sched._cpu_clock() if sched._saturated else math.nan)
                # A released batch stays due: holding it again for each later arrival
                # would wake the batch thread for nothing, again and again. A task that
                # finds the model idle and no burst to wait for is not held either: it
                # runs at once, without the loop turns a hold lasts.
                if hold and not self._due and (others or policy.wait_seconds() > 0):
                    self._held = True
                sched._wake_for_locked(self._runnable_at_locked())
            # Wake a waiting thread if a batch became runnable, or if a new open batch has a
            # timer to wait for. Busy threads look for work when they finish anyway.
            elif sched._sleepers and (started or self._runnable_at_locked() == 0.0
                                     or not self._timeout):
                sched._work.notify()
        sched._observe_enqueue(self.model_name, self.name, task.size, depth)

    def _pieces(self, task: BatchTask, room: int) -> list[BatchTask]:
        if task.size <= room or task.size == 0:
            return [task]
        sizes: list[int] = []
        if room > 0:
            sizes.append(room)
        left = task.size - room
        while left > 0:
            sizes.append(min(left, self._exec_size))
            left -= sizes[-1]
        return task.split(sizes) if len(sizes) > 1 else [task]

    def release(self, due_by: float = 0.0) -> float | None:
        """End a `schedule(..., hold=True)` once the policy would run the open batch now.

        Returns None when nothing is held (any more), or the monotonic time at which the
        policy would run the batch: it stays held until a call at (or after) that time.
        The caller keeps that timer (an event loop's, which is awake anyway) so that the
        batch thread, which would otherwise wake at every arrival that moves the time,
        sleeps until the batch is due or reaches its bound. A time up to ``due_by`` counts
        as now (a timer armed for the time returned before may fire a little early)."""
        sched = self._scheduler
        with sched._lock:
            if not self._held:
                return None
            batch = self._batches[0]
            if batch.tasks and self._policy is not None:
                now = max(sched._clock(), due_by)
                at = self._policy.run_at(batch.start, batch.size, batch.deadline, now, sched._cpu_clock)
                if at > now:
                    return at
            self._held = False
            self._due = True
            sched._wake_for_locked(self._runnable_at_locked())
            return None

    def cancel(self, tasks: Sequence[BatchTask]) -> bool:
        """Withdraw queued ``tasks`` (their waiter gave up): they will not run. True if
        none of them had been taken by a batch thread yet."""
        untouched = True
        with self._scheduler._lock:
            for task in tasks:
                if task.state == QUEUED:
                    task.state = CANCELLED
                elif task.state == RUNNING:
                    untouched = False
        return untouched

    @property
    def held(self) -> bool:
        """The open batch waits for `release` (read without the lock: a hint)."""
        return self._held

    @property
    def depth(self) -> int:
        """Tasks waiting in this queue (including withdrawn ones not yet dropped)."""
        return self._depth

    def close(self, timeout: float | None = None) -> bool:
        """Accept no more tasks, let the queued ones run, then leave the scheduler.

        Blocks until the queue is empty (True) or ``timeout`` seconds passed (False; the
        queue still leaves once empty). Call from a worker thread, never the event loop.
        """
        sched = self._scheduler
        with sched._lock:
            self._closed = True
            sched._work.notify_all()  # a closing queue's open batch is runnable at once
            drained = sched._drained.wait_for(self._idle_locked, timeout)
            if drained:
                sched._remove_locked(self)
        return drained

    # -- batch threads (lock held) ----------------------------------------------------
    def _idle_locked(self) -> bool:
        return self._depth == 0 and self._in_flight == 0

    def _runnable_at_locked(self) -> float | None:
        """When the front batch may run (None: nothing queued, or in adaptive mode a batch
        of this queue still running)."""
        batches = self._batches
        policy = self._policy
        if policy is not None and self._in_flight:
            return None
        if len(batches) >= 2:
            return 0.0
        open_batch = batches[0]
        if not open_batch.tasks:
            return None
        if self._closed or open_batch.size >= self._exec_size:
            return 0.0
        if policy is not None:
            if self._due:
                return 0.0
            if self._held:
                bound = open_batch.start + self._timeout
                return bound if open_batch.deadline is None else min(bound, open_batch.deadline)
            sched = self._scheduler
            return policy.run_at(open_batch.start, open_batch.size, open_batch.deadline,
                                 sched._clock(), sched._cpu_clock)
        return open_batch.start + self._timeout

    def _take_locked(self, now: float, expired: list[BatchTask]) -> _Batch | None:
        at = self._runnable_at_locked()
        if at is None or at > now:
            return None
        batches = self._batches
        batch = batches.popleft()
        self._due = False
        if not batches:
            batches.append(_Batch())
            self._held = False  # what it held has been taken
        self._depth -= len(batch.tasks)
        live = []
        for task in batch.tasks:
            if task.state != QUEUED:
                continue  # withdrawn by its waiter
            if task.deadline is not None and task.deadline <= now:
                task.state = DONE
                expired.append(task)
                continue
            task.state = RUNNING
            live.append(task)
        if not live:
            return None
        batch.tasks = live
        batch.size = sum(t.size for t in live)
        self._in_flight += 1
        self._running += len(live)
        if batch.merge_key is None:  # a request that runs alone, as sent
            batch.padded = batch.size
        elif self._policy is not None:
            self._policy.batch_taken(batch.start, now)
            batch.padded = self._policy.cost.padded_size(batch.size,
                                                         self.options.padded_size(batch.size))
        else:
            batch.padded = self.options.padded_size(batch.size)
        return batch


class BatchScheduler:
    """The server's one batch scheduler; see the module docstring.

    Lifecycle: threads start in the constructor; `stop` closes every queue, lets queued
    work finish and joins the threads.
    """

    def __init__(
        self,
        num_batch_threads: int,
        thread_pool_name: str = "batch_threads",
        observers: Sequence[BatchObserver] = (),
        clock: Callable[[], float] = time.monotonic,
        start_threads: bool = True,
        cpu_clock: Callable[[], float] = time.process_time,
    ) -> None:
        if num_batch_threads < 1:
            raise ServingError(
                Code.INVALID_ARGUMENT, f"num_batch_threads must be positive; was {num_batch_threads}"
            )
        self.thread_pool_name = thread_pool_name
        self.num_batch_threads = num_batch_threads
        self._observers = tuple(observers)
        self._clock = clock
        self._cpu_clock = cpu_clock
        self._cpus = schedulable_cpus()
        # Guarded by _lock: the CPU-use window (wall and process CPU seconds at its start).
        self._window_at = clock()
        self._window_cpu = cpu_clock()
        self._saturated = False
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)  # batch threads wait here
        self._drained = threading.Condition(self._lock)  # closing queues wait here
        # Guarded by _lock: _queues, _next, _stopping, _sleepers (the threads in _work.wait,
        # each with the time it wakes by itself).
        self._queues: list[BatchQueue] = []
        self._next = 0
        self._stopping = False
        self._sleepers: dict[int, float] = {}
        self._threads = [
            threading.Thread(target=self._thread_main, name=f"{thread_pool_name}_{i}", daemon=True)
            for i in range(num_batch_threads if start_threads else 0)
        ]
        for thread in self._threads:
            thread.start()

    def add_queue(self, name: str, options: BatchingOptions, process: ProcessBatch,
                  model_name: str = "") -> BatchQueue:
        """A new queue with its own options; ``process`` runs its batches."""
        queue = BatchQueue(self, name, options, process, model_name)
        with self._lock:
            if self._stopping:
                raise ServingError(Code.UNAVAILABLE, "The batch scheduler is stopped")
            self._queues.append(queue)
        return queue

    def add_observer(self, observer: BatchObserver) -> None:
        """Register a metrics observer (e.g. once the monitoring registry exists)."""
        with self._lock:
            self._observers = (*self._observers, observer)

    def stop(self, timeout: float | None = None) -> None:
        """Close every queue, finish what is queued, join the threads. Idempotent."""
        with self._lock:
            self._stopping = True
            for queue in self._queues:
                queue._closed = True
            self._work.notify_all()
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            thread.join(remaining)

    def run_once(self) -> bool:
        """Fail the expired tasks and run one batch that is due now, on the calling thread
        (for a scheduler built with ``start_threads=False``). False if nothing was due."""
        expired: list[BatchTask] = []
        with self._lock:
            now = self._clock()
            found = self._next_batch_locked(now, expired)
        for task in expired:
            task.fail(ServingError(Code.DEADLINE_EXCEEDED, QUEUE_TIMEOUT_MESSAGE))
        if found is not None:
            self._run(*found, now)
        return found is not None or bool(expired)

    def next_run_at(self) -> float | None:
        """When the next batch is due (a clock time; None: nothing is)."""
        with self._lock:
            return self._wake_at_locked()

    # -- internals ------------------------------------------------------------------------
    def _remove_locked(self, queue: BatchQueue) -> None:
        try:
            index = self._queues.index(queue)
        except ValueError:
            return
        del self._queues[index]
        if index < self._next:
            self._next -= 1
        if self._next >= len(self._queues):
            self._next = 0

    def _next_batch_locked(self, now: float, expired: list[BatchTask]
                           ) -> tuple[BatchQueue, _Batch] | None:
        queues = self._queues
        n = len(queues)
        start = self._next
        for i in range(n):
            index = (start + i) % n
            queue = queues[index]
            batch = queue._take_locked(now, expired)
            if batch is not None:
                self._next = (index + 1) % n
                return queue, batch
            if queue._closed and queue._idle_locked():
                self._drained.notify_all()
        return None

    def _wake_for_locked(self, at: float | None) -> None:
        """Wake a waiting thread for a batch due at ``at`` unless one wakes by then anyway:
        a thread woken for nothing costs the event loop a GIL hand-off (per request, when
        every arrival moves a batch's time)."""
        sleepers = self._sleepers
        if at is not None and sleepers and at < min(sleepers.values()):
            self._work.notify()

    def _wake_at_locked(self) -> float | None:
        times = [t for q in self._queues if (t := q._runnable_at_locked()) is not None]
        return min(times) if times else None

    def _thread_main(self) -> None:
        while True:
            expired: list[BatchTask] = []
            with self._lock:
                while True:
                    now = self._clock()
                    found = self._next_batch_locked(now, expired)
                    if found is not None or expired:
                        break
                    if self._stopping and all(q._idle_locked() for q in self._queues):
                        self._work.notify_all()
                        return
                    wake_at = self._wake_at_locked()
                    me = threading.get_ident()
                    self._sleepers[me] = math.inf if wake_at is None else wake_at
                    try:
                        self._work.wait(None if wake_at is None else max(0.0, wake_at - now))
                    finally:
                        del self._sleepers[me]
            for task in expired:
                task.fail(ServingError(Code.DEADLINE_EXCEEDED, QUEUE_TIMEOUT_MESSAGE))
            if found is not None:
                self._run(*found, now)

    def _run(self, queue: BatchQueue, batch: _Batch, taken_at: float) -> None:
        tasks = batch.tasks
        padded = batch.padded
        clock = self._clock
        started = clock()
        try:
            queue._process(tasks, padded)
        except Exception as exc:  # noqa: BLE001 - a bug in process must not kill the thread
            log.exception("Batch of queue %s failed", queue.name)
            error = exc if isinstance(exc, ServingError) else ServingError(
                Code.INTERNAL, f"{type(exc).__name__}: {exc}")
            for task in tasks:
                task.fail(error)
        run_seconds = clock() - started
        with self._lock:
            for task in tasks:
                task.state = DONE
            queue._in_flight -= 1
            queue._running -= len(tasks)
            depth = queue._depth
            if queue._closed and queue._idle_locked():
                self._drained.notify_all()
            policy = queue._policy
            if policy is not None:
                now = clock()
                if now - self._window_at >= _CPU_WINDOW_SECONDS:
                    cpu = self._cpu_clock()
                    used = (cpu - self._window_cpu) / ((now - self._window_at) * self._cpus)
                    self._saturated = used >= _SATURATED
                    self._window_at, self._window_cpu = now, cpu
                policy.saturated = self._saturated
                if batch.merge_key is not None:
                    policy.batch_ran(padded, run_seconds, now,
                                     self._cpu_clock() if self._saturated else math.nan)
                # This thread may not look at this queue next.
                self._wake_for_locked(queue._runnable_at_locked())
        if self._observers:
            self._observe_batch(BatchStats(
                thread_pool_name=self.thread_pool_name,
                model_name=queue.model_name,
                queue_name=queue.name,
                num_tasks=len(tasks),
                batch_size=batch.size,
                padded_size=padded,
                queuing_micros=tuple((taken_at - t.enqueued_at) * 1e6 for t in tasks),
                run_seconds=run_seconds,
                queue_depth=depth,
                adaptive=policy is not None,
                cost_a_seconds=policy.cost.a if policy is not None else 0.0,
                cost_b_seconds=policy.cost.b if policy is not None else 0.0,
                chosen_wait_seconds=policy.chosen_wait if policy is not None else 0.0,
            ))

    def _observe_enqueue(self, model_name: str, queue_name: str, task_size: int, depth: int) -> None:
        for observer in self._observers:
            try:
                observer.on_enqueue(model_name, queue_name, task_size, depth)
            except Exception:  # noqa: BLE001
                log.exception("Batching observer %r failed", observer)

    def _observe_batch(self, stats: BatchStats) -> None:
        for observer in self._observers:
            try:
                observer.on_batch(stats)
            except Exception:  # noqa: BLE001
                log.exception("Batching observer %r failed", observer)
