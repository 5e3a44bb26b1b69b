"""BatchingServable over a small numpy servable: every caller gets exactly its own rows.

The wrapped servable can hold its first run on a gate, so later requests queue up and are
merged in a known way; tests wait on events, never on time.
"""

import asyncio
import threading
import time

import numpy as np
import pytest

from pyserving.batching.batching_servable import BatchingLoader, BatchingServable, loader_wrapper
from pyserving.batching.options import BatchingConfig, BatchingOptions
from pyserving.batching.scheduler import QUEUE_TIMEOUT_MESSAGE, BatchScheduler
from pyserving.core.servable_id import ServableId
from pyserving.errors import Code, ServingError
from pyserving.platforms.base import Signature, TensorSpec

F32 = np.dtype(np.float32)


def spec(alias, dtype, shape):
    return TensorSpec(alias, f"{alias}:0", "DT_FLOAT" if dtype == F32 else "DT_INT64", dtype, shape)


SIG = Signature(
    "serving_default", "tensorflow/serving/predict",
    {"x": spec("x", F32, (-1, 2))},
    {"y": spec("y", F32, (-1, 2)), "total": spec("total", F32, (-1,))},
)
SEQ = Signature(
    "seq", "tensorflow/serving/predict",
    {"t": spec("t", np.dtype(np.int64), (-1, -1))},
    {"len": spec("len", np.dtype(np.int64), (-1,))},
)
BROKEN = Signature("broken", "tensorflow/serving/predict", {"x": spec("x", F32, (-1, 2))},
                   {"scalar": spec("scalar", F32, ())})


class Model:
    """y = 2x + 1 and total = sum(x, axis=1): row-wise, so batching must not change a row."""

    signatures = {"serving_default": SIG, "seq": SEQ, "broken": BROKEN}
    runtime_name = "TF1"

    def __init__(self, hold_first=False):
        self.runs = []  # the inputs of every run
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.hold_first = hold_first
        self.lock = threading.Lock()

    def signature_def_map(self):
        return "sigdefs"

    def run(self, signature, inputs, output_filter=(), timeout_ms=None):
        with self.lock:
            self.runs.append({k: np.array(v) for k, v in inputs.items()})
            first = len(self.runs) == 1
        if first and self.hold_first:
            self.entered.set()
            assert self.gate.wait(10)
        if set(inputs) != set(signature.inputs):
            raise ServingError(Code.INVALID_ARGUMENT, "input size does not match signature")
        for alias, value in inputs.items():
            if value.dtype != signature.inputs[alias].np_dtype:
                raise ServingError(Code.INVALID_ARGUMENT, f"input tensor alias: {alias} has the wrong dtype")
        if signature.name == "seq":
            t = inputs["t"]
            return {"len": (t != 0).sum(axis=1).astype(np.int64)}
        x = inputs["x"]
        if signature.name == "broken":
            return {"scalar": np.float32(x.sum())}
        out = {"y": 2 * x + 1, "total": x.sum(axis=1)}
        return {k: out[k] for k in (output_filter or out)}


class Enqueued:
    """Observer counting admitted tasks, so tests can wait until requests are queued."""

    def __init__(self):
        self.count = 0
        self.cond = threading.Condition()

    def on_enqueue(self, model_name, queue_name, task_size, queue_depth):
        with self.cond:
            self.count += 1
            self.cond.notify_all()

    def on_batch(self, stats):
        pass

    def wait(self, n):
        with self.cond:
            assert self.cond.wait_for(lambda: self.count >= n, 10), "requests never reached the queue"


@pytest.fixture
def enqueued():
    return Enqueued()


@pytest.fixture
def scheduler(enqueued):
    s = BatchScheduler(1, "test_pool", observers=[enqueued])
    yield s
    s.stop(10)


def rows(n, start=0):
    return np.arange(start, start + 2 * n, dtype=np.float32).reshape(n, 2)


def run_in_threads(servable, requests, sig=SIG):
    """Run each request on its own thread; returns results (or errors) in request order."""
    results = [None] * len(requests)

    def call(i, inputs):
        try:
            results[i] = servable.run(sig, inputs)
        except ServingError as err:
            results[i] = err

    threads = [threading.Thread(target=call, args=(i, r)) for i, r in enumerate(requests)]
    for t in threads:
        t.start()
    return threads, results


