"""PredictionService in-process over a started ServerCore serving the numpy platform:
what each API answers, its error codes, deadlines, the memory budget and admission."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import threading
import time

import numpy as np
import pytest

from numpy_platform import CLASSES, model, run, started, write_version
from pyserving.batching.batching_servable import BatchingServable, loader_wrapper
from pyserving.batching.options import BatchingConfig, BatchingOptions
from pyserving.batching.scheduler import BatchScheduler
from pyserving.core.servable_state import ManagerState as S
from pyserving.errors import Code, RequestTooLargeError, ServingError
from pyserving.monitoring.metrics import ServingMetrics
from pyserving.server.budget import MemoryBudget
from pyserving.server.prediction_service import ModelSpec, PredictionService
from pyserving.server.server_core import VersionStatus
from pyserving.sources.version_policy import All

pytestmark = pytest.mark.usefixtures("numpy_platform")

X = np.array([1.0, 2.0, 3.0], np.float32)


@pytest.fixture
def base(tmp_path):
    """Version 1 (y = 2x + 1) and version 2 (y = 3x + 2); label stable -> 1."""
    path = tmp_path / "m"
    write_version(path, 1, slope=2.0, intercept=1.0)
    write_version(path, 2, slope=3.0, intercept=2.0)
    return path


class Calls:
    """A front end's decode callback, recording where and how often it ran."""

    def __init__(self, inputs=None, claim=None, claim_bytes=0):
        self.inputs = {"x": X} if inputs is None else inputs
        self.claim, self.claim_bytes = claim, claim_bytes
        self.threads = []

    def __call__(self, signature):
        self.threads.append(threading.current_thread())
        if self.claim is not None:  # as the wire decoders count a tensor before allocating it
            self.claim.add(self.claim_bytes, "The request's input tensors")
        return self.inputs


def serve(base, scenario, *, budget=None, **options):
    """Run `scenario(service, core)` against model m (all versions, label stable -> 1)."""

    async def main():
        async with started([model("m", base, All(), stable=1)], **options) as core:
            executor = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="inference")
            service = PredictionService(core, executor, metrics=ServingMetrics(), budget=budget)
            try:
                return await scenario(service, core)
            finally:
                executor.shutdown(wait=True)

    return run(main())


async def _error(awaitable):
    with pytest.raises(ServingError) as err:
        await awaitable
    return err.value.code, err.value.message


def _runs(core, version):
    with core.manager.get_handle(core.resolve("m", version, None)) as handle:
        return handle.servable.runs


def _runtime_count(service, api):
    return service.metrics.registry.get_sample_value(
        ":tensorflow:serving:runtime_latency_count", {"model_name": "m", "API": api, "runtime": "numpy"})


def _no_handles(core):
    return all(n == 0 for n in core.manager.handles_in_use().values())


def test_predict_runs_the_resolved_version_on_a_worker(base):
    async def scenario(service, core):
        decode = Calls()
        result = await service.predict(ModelSpec("m"), decode)
        assert (result.name, result.version, result.signature_name) == ("m", 2, "serving_default")
        assert result.outputs["y"].tolist() == [5.0, 8.0, 11.0]
        assert result.outputs["negated"].tolist() == [-1.0, -2.0, -3.0]
        assert decode.threads[0].name.startswith("inference")  # never on the loop

        by_label = await service.predict(ModelSpec("m", label="stable"), decode, output_filter=["y"])
        assert (by_label.version, list(by_label.outputs)) == (1, ["y"])
        assert by_label.outputs["y"].tolist() == [3.0, 5.0, 7.0]

        encoded = await service.predict(ModelSpec("m", version=1), decode, deadline=time.monotonic() + 10,
                                        encode=lambda r: (r.version, r.outputs["y"].sum().item()))
        assert encoded == (1, 15.0)
        assert _runtime_count(service, "Predict") == 3
        assert _no_handles(core)

    serve(base, scenario)


