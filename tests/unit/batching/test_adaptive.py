"""Adaptive batching's decisions, on a steppable scheduler with a fake clock.

The scheduler is built without threads: `run_once` runs what is due on the test's thread,
and a batch's run time is what its process callback adds to the fake clock. Nothing here
sleeps or waits on a thread.
"""

import random

import pytest

from pyserving.batching.adaptive import AdaptivePolicy, CostModel, warm_batch_sizes
from pyserving.batching.options import BatchingOptions
from pyserving.batching.scheduler import QUEUE_TIMEOUT_MESSAGE, BatchScheduler, BatchTask
from pyserving.errors import Code, ServingError


class Task(BatchTask):
    __slots__ = ("label", "error", "ran")

    def __init__(self, label, size=1, deadline=None):
        super().__init__(size, "k", deadline)
        self.label, self.error, self.ran = label, None, False

    def fail(self, error):
        self.error = error


class Clock:
    def __init__(self, now=100.0):
        self.now = now
        self.cpu = 0.0  # the process's CPU seconds, as the scheduler reads them

    def __call__(self):
        return self.now


class Model:
    """A process callback whose batches take ``a + b * rows`` seconds of the fake clock;
    ``during`` (if set) runs inside the batch, as arrivals while the model is busy."""

    def __init__(self, clock, a=0.002, b=0.0001, cost=None):
        self.clock, self.a, self.b, self.cost = clock, a, b, cost
        self.batches = []
        self.during = None

    def __call__(self, tasks, padded):
        self.batches.append(([t.label for t in tasks], padded))
        during, self.during = self.during, None
        if during is not None:
            during()
        self.clock.now += self.cost(padded) if self.cost else self.a + self.b * padded
        for t in tasks:
            t.ran = True

    def labels(self):
        return [b[0] for b in self.batches]


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def scheduler(clock):
    s = BatchScheduler(1, "p", clock=clock, start_threads=False, cpu_clock=lambda: clock.cpu)
    yield s
    s.stop(1)


def adaptive(**kw):
    kw.setdefault("max_batch_size", 64)
    kw.setdefault("batch_timeout_micros", 10_000)
    return BatchingOptions(mode="adaptive", **kw)


def teach(scheduler, queue, clock, model, batches=5, gap=0.050):
    """Run ``batches`` lone tasks ``gap`` seconds apart (slow arrivals: each runs at once)."""
    for i in range(batches):
        clock.now += gap
        queue.schedule(Task(f"warm{i}"))
        assert scheduler.run_once()
    model.batches.clear()


def fast_arrivals(scheduler, queue, clock, count=25, gap=0.001):
    """``count`` tasks ``gap`` seconds apart queued (not run), then all run: the arrival
    estimate learns the gap."""
    for i in range(count):
        clock.now += gap
        queue.schedule(Task(f"fast{i}"))
    while scheduler.run_once():
        pass


def test_a_request_on_an_idle_model_runs_at_once(scheduler, clock):
    model = Model(clock)
    q = scheduler.add_queue("q", adaptive(batch_timeout_micros=1_000_000), model)
    t = Task("t")
    q.schedule(t)
    assert scheduler.next_run_at() == 0.0
    assert scheduler.run_once() and t.ran


def test_fixed_mode_still_waits_for_the_timeout(scheduler, clock):
    model = Model(clock)
    q = scheduler.add_queue("q", BatchingOptions(max_batch_size=64, batch_timeout_micros=1_000_000), model)
    q.schedule(Task("t"))
    assert scheduler.next_run_at() == pytest.approx(clock.now + 1.0)
    assert not scheduler.run_once()
    clock.now += 1.0
    assert scheduler.run_once() and model.labels() == [["t"]]