def test_merged_requests_get_exactly_their_own_rows(scheduler, enqueued):
    model = Model(hold_first=True)
    servable = BatchingServable(model, scheduler, BatchingOptions(max_batch_size=16), "m:1")
    first = threading.Thread(target=servable.run, args=(SIG, {"x": rows(1)}))
    first.start()
    assert model.entered.wait(10)
    requests = [{"x": rows(n, start=10 * n)} for n in (1, 3, 2, 4)]
    threads, results = run_in_threads(servable, requests)
    enqueued.wait(1 + len(requests))
    model.gate.set()
    for t in [first, *threads]:
        t.join(10)
    assert len(model.runs) == 2 and model.runs[1]["x"].shape == (10, 2)  # one merged run
    for request, result in zip(requests, results):
        direct = Model().run(SIG, request)
        assert result.keys() == direct.keys()
        for k in direct:
            np.testing.assert_array_equal(result[k], direct[k])


def test_padding_rows_copy_the_last_requests_first_row_and_are_dropped(scheduler, enqueued):
    model = Model(hold_first=True)
    opts = BatchingOptions(max_batch_size=8, allowed_batch_sizes=(4, 8))
    servable = BatchingServable(model, scheduler, opts, "m:1")
    first = threading.Thread(target=servable.run, args=(SIG, {"x": rows(1)}))
    first.start()
    assert model.entered.wait(10)
    requests = [{"x": rows(2, 100)}, {"x": rows(3, 200)}]
    threads, results = run_in_threads(servable, requests)
    enqueued.wait(1 + 2)
    model.gate.set()
    for t in [first, *threads]:
        t.join(10)
    assert model.runs[0]["x"].shape == (4, 2)  # even a lone request is padded up to 4
    merged = model.runs[1]["x"]
    assert merged.shape == (8, 2)
    np.testing.assert_array_equal(merged[5:], np.repeat(rows(3, 200)[:1], 3, axis=0))
    np.testing.assert_array_equal(results[0]["y"], 2 * rows(2, 100) + 1)
    np.testing.assert_array_equal(results[1]["total"], rows(3, 200).sum(axis=1))


def test_large_requests_are_split_and_reassembled(scheduler):
    model = Model()
    opts = BatchingOptions(max_batch_size=64, enable_large_batch_splitting=True, max_execution_batch_size=8)
    servable = BatchingServable(model, scheduler, opts, "m:1")
    x = rows(30)
    out = servable.run(SIG, {"x": x})
    np.testing.assert_array_equal(out["y"], 2 * x + 1)
    np.testing.assert_array_equal(out["total"], x.sum(axis=1))
    assert [r["x"].shape[0] for r in model.runs] == [8, 8, 8, 6]


def test_too_large_without_splitting_is_invalid_argument(scheduler):
    servable = BatchingServable(Model(), scheduler, BatchingOptions(max_batch_size=4), "m:1")
    with pytest.raises(ServingError) as err:
        servable.run(SIG, {"x": rows(5)})
    assert err.value.code == Code.INVALID_ARGUMENT
    assert err.value.message == "Task size 5 is larger than maximum input batch size 4"


def test_scalar_inputs_cannot_be_batched(scheduler):
    sig = Signature("s", "p", {"x": spec("x", F32, ())}, {"y": spec("y", F32, ())})
    servable = BatchingServable(Model(), scheduler, BatchingOptions(), "m:1")
    with pytest.raises(ServingError) as err:
        servable.run(sig, {"x": np.float32(1)})
    assert err.value.message == "Batching Run() input tensors must have at least one dimension"


def test_other_shapes_are_not_merged_unless_padding_is_on(scheduler, enqueued):
    for pad in (False, True):
        model = Model(hold_first=True)
        opts = BatchingOptions(max_batch_size=16, pad_variable_length_inputs=pad)
        servable = BatchingServable(model, scheduler, opts, f"m:{pad}")
        first = threading.Thread(target=servable.run, args=(SEQ, {"t": np.ones((1, 1), np.int64)}))
        first.start()
        assert model.entered.wait(10)
        requests = [{"t": np.array([[1, 2, 3]], np.int64)}, {"t": np.array([[4], [5]], np.int64)}]
        threads, results = run_in_threads(servable, requests, SEQ)
        enqueued.wait(3 if not pad else 6)  # both rounds share the counter
        model.gate.set()
        for t in [first, *threads]:
            t.join(10)
        assert len(model.runs) == (2 if pad else 3)
        if pad:  # [4] and [5] padded with their request's first element, 4
            np.testing.assert_array_equal(model.runs[1]["t"], [[1, 2, 3], [4, 4, 4], [5, 4, 4]])
        np.testing.assert_array_equal(results[0]["len"], [3])
        np.testing.assert_array_equal(results[1]["len"], [3, 3] if pad else [1, 1])