@pytest.mark.parametrize("spec, api, error", [
    (ModelSpec("nope"), "rest", (Code.NOT_FOUND, "Servable not found for request: Latest(nope)")),
    (ModelSpec("m", version=9), "rest", (Code.NOT_FOUND, "Servable not found for request: Specific(m, 9)")),
    (ModelSpec("m", label="nope"), "rest", (Code.INVALID_ARGUMENT, "Unrecognized servable version label: nope")),
    (ModelSpec(""), "grpc", (Code.INVALID_ARGUMENT, "ModelSpec has no name specified.")),
    (ModelSpec("m", signature_name="nope"), "rest",
     (Code.INVALID_ARGUMENT, 'Serving signature name: "nope" not found in signature def')),
    (ModelSpec("m", signature_name="nope"), "grpc",
     (Code.FAILED_PRECONDITION, 'Serving signature key "nope" not found.')),
])
def test_predict_errors_before_anything_runs(base, spec, api, error):
    async def scenario(service, core):
        decode = Calls()
        assert await _error(service.predict(spec, decode, api=api)) == error
        assert decode.threads == [] and _runs(core, 2) == 0
        assert _no_handles(core)

    serve(base, scenario)


def test_bad_inputs_are_the_platforms_invalid_argument(base):
    async def scenario(service, core):
        wrong_name = Calls({"z": X})
        assert await _error(service.predict(ModelSpec("m"), wrong_name)) == (
            Code.INVALID_ARGUMENT, "Expected inputs ['x'], got ['z']")
        wrong_type = Calls({"x": np.array([1, 2], np.int64)})
        assert await _error(service.predict(ModelSpec("m"), wrong_type)) == (
            Code.INVALID_ARGUMENT, "Expected DT_FLOAT for x, got int64")
        assert await _error(service.predict(ModelSpec("m"), Calls(), output_filter=["nope"])) == (
            Code.INVALID_ARGUMENT, "Unknown outputs ['nope']")

        def undecodable(signature):
            raise ServingError(Code.INVALID_ARGUMENT, "JSON Parse error")
        assert await _error(service.predict(ModelSpec("m"), undecodable)) == (
            Code.INVALID_ARGUMENT, "JSON Parse error")
        assert _runtime_count(service, "Predict") is None  # only successful runs are timed
        assert _no_handles(core)

    serve(base, scenario)


@pytest.mark.parametrize("small", [False, True])
def test_a_request_past_its_deadline_is_not_run(base, small):
    async def scenario(service, core):
        decode = Calls()
        code, message = await _error(service.predict(ModelSpec("m"), decode, deadline=time.monotonic() - 0.001,
                                                     small=small))
        assert code == Code.DEADLINE_EXCEEDED
        if small:  # no timer races the worker: its own check answers
            assert message == "Deadline exceeded before the request was run"
        examples = lambda: [b"ab"]  # noqa: E731
        for call in (service.classify(ModelSpec("m", signature_name="classify"), examples,
                                      deadline=time.monotonic() - 0.001),
                     service.regress(ModelSpec("m", signature_name="regress"), examples,
                                     deadline=time.monotonic() - 0.001)):
            assert (await _error(call))[0] == Code.DEADLINE_EXCEEDED
        assert decode.threads == [] and _runs(core, 2) == 0
        assert _runtime_count(service, "Predict") is None
        await asyncio.to_thread(service._executor.shutdown, True)  # what was queued has ended
        assert _no_handles(core)

    serve(base, scenario)


def test_a_request_over_the_per_request_budget_is_too_large_and_gives_its_bytes_back(base):
    budget = MemoryBudget(per_request_bytes=20)

    async def scenario(service, core):
        big = Calls(claim=budget.claim(), claim_bytes=24)
        with pytest.raises(RequestTooLargeError) as err:
            await service.predict(ModelSpec("m"), big, claim=big.claim)
        assert err.value.code == Code.RESOURCE_EXHAUSTED
        assert err.value.message.startswith("The request's input tensors needs 24 bytes")
        assert _runs(core, 2) == 0 and budget.held == 0

        # Inputs within the limit, outputs (3 float32: 12 bytes) taking it over: not encoded.
        encoded = []
        fits = Calls(claim=budget.claim(), claim_bytes=12)
        with pytest.raises(RequestTooLargeError) as err:
            await service.predict(ModelSpec("m"), fits, claim=fits.claim, output_filter=["y"], encode=encoded.append)
        assert err.value.message.startswith("The model's outputs needs 24 bytes")
        assert encoded == [] and budget.held == 0

        ok = Calls(claim=budget.claim(), claim_bytes=4)
        result = await service.predict(ModelSpec("m"), ok, claim=ok.claim, output_filter=["y"])
        assert result.outputs["y"].tolist() == [5.0, 8.0, 11.0]
        assert ok.claim.bytes == 0 and budget.held == 0  # released once the work ended

    serve(base, scenario, budget=budget)