def test_requests_arriving_while_a_batch_runs_form_the_next_batch(scheduler, clock):
    model = Model(clock)
    q = scheduler.add_queue("q", adaptive(), model)
    queued = [Task(f"q{i}") for i in range(5)]

    def arrivals():
        for t in queued:
            q.schedule(t)
        assert scheduler.next_run_at() is None  # the model is busy: nothing is due

    model.during = arrivals
    q.schedule(Task("first"))
    assert scheduler.run_once()
    assert scheduler.next_run_at() == 0.0  # free again: everything queued runs now
    assert scheduler.run_once()
    assert model.labels() == [["first"], ["q0", "q1", "q2", "q3", "q4"]]


def test_what_queued_beyond_max_batch_size_runs_in_following_batches(scheduler, clock):
    model = Model(clock)
    q = scheduler.add_queue("q", adaptive(max_batch_size=4), model)
    model.during = lambda: [q.schedule(Task(f"q{i}")) for i in range(6)]
    q.schedule(Task("first"))
    while scheduler.run_once():
        pass
    assert model.labels() == [["first"], ["q0", "q1", "q2", "q3"], ["q4", "q5"]]


def flat_model(clock):
    return Model(clock, a=0.010, b=0.000001)


def fast_arrivals_withdrawn(scheduler, queue, clock, model):
    """The cost model learns ~10 ms a batch (lone tasks 50 ms apart), then 25 tasks arrive
    1 ms apart and are withdrawn by their waiters before they run: the model is free, the
    queue empty, and the next task is expected ~1 ms after the last."""
    teach(scheduler, queue, clock, model)
    gone = []
    for i in range(25):
        clock.now += 0.001
        gone.append(Task(f"gone{i}"))
        queue.schedule(gone[-1])
    queue.cancel(gone)
    scheduler.run_once()  # drops them
    assert model.batches == []


def test_a_burst_of_arrivals_faster_than_the_fixed_cost_runs_as_one_batch(scheduler, clock):
    model = flat_model(clock)
    q = scheduler.add_queue("q", adaptive(batch_timeout_micros=50_000), model)
    fast_arrivals_withdrawn(scheduler, q, clock, model)
    labels = []
    for i in range(6):  # arrivals 1 ms apart, a batch costs 10 ms: they belong together
        clock.now += 0.001
        labels.append(f"t{i}")
        q.schedule(Task(labels[-1]))
        at = scheduler.next_run_at()
        assert clock.now < at < clock.now + 0.003  # twice the typical gap of silence
        assert not scheduler.run_once()
    clock.now = scheduler.next_run_at()  # the burst is over
    assert scheduler.run_once()
    assert model.labels() == [labels]


def test_slow_arrivals_never_wait(scheduler, clock):
    model = flat_model(clock)
    q = scheduler.add_queue("q", adaptive(batch_timeout_micros=50_000), model)
    teach(scheduler, q, clock, model, gap=0.030)  # one task per 30 ms: the cost is 10 ms
    clock.now += 0.030
    q.schedule(Task("t"))
    assert scheduler.next_run_at() == 0.0


@pytest.mark.parametrize("bound", [
    {"batch_timeout_micros": 500},  # from the oldest task's arrival
    {"max_latency_ms": 10.5},  # the oldest task's wait + ~10 ms to run
])
def test_the_timeout_and_max_latency_bound_every_wait(scheduler, clock, bound):
    model = flat_model(clock)
    q = scheduler.add_queue("q", adaptive(**{"batch_timeout_micros": 50_000, **bound}), model)
    fast_arrivals_withdrawn(scheduler, q, clock, model)
    clock.now += 0.001
    q.schedule(Task("a"))
    assert clock.now < scheduler.next_run_at() <= clock.now + 0.0005 + 1e-9
    clock.now += 0.0006
    assert scheduler.run_once() and model.labels() == [["a"]]