def test_a_request_that_does_not_match_runs_alone_and_keeps_its_error(scheduler, enqueued):
    model = Model(hold_first=True)
    servable = BatchingServable(model, scheduler, BatchingOptions(max_batch_size=16), "m:1")
    first = threading.Thread(target=servable.run, args=(SIG, {"x": rows(1)}))
    first.start()
    assert model.entered.wait(10)
    requests = [{"x": rows(2)}, {"x": rows(2).astype(np.float64)}, {"x": rows(1)}]
    threads, results = run_in_threads(servable, requests)
    enqueued.wait(1 + 3)
    model.gate.set()
    for t in [first, *threads]:
        t.join(10)
    assert isinstance(results[1], ServingError) and "wrong dtype" in results[1].message
    np.testing.assert_array_equal(results[0]["y"], 2 * rows(2) + 1)
    np.testing.assert_array_equal(results[2]["y"], 2 * rows(1) + 1)


def test_outputs_without_a_batch_dimension_fail_with_tf_message(scheduler):
    servable = BatchingServable(Model(), scheduler, BatchingOptions(), "m:1")
    with pytest.raises(ServingError) as err:
        servable.run(BROKEN, {"x": rows(2)})
    assert err.value.code == Code.FAILED_PRECONDITION
    assert err.value.message == "Batched output tensor has 0 dimensions"


def test_output_filters_get_their_own_queue_and_outputs(scheduler):
    servable = BatchingServable(Model(), scheduler, BatchingOptions(), "m:1")
    out = servable.run(SIG, {"x": rows(2)}, ["total"])
    assert list(out) == ["total"]
    servable.run(SIG, {"x": rows(2)})
    assert len(servable._queues) == 2


def test_a_full_queue_is_unavailable_at_once(scheduler, enqueued):
    model = Model(hold_first=True)
    opts = BatchingOptions(max_batch_size=1, max_enqueued_batches=1)
    servable = BatchingServable(model, scheduler, opts, "m:1")
    first = threading.Thread(target=servable.run, args=(SIG, {"x": rows(1)}))
    first.start()
    assert model.entered.wait(10)
    threads, _ = run_in_threads(servable, [{"x": rows(1)}])  # fills the one queued batch
    enqueued.wait(1 + 1)
    with pytest.raises(ServingError) as err:
        servable.run(SIG, {"x": rows(1)})
    assert err.value.code == Code.UNAVAILABLE and "is full" in err.value.message
    model.gate.set()
    for t in [first, *threads]:
        t.join(10)


def test_a_request_whose_deadline_passes_in_the_queue_never_runs(scheduler):
    model = Model(hold_first=True)
    servable = BatchingServable(model, scheduler, BatchingOptions(), "m:1")
    first = threading.Thread(target=servable.run, args=(SIG, {"x": rows(1)}))
    first.start()
    assert model.entered.wait(10)
    with pytest.raises(ServingError) as err:
        servable.run(SIG, {"x": rows(1, 50)}, timeout_ms=20)
    assert err.value.code == Code.DEADLINE_EXCEEDED and err.value.message == QUEUE_TIMEOUT_MESSAGE
    model.gate.set()
    first.join(10)
    assert servable.run(SIG, {"x": rows(1, 70)})["total"].tolist() == [141.0]
    assert [r["x"][0, 0] for r in model.runs] == [0.0, 70.0]  # the expired one never ran


def test_run_async_batches_on_the_loop_and_honours_deadlines(scheduler):
    model = Model(hold_first=True)
    servable = BatchingServable(model, scheduler, BatchingOptions(max_batch_size=16), "m:1")

    async def scenario():
        loop = asyncio.get_running_loop()
        first = asyncio.ensure_future(servable.run_async(SIG, {"x": rows(1)}))
        await loop.run_in_executor(None, model.entered.wait, 10)
        calls = [asyncio.ensure_future(servable.run_async(SIG, {"x": rows(n, 7 * n)})) for n in (2, 3)]
        late = asyncio.ensure_future(
            servable.run_async(SIG, {"x": rows(1, 99)}, deadline=time.monotonic() + 0.02))
        with pytest.raises(ServingError) as err:
            await late
        assert err.value.code == Code.DEADLINE_EXCEEDED
        model.gate.set()
        return await first, await asyncio.gather(*calls)

    _, (a, b) = asyncio.run(scenario())
    np.testing.assert_array_equal(a["y"], 2 * rows(2, 14) + 1)
    np.testing.assert_array_equal(b["total"], rows(3, 21).sum(axis=1))
    assert len(model.runs) == 2 and model.runs[1]["x"].shape == (5, 2)  # merged, the late one dropped