def test_classify_shapes_labels_and_scores_per_example(base):
    examples = lambda: [b"ab", b"abcdef"]  # noqa: E731  p = 2/8 and 6/8

    async def scenario(service, core):
        result = await service.classify(ModelSpec("m", label="stable", signature_name="classify"), examples)
        assert (result.name, result.version, result.signature_name) == ("m", 1, "classify")
        assert result.classifications == [[(b"negative", 0.75), (b"positive", 0.25)],
                                          [(b"negative", 0.25), (b"positive", 0.75)]]
        scores = await service.classify(ModelSpec("m", signature_name="scores_only"), examples)
        assert scores.classifications == [[(b"", 0.75), (b"", 0.25)], [(b"", 0.25), (b"", 0.75)]]
        classes = await service.classify(ModelSpec("m", signature_name="classes_only"), examples)
        assert classes.classifications == [[(c, 0.0) for c in CLASSES]] * 2

        assert _runtime_count(service, "Classify") == 3
        assert service.metrics.registry.get_sample_value(
            ":tensorflow:serving:request_example_count_total", {"model": "m"}) == 6

        assert await _error(service.classify(ModelSpec("m", signature_name="nope"), examples)) == (
            Code.INVALID_ARGUMENT, "No signature was found with the name: nope")
        assert await _error(service.classify(ModelSpec("m"), examples)) == (  # serving_default takes floats
            Code.INVALID_ARGUMENT, "Expected input Tensor 'x' of type DT_STRING (serialized tf.Example)")
        assert await _error(service.classify(ModelSpec("m", signature_name="regress"), examples)) == (
            Code.INVALID_ARGUMENT, "Expected classification signature outputs to contain classes and/or scores")
        assert _no_handles(core)

    serve(base, scenario)


def test_regress_gives_one_value_per_example(base):
    async def scenario(service, core):
        result = await service.regress(ModelSpec("m", version=2, signature_name="regress"),
                                       lambda: [b"a", b"abcd", b""])
        assert (result.name, result.version, result.signature_name) == ("m", 2, "regress")
        assert result.values == [5.0, 14.0, 2.0]  # 3 * len + 2

        assert await _error(service.regress(ModelSpec("m", signature_name="classify"), lambda: [b"a"])) == (
            Code.INVALID_ARGUMENT, "Expected regression signature outputs to contain 'outputs'")

        def empty():
            raise ServingError(Code.INVALID_ARGUMENT, "Input is empty.")
        assert await _error(service.regress(ModelSpec("m", signature_name="regress"), empty)) == (
            Code.INVALID_ARGUMENT, "Input is empty.")
        assert _runs(core, 2) == 1
        assert _no_handles(core)

    serve(base, scenario)


def _task(signature, method, name="m"):
    from types import SimpleNamespace

    return SimpleNamespace(model_spec=SimpleNamespace(name=name, signature_name=signature), method_name=method)


def test_multi_inference_checks_its_tasks_against_the_resolved_version(base):
    classify, regress = "tensorflow/serving/classify", "tensorflow/serving/regress"

    async def scenario(service, core):
        results = await service.multi_inference(
            ModelSpec("m", label="stable", signature_name="classify"),
            [_task("classify", classify), _task("regress", regress)], lambda: [b"ab"])
        assert [(r.version, r.signature_name) for r in results] == [(1, "classify"), (1, "regress")]
        assert results[1].values == [5.0]  # version 1: 2 * len + 1
        assert service.metrics.registry.get_sample_value(  # counted once per request, as TF Serving does
            ":tensorflow:serving:request_example_count_total", {"model": "m"}) == 1

        # TF Serving's order: the version first, then each task's checks, before any run
        assert await _error(service.multi_inference(
            ModelSpec("nope"), [_task("classify", classify, "nope")], lambda: [b"a"])) == (
            Code.NOT_FOUND, "Servable not found for request: Latest(nope)")
        assert await _error(service.multi_inference(
            ModelSpec("m", signature_name="classify"), [_task("classify", classify), _task("nope", regress)],
            lambda: [b"a"])) == (Code.INVALID_ARGUMENT, "Requested signature not found in model graph: nope")
        assert await _error(service.multi_inference(
            ModelSpec("m", signature_name="classify"),
            [_task("classify", "tensorflow/serving/predict"), _task("nope", regress)], lambda: [b"a"])) == (
            Code.UNIMPLEMENTED, "Unsupported signature method_name: tensorflow/serving/predict")
        assert _runs(core, 1) == 2 and _runs(core, 2) == 0
        assert _no_handles(core)

    serve(base, scenario)