def test_a_deadline_cuts_the_wait_short_and_expired_tasks_never_run(scheduler, clock):
    model = flat_model(clock)
    q = scheduler.add_queue("q", adaptive(batch_timeout_micros=50_000), model)
    fast_arrivals_withdrawn(scheduler, q, clock, model)
    clock.now += 0.001
    soon = Task("soon", deadline=clock.now + 0.0102)
    q.schedule(soon)
    # deadline - estimated run (~10 ms): the wait ends within 0.2 ms
    assert clock.now < scheduler.next_run_at() <= clock.now + 0.0002 + 1e-9
    clock.now += 1.0  # the thread was late: the task's deadline passed
    assert scheduler.run_once()
    assert not soon.ran and soon.error.code == Code.DEADLINE_EXCEEDED
    assert soon.error.message == QUEUE_TIMEOUT_MESSAGE
    assert model.batches == []


def test_queues_take_turns(scheduler, clock):
    model = Model(clock)
    a = scheduler.add_queue("a", adaptive(max_batch_size=1), model)
    b = scheduler.add_queue("b", adaptive(max_batch_size=1), model)

    def arrivals():
        for label in ("a1", "a2", "a3"):
            a.schedule(Task(label))
        b.schedule(Task("b0"))

    model.during = arrivals
    a.schedule(Task("a0"))
    while scheduler.run_once():
        pass
    assert model.labels() == [["a0"], ["b0"], ["a1"], ["a2"], ["a3"]]


def test_pads_to_an_allowed_size_only_when_it_measured_cheaper(scheduler, clock):
    cheap4 = {1: 0.001, 2: 0.002, 3: 0.003, 4: 0.0015}
    model = Model(clock, cost=lambda rows: cheap4[rows])
    q = scheduler.add_queue("q", adaptive(max_batch_size=4, allowed_batch_sizes=(2, 4)), model)
    q.schedule(Task("three", size=3))  # 3 never ran and 4 never ran: no padding
    q.schedule(Task("four", size=4))  # does not fit: a batch of its own
    while scheduler.run_once():
        pass
    assert model.batches == [(["three"], 3), (["four"], 4)]
    model.batches.clear()
    q.schedule(Task("again", size=3))  # 4 measured 1.5 ms against 3 ms for 3 rows
    assert scheduler.run_once()
    assert model.batches == [(["again"], 4)]


def test_the_cost_model_converges_on_a_synthetic_cost():
    rng = random.Random(7)
    cost = CostModel()
    for _ in range(300):
        rows = rng.randint(1, 64)
        cost.observe(rows, (0.0004 + 0.00005 * rows) * rng.uniform(0.95, 1.05))
    assert cost.a == pytest.approx(0.0004, rel=0.15)
    assert cost.b == pytest.approx(0.00005, rel=0.05)


def test_the_cost_model_follows_a_change_of_cost():
    cost = CostModel()
    for rows in [1, 8, 32, 64] * 20:
        cost.observe(rows, 0.001 + 0.0001 * rows)
    for rows in [1, 8, 32, 64] * 30:
        cost.observe(rows, 0.002 + 0.0002 * rows)
    assert cost.a == pytest.approx(0.002, rel=0.05) and cost.b == pytest.approx(0.0002, rel=0.05)


def test_a_long_idle_gap_resets_the_arrival_estimate():
    policy = AdaptivePolicy(timeout=0.05)
    for rows, seconds in [(1, 0.01), (2, 0.011), (4, 0.013)]:
        policy.batch_ran(rows, seconds)
    now = 0.0
    for _ in range(10):
        now += 0.0005
        policy.arrived(now, 1)
    assert policy.wait_seconds() > 0
    policy.arrived(now + 5.0, 1)  # five seconds of silence
    assert policy.wait_seconds() == 0.0


def test_warm_sizes_are_the_allowed_ones_or_powers_of_two():
    assert warm_batch_sizes((2, 4, 8), 8) == [2, 4, 8]
    assert warm_batch_sizes((), 64) == [1, 2, 4, 8, 16, 32, 64]
    assert warm_batch_sizes((), 100) == [1, 2, 4, 8, 16, 32, 64, 100]