def test_run_async_deadlines_of_many_requests_share_one_timer(scheduler):
    """Mixed deadlines while the model is held: each expired request fails no earlier than
    its deadline, in deadline order; those without one, or with a far one, run."""
    model = Model(hold_first=True)
    servable = BatchingServable(model, scheduler, BatchingOptions(max_batch_size=16), "m:1")
    failed: list[tuple[float, float]] = []  # (deadline, when it failed)

    async def call(value, deadline):
        try:
            return await servable.run_async(SIG, {"x": rows(1, value)}, deadline=deadline)
        except ServingError as err:
            assert err.code == Code.DEADLINE_EXCEEDED and err.message == QUEUE_TIMEOUT_MESSAGE
            failed.append((deadline, time.monotonic()))
            raise

    async def scenario():
        loop = asyncio.get_running_loop()
        first = asyncio.ensure_future(servable.run_async(SIG, {"x": rows(1)}))
        await loop.run_in_executor(None, model.entered.wait, 10)
        now = time.monotonic()
        due = [asyncio.ensure_future(call(10 * i, now + delay))
               for i, delay in enumerate((0.06, 0.02, 0.04, 0.03), 1)]
        kept = [asyncio.ensure_future(call(100, None)), asyncio.ensure_future(call(200, now + 60))]
        outcomes = await asyncio.gather(*due, return_exceptions=True)
        assert all(isinstance(o, ServingError) for o in outcomes)
        model.gate.set()
        return await first, await asyncio.gather(*kept)

    _, (none, far) = asyncio.run(scenario())
    assert none["total"].tolist() == [201.0] and far["total"].tolist() == [401.0]
    assert [d for d, _ in failed] == sorted(d for d, _ in failed)
    assert all(when >= deadline - 0.001 for deadline, when in failed)  # the timer's resolution
    assert [r["x"][0, 0] for r in model.runs] == [0.0, 100.0]  # the expired ones never ran


def test_run_async_deadlines_do_not_keep_finished_requests(scheduler):
    """Thousands of requests with a far deadline finish: their entries are dropped as they
    pile up (and their inputs freed), and a request still waiting keeps its deadline."""
    import gc
    import weakref

    from pyserving.batching import batching_servable as bs

    model = Model()
    servable = BatchingServable(model, scheduler, BatchingOptions(max_batch_size=64), "m:1")
    inputs_alive = []

    async def scenario():
        far = time.monotonic() + 3600
        for start in range(0, 3000, 100):
            batch = []
            for i in range(start, start + 100):
                x = rows(1, i)
                inputs_alive.append(weakref.ref(x))
                batch.append(servable.run_async(SIG, {"x": x}, deadline=far))
            await asyncio.gather(*batch)
        deadlines = servable._deadlines
        assert isinstance(deadlines, bs._Deadlines)
        assert len(deadlines._heap) < 2 * bs._Deadlines._MIN_COMPACT
        hold = Model(hold_first=True)
        held = BatchingServable(hold, scheduler, BatchingOptions(), "h:1")
        first = asyncio.ensure_future(held.run_async(SIG, {"x": rows(1)}))
        await asyncio.get_running_loop().run_in_executor(None, hold.entered.wait, 10)
        with pytest.raises(ServingError) as err:
            await held.run_async(SIG, {"x": rows(1, 5)}, deadline=time.monotonic() + 0.02)
        assert err.value.code == Code.DEADLINE_EXCEEDED
        hold.gate.set()
        await first

    asyncio.run(scenario())
    gc.collect()
    assert sum(ref() is not None for ref in inputs_alive) == 0
    assert len(model.runs) >= 3000 // 64