def test_metadata_and_status(base):
    async def scenario(service, core):
        name, version, sigdefs = await service.metadata(ModelSpec("m", label="stable"))
        with core.manager.get_handle(core.resolve("m", 1, None)) as handle:
            assert (name, version, sigdefs) == ("m", 1, handle.servable.sigdefs)
        assert (await service.metadata(ModelSpec("m")))[1] == 2
        assert await _error(service.metadata(ModelSpec("nope"))) == (
            Code.NOT_FOUND, "Servable not found for request: Latest(nope)")

        assert service.status("m") == [VersionStatus(2, S.AVAILABLE, Code.OK, ""),
                                       VersionStatus(1, S.AVAILABLE, Code.OK, "")]
        assert service.status("m", 1) == [VersionStatus(1, S.AVAILABLE, Code.OK, "")]
        # An empty name is a model the server does not have (TF Serving's gRPC answer; REST
        # says "Missing model name in request." before asking).
        for args, error in [(("",), (Code.NOT_FOUND, "Could not find any versions of model ")),
                            (("nope",), (Code.NOT_FOUND, "Could not find any versions of model nope")),
                            (("m", 3), (Code.NOT_FOUND, "Could not find version 3 of model m"))]:
            with pytest.raises(ServingError) as err:
                service.status(*args)
            assert (err.value.code, err.value.message) == error
        assert _no_handles(core)

    serve(base, scenario)


def test_a_small_request_to_a_batched_model_decodes_on_the_loop(base):
    scheduler = BatchScheduler(1, "batch_threads")
    config = BatchingConfig(BatchingOptions(max_batch_size=8, batch_timeout_micros=0))

    async def scenario(service, core):
        decode = Calls()
        result = await service.predict(ModelSpec("m"), decode, small=True, deadline=time.monotonic() + 10)
        with core.manager.get_handle(core.resolve("m", None, None)) as handle:
            assert isinstance(handle.servable, BatchingServable)
        assert result.outputs["y"].tolist() == [5.0, 8.0, 11.0]
        assert decode.threads == [threading.current_thread()]  # no worker thread for it

        late = Calls()
        assert await _error(service.predict(ModelSpec("m"), late, small=True, deadline=time.monotonic() - 0.001)) == (
            Code.DEADLINE_EXCEEDED, "Deadline exceeded before the request was run")
        assert late.threads == []
        assert _no_handles(core)

    try:
        serve(base, scenario, loader_wrapper=loader_wrapper(scheduler, config))
    finally:
        scheduler.stop(10)


def test_a_draining_gate_refuses_new_requests_before_they_reach_a_model(base):
    """Admission belongs to the front ends (the service only runs what was admitted): the
    REST app, run in-process, applies the service's gate."""
    from pyserving.api.rest.app import RestApp, RestOptions

    async def call(app, method, path, body=b""):
        messages = [{"type": "http.request", "body": body, "more_body": False}]
        sent = []

        async def receive():
            return messages.pop(0) if messages else {"type": "http.disconnect"}

        async def send(message):
            sent.append(message)

        scope = {"type": "http", "method": method, "path": path, "raw_path": path.encode(), "headers": []}
        await app(scope, receive, send)
        start, body = sent[0], b"".join(m.get("body", b"") for m in sent[1:])
        return start["status"], dict(start["headers"]), json.loads(body)

    async def scenario(service, core):
        app = RestApp(service, RestOptions())
        predict = json.dumps({"instances": [1.0]}).encode()
        admitted = await call(app, "POST", "/v1/models/m:predict", predict)
        assert admitted[::2] == (200, {"predictions": [{"y": 5.0, "negated": -1.0}]})

        service.gate.start_drain()
        refused = {"error": "The server is shutting down and accepts no new requests"}
        status, headers, body = await call(app, "POST", "/v1/models/m:predict", predict)
        assert (status, body, headers[b"connection"]) == (503, refused, b"close")
        assert (await call(app, "GET", "/v1/models/m"))[::2] == (503, refused)
        assert _runs(core, 2) == 1  # only the request admitted before the drain ran
        assert service.gate.in_flight() == {}

    serve(base, scenario)