def test_an_unknown_mode_is_invalid_argument():
    with pytest.raises(ServingError) as err:
        BatchingOptions(mode="fast").validate()
    assert err.value.code == Code.INVALID_ARGUMENT and "batching_mode" in err.value.message


def test_a_held_batch_waits_for_release_or_its_bound(scheduler, clock):
    model = Model(clock)
    q = scheduler.add_queue("q", adaptive(batch_timeout_micros=5_000), model)
    q.schedule(Task("a"), hold=True)
    assert not q.held  # an idle model, no burst to wait for: nothing to hold it for
    q.schedule(Task("b"), hold=True)  # but the event loop has more requests at hand
    assert q.held and scheduler.next_run_at() == pytest.approx(clock.now + 0.005)
    assert not scheduler.run_once()
    q.release()  # the loop's turn ended
    assert scheduler.next_run_at() == 0.0
    assert scheduler.run_once() and model.labels() == [["a", "b"]]
    q.schedule(Task("c"), hold=True)  # never released: the timeout still bounds it
    clock.now += 0.005
    assert scheduler.run_once() and model.labels()[-1] == ["c"]
    q.schedule(Task("d"))  # a blocking caller's task: nothing holds it
    assert scheduler.run_once() and model.labels()[-1] == ["d"]


def saturate(scheduler, queue, clock, model, per_batch=3):
    """Bursts of ``per_batch`` tasks 30 ms apart while the process uses all its CPUs (0.1 s
    of CPU per ~40 ms, on up to 2 CPUs)."""
    teach(scheduler, queue, clock, model, gap=0.030)
    for _ in range(5):
        clock.now += 0.030
        clock.cpu += 0.100
        for _ in range(per_batch):
            queue.schedule(Task("busy"))
        while (at := scheduler.next_run_at()) is not None:
            clock.now = max(clock.now, at)
            scheduler.run_once()


def saturated_queue(scheduler, clock, per_batch=3, **options):
    """A queue of a ~10 ms model after `saturate`, 30 ms after its last burst."""
    model = flat_model(clock)
    q = scheduler.add_queue("q", adaptive(**options), model)
    saturate(scheduler, q, clock, model, per_batch)
    clock.now += 0.030
    return model, q


def test_slow_arrivals_are_batched_while_the_cpu_is_saturated(scheduler, clock):
    # Tasks 30 ms apart, a batch costs 10 ms: alone they would run at once; but if the
    # process used all its CPU meanwhile, the front end (not the clients) sets the pace.
    _, q = saturated_queue(scheduler, clock, batch_timeout_micros=100_000)
    q.schedule(Task("t"))
    assert scheduler.next_run_at() > clock.now


def test_while_saturated_a_silence_while_a_batch_runs_does_not_end_a_burst():
    # The front end barely gets the CPU while the model runs: nothing arrives then.
    policy = AdaptivePolicy(timeout=1.0)
    for rows in (1, 2, 4):
        policy.batch_ran(rows, 0.010)  # ~10 ms a batch
    now = 0.0
    for i in range(10):  # tasks 1 ms apart, in company
        now += 0.001
        policy.arrived(now, 1, others=i, cpu=1.0)
    policy.saturated = True
    wait = policy.wait_seconds()
    assert 0 < wait < 0.005
    # ran 10 ms after the last arrival, all of it on the CPU
    policy.batch_ran(4, 0.010, finished_at=now + 0.010, cpu=1.010)
    ended = now + 0.010
    assert policy.run_at(now, 1, None, ended) == pytest.approx(ended + wait)
    # a quiet silence after the batch ends it: the batch's own CPU is not the front end's
    assert policy.run_at(now, 1, None, ended + wait, cpu=lambda: 1.010) <= ended + wait  # due
    policy.saturated = False  # with a core of its own, the front end kept reading: it is over
    assert policy.run_at(now, 1, None, ended) == pytest.approx(now + wait)