def test_loader_wraps_and_closes(scheduler, tmp_path):
    class Loader:
        def __init__(self):
            self.model = None

        def load(self):
            self.model = Model()

        def unload(self):
            self.model = None

        def servable(self):
            return self.model

    wrap = loader_wrapper(scheduler, BatchingConfig(BatchingOptions(max_batch_size=8)))
    loader = wrap(Loader(), ServableId("m", 3), str(tmp_path))
    loader.load()
    servable = loader.servable()
    assert isinstance(servable, BatchingServable)
    assert servable.signatures is Model.signatures and servable.signature_def_map() == "sigdefs"
    assert servable.runtime_name == Model.runtime_name
    assert servable.run(SIG, {"x": rows(1)})["total"].tolist() == [1.0]
    loader.unload()
    with pytest.raises(ServingError) as err:
        servable.run(SIG, {"x": rows(1)})
    assert err.value.code == Code.UNAVAILABLE


def test_per_model_parameters_come_from_the_version_directory(scheduler, tmp_path):
    class Loader:
        def load(self):
            pass

        def unload(self):
            pass

        def servable(self):
            return Model()

    config = BatchingConfig(BatchingOptions(), per_model=True)
    plain = BatchingLoader(Loader(), scheduler, config, str(tmp_path), "m", 1)
    plain.load()
    assert isinstance(plain.servable(), Model)  # no batching_params.pbtxt: not batched
    (tmp_path / "batching_params.pbtxt").write_text("max_batch_size { value: 4 } allowed_batch_sizes: 3")
    bad = BatchingLoader(Loader(), scheduler, config, str(tmp_path), "m", 2)
    with pytest.raises(ServingError, match="Last entry in allowed_batch_sizes must match max_batch_size"):
        bad.load()
    (tmp_path / "batching_params.pbtxt").write_text("max_batch_size { value: 4 }")
    good = BatchingLoader(Loader(), scheduler, config, str(tmp_path), "m", 3)
    good.load()
    assert good.servable().options.max_batch_size == 4


def test_a_duplicate_output_alias_is_invalid_argument(scheduler):
    servable = BatchingServable(Model(), scheduler, BatchingOptions(), "m:1")
    with pytest.raises(ServingError) as err:
        servable.run(SIG, {"x": rows(1)}, ["y", "total", "y"])
    assert err.value.code == Code.INVALID_ARGUMENT and err.value.message == "duplicate output tensor alias: y"


class LoadedModel:
    """A platform loader whose servable is ``model``, already there."""

    def __init__(self, model):
        self.model = model

    def load(self):
        pass

    def unload(self):
        pass

    def servable(self):
        return self.model


def test_adaptive_a_batch_the_policy_keeps_waiting_is_released_by_a_loop_timer(scheduler):
    # A 30 s timeout: only the event loop's timer can release this batch early.
    options = BatchingOptions(max_batch_size=16, batch_timeout_micros=30_000_000, mode="adaptive")
    servable = BatchingServable(Model(), scheduler, options, "m:1")
    policy = servable._queue(SIG, ())._policy
    for size in (1, 2, 4):
        policy.batch_ran(size, 0.050)  # 50 ms a batch

    async def scenario():
        now = time.monotonic()
        for i in range(10):  # tasks 1 ms apart, much faster than a batch
            policy.arrived(now - 0.010 + 0.001 * i, 1)
        call = servable.run_async(SIG, {"x": rows(1, 5)})
        return await asyncio.wait_for(call, 10)

    assert asyncio.run(scenario())["total"].tolist() == [11.0]
    assert policy.chosen_wait > 0  # it did wait for the rest of the burst


def test_adaptive_loads_warm_the_batch_sizes_it_will_run(scheduler, tmp_path):
    model = Model()
    options = BatchingOptions(max_batch_size=8, allowed_batch_sizes=(2, 8), mode="adaptive")
    BatchingLoader(LoadedModel(model), scheduler, BatchingConfig(options), str(tmp_path), "m", 1).load()
    # Signatures whose inputs can be made up, at every allowed size, a few times each; the
    # one with an unknown non-batch dimension ("seq") is left to the warmup records, and
    # one whose first run fails ("broken": a scalar output) stops there, the load goes on.
    sizes = [next(iter(run.values())).shape[0] for run in model.runs]
    assert sizes == [2, 2, 2, 8, 8, 8, 2]


def test_fixed_loads_warm_no_batch_sizes(scheduler, tmp_path):
    model = Model()
    BatchingLoader(LoadedModel(model), scheduler, BatchingConfig(BatchingOptions(max_batch_size=8)),
                   str(tmp_path), "m", 1).load()
    assert model.runs == []