def test_while_saturated_a_silence_while_the_process_kept_working_does_not_end_a_burst(scheduler, clock):
    # Other requests' answers, or a front end handing over one request per turn: the
    # burst is over when the process went quiet, not merely this queue.
    model, q = saturated_queue(scheduler, clock, batch_timeout_micros=1_000_000)
    q.schedule(Task("a"))
    q.schedule(Task("b"))
    at = scheduler.next_run_at()
    assert at > clock.now
    clock.cpu += 0.9 * (at - clock.now)  # busy all along
    clock.now = at
    later = scheduler.next_run_at()
    assert later > clock.now and not scheduler.run_once()  # looks again later
    clock.now = later  # quiet this time
    assert scheduler.next_run_at() <= clock.now
    assert scheduler.run_once() and model.labels()[-1] == ["a", "b"]


def test_while_saturated_requests_that_never_pause_run_at_the_timeout(scheduler, clock):
    _, q = saturated_queue(scheduler, clock, batch_timeout_micros=20_000, max_batch_size=512)
    start = clock.now
    while True:  # tasks 0.3 ms apart, the process busy all the time
        q.schedule(Task("t"))
        if scheduler.next_run_at() <= clock.now:
            break
        clock.now += 0.0003
        clock.cpu += 0.0003
    assert clock.now - start == pytest.approx(0.020, abs=0.0004)  # the bound, as fixed mode


def test_a_lone_client_on_a_saturated_cpu_never_waits(scheduler, clock):
    # Its next request only comes once this one is answered: waiting would be lost time.
    _, q = saturated_queue(scheduler, clock, per_batch=1, batch_timeout_micros=100_000)
    q.schedule(Task("t"))
    assert scheduler.next_run_at() == 0.0


def test_release_names_when_a_waiting_batch_is_due_and_a_released_batch_stays_due(scheduler, clock):
    model = flat_model(clock)
    q = scheduler.add_queue("q", adaptive(batch_timeout_micros=50_000), model)
    fast_arrivals_withdrawn(scheduler, q, clock, model)  # tasks 1 ms apart, 10 ms a batch
    clock.now += 0.001
    q.schedule(Task("a"), hold=True)
    at = q.release()  # the loop went quiet, but the policy waits for the rest of the burst
    assert clock.now < at <= clock.now + 0.003
    assert scheduler.next_run_at() > at  # held: the batch thread sleeps to its bound
    clock.now = at - 0.0005  # a timer that fires a little early
    assert q.release(due_by=at) is None
    assert scheduler.next_run_at() == 0.0
    q.schedule(Task("b"), hold=True)  # joins the due batch without holding it back
    assert q.release() is None and scheduler.next_run_at() == 0.0
    assert scheduler.run_once() and model.labels() == [["a", "b"]]


class CountingCondition:
    def __init__(self, condition):
        self.condition, self.notified = condition, 0

    def notify(self, n=1):
        self.notified += 1

    def __getattr__(self, name):
        return getattr(self.condition, name)


def test_arrivals_wake_a_sleeping_batch_thread_only_for_an_earlier_batch(scheduler, clock):
    model = flat_model(clock)
    q = scheduler.add_queue("q", adaptive(batch_timeout_micros=50_000), model)
    fast_arrivals_withdrawn(scheduler, q, clock, model)
    scheduler._work = counting = CountingCondition(scheduler._work)
    clock.now += 0.001
    q.schedule(Task("first"), hold=True)
    assert counting.notified == 0  # no thread waits (a steppable scheduler)
    scheduler._sleepers[1] = scheduler.next_run_at()  # a thread sleeping until the bound
    for i in range(10):  # every arrival moves the time the batch would run
        clock.now += 0.001
        q.schedule(Task(f"t{i}"), hold=True)
        assert q.release() is not None
    assert counting.notified == 0
    clock.now += 0.010
    assert q.release() is None  # due now, before the thread would wake
    assert counting.notified == 1
