"""The data plane: every operation a front end offers, transport-neutral.

Predict, classify, regress, multi-inference, metadata, status and config reload: REST and
gRPC front ends (and any other) decode their wire format, call these methods, and encode
the typed result; every behaviour (version resolution, deadlines, metrics, status,
metadata) is written here once. What a request means for a servable (signature lookup,
classify/regress semantics) comes from `platforms/inference.py`, which warmup shares.
Model execution, and the decode and encode callbacks the front ends pass in, run on a
worker thread, never on the loop.

Handles: a request pins its version with a handle carrying its deadline. Once its work
is handed to a worker thread, the worker owns the handle and releases it when the work
has ended, whatever happens to the awaiting coroutine: a call cancelled by its client, or
answered DEADLINE_EXCEEDED at its deadline while the work still runs, never lets the
version unload under a running model. The coroutine answers at the deadline (plus
`_DEADLINE_GRACE_SECONDS`, so a run the platform itself timed out reports its own error).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence, TypeVar

import numpy as np

from pyserving.core.servable_handle import ServableHandle
from pyserving.errors import Code, ServingError
from pyserving.monitoring.metrics import ServingMetrics, current_request, note_signature, note_version
from pyserving.platforms import inference
from pyserving.platforms.base import Servable, Signature
from pyserving.platforms.inference import CLASSIFY_METHOD_NAME, Api, find_signature
from pyserving.server.admission import Admission, RequestGate
from pyserving.server.budget import Claim, MemoryBudget
from pyserving.server.model_config import ModelConfig
from pyserving.server.model_control import ModelControl
from pyserving.server.server_core import ServerCore, VersionStatus

__all__ = ["ModelSpec", "PredictResult", "ClassifyResult", "RegressResult", "ModelDescription",
           "PredictionService", "SMALL_REQUEST_BYTES", "DEFAULT_MODEL_PLATFORM"]

_DEADLINE_GRACE_SECONDS = 0.05
# A servable's model format when its platform does not name one (`model_platform`).
DEFAULT_MODEL_PLATFORM = "tensorflow_savedmodel"
# The largest request (body or message bytes) a front end calls `small` in `predict`: its
# decoding and encoding take microseconds, so for a batched model they run on the loop.
SMALL_REQUEST_BYTES = 64 * 1024
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ModelSpec:
    name: str
    version: int | None = None
    label: str | None = None
    signature_name: str = ""


@dataclass(slots=True)
class PredictResult:
    name: str
    version: int
    signature_name: str
    signature: Signature
    outputs: dict[str, np.ndarray]


@dataclass(slots=True)
class ClassifyResult:
    name: str
    version: int
    signature_name: str
    classifications: list[list[tuple[bytes, float]]]


@dataclass(slots=True)
class RegressResult:
    name: str
    version: int
    signature_name: str
    values: list[float]


@dataclass(slots=True)
class ModelDescription:
    """One version as a protocol without SignatureDefs (the Open Inference Protocol) sees it:
    one signature, the model's format, and every version a client may ask for."""

    name: str
    version: int
    signature: Signature
    signature_names: list[str]
    platform: str


def _signature(servable: Servable, name: str, api: Api, method: str, method_name_check: bool) -> Signature:
    sig = find_signature(servable, name, method, api)
    note_signature(sig.name)  # metrics label
    if method_name_check:
        inference.check_method_name(sig, method)
    return sig


class PredictionService:
    def __init__(
        self,
        core: ServerCore,
        executor: concurrent.futures.Executor | None = None,
        *,
        metrics: ServingMetrics | None = None,
        gate: RequestGate | None = None,
        budget: MemoryBudget | None = None,
        control: ModelControl | Any = None,
        method_name_check: bool = False,
        base_path_allowlist: Any = None,
    ) -> None:
        """`method_name_check`: `--enable_signature_method_name_check` (see
        `inference.check_method_name`). `base_path_allowlist`: an object whose `check(paths)`
        raises a ServingError for a base path a reload may not use, falsy when any will do
        (`auth.BasePathAllowlist`)."""
        self.core = core
        self.base_path_allowlist = base_path_allowlist
        self.method_name_check = method_name_check
        # status and config reloads: the core's own control plane, or a worker's supervisor
        self.control = control if control is not None else core
        # The size of asyncio's default executor, but ours: the handle's release is tied to
        # the end of the work, which `run_in_executor`'s future does not expose.
        self._executor = executor or concurrent.futures.ThreadPoolExecutor(
            min(32, (os.cpu_count() or 1) + 4), thread_name_prefix="inference")
        self.metrics = metrics if metrics is not None else ServingMetrics()
        self.gate = gate if gate is not None else RequestGate()
        self.budget = budget if budget is not None else MemoryBudget()
        self._reload_lock = asyncio.Lock()

    def begin(self, entrypoint: str, api: str = "", model: str = "", tf_api: str | None = None) -> Admission:
        """A request arrives at a front end: its metrics and admission (see `Admission`)."""
        return Admission(self.metrics, self.gate, entrypoint, api, model, tf_api)

    async def _handle(self, spec: ModelSpec, deadline: float | None) -> ServableHandle:
        if not spec.name:
            raise ServingError(Code.INVALID_ARGUMENT, "ModelSpec has no name specified.")
        handle = await self.core.get_handle(spec.name, spec.version, spec.label, deadline=deadline,
                                            owner=current_request.get())
        note_version(handle.id.version)  # metrics label
        return handle

    async def _run(self, handle: ServableHandle, fn: Callable[[], T], deadline: float | None,
                   claim: Claim | None = None, *, quick: bool = False) -> T:
        """`fn()` on a worker, which takes over `handle` and `claim` (see the module docstring).

        `quick`: the front end vouches that decoding and encoding take microseconds, so the
        model run, bounded by the deadline itself, is all that takes time: no timer (a
        timer per request is ~10% of the event loop's time for a small predict)."""
        work = self._executor.submit(fn)
        release = handle.transfer()
        give_back = claim.transfer() if claim is not None else None

        def done(_: object) -> None:  # at once if cancelled before it started
            release()
            if give_back is not None:
                give_back()

        work.add_done_callback(done)
        waiter = asyncio.wrap_future(work)
        if deadline is None or quick:
            return await waiter
        # One timer that cancels the waiter (the work goes on): cheaper than `wait_for`.
        loop = asyncio.get_running_loop()
        expired: list[bool] = []

        def expire() -> None:
            expired.append(True)
            waiter.cancel()

        timer = loop.call_at(loop.time() + deadline - time.monotonic() + _DEADLINE_GRACE_SECONDS, expire)
        try:
            return await waiter
        except asyncio.CancelledError:
            if not expired:
                raise  # the caller was cancelled
            raise ServingError(Code.DEADLINE_EXCEEDED, "Deadline exceeded while the request was running") from None
        finally:
            timer.cancel()

    @staticmethod
    def _timeout_ms(deadline: float | None) -> int | None:
        if deadline is None:
            return None
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ServingError(Code.DEADLINE_EXCEEDED, "Deadline exceeded before the request was run")
        return max(1, int(remaining * 1000))

    def _run_model(self, servable: Servable, model: str, api: str, sig: Signature, inputs: Mapping[str, Any],
                   output_filter: Sequence[str], deadline: float | None) -> dict[str, np.ndarray]:
        """Run unless the deadline has passed (DEADLINE_EXCEEDED, not run), bounded
        by what is left of it; TF Serving's `runtime_latency` times successful runs."""
        timeout_ms = self._timeout_ms(deadline)
        start = time.perf_counter()
        outputs = servable.run(sig, inputs, output_filter, timeout_ms)
        self.metrics.observe_runtime(model, api, servable.runtime_name, time.perf_counter() - start)
        return outputs

    def _runner(self, servable: Servable, model: str, api: str, deadline: float | None) -> inference.Runner:
        """`_run_model` for one request, as the shared classify/regress semantics call it."""
        return lambda sig, inputs, output_filter: self._run_model(
            servable, model, api, sig, inputs, output_filter, deadline)

    async def predict(
        self,
        spec: ModelSpec,
        decode: Callable[[Signature], Mapping[str, np.ndarray]],
        *,
        output_filter: Sequence[str] = (),
        deadline: float | None = None,
        api: Api = "rest",
        encode: Callable[[PredictResult], T] | None = None,
        small: bool = False,
        claim: Claim | None = None,
    ) -> PredictResult | T:
        """Run a signature. `decode(signature)` builds the inputs; `encode`, if given,
        turns the result into the answer; both run on the worker thread, except for a
        `small` request (the front end vouches decode and encode take microseconds) to an
        `AsyncServable` (a batched model): then they run on the loop and no thread waits.
        `claim` (the request's share of the memory budget, which `decode` adds to) also
        counts the outputs before they are encoded, and is released once the work ended."""
        handle = await self._handle(spec, deadline)
        try:
            servable = handle.servable
            sig = _signature(servable, spec.signature_name, api, "predict", self.method_name_check)
            # The fast path of an AsyncServable (batching: one thread hop, the batch thread)
            run_async = getattr(servable, "run_async", None) if small else None
            if run_async is not None:
                self._timeout_ms(deadline)
                inputs = decode(sig)
                start = time.perf_counter()
                outputs = await run_async(sig, inputs, output_filter, deadline)
                self.metrics.observe_runtime(handle.id.name, "Predict", servable.runtime_name,
                                             time.perf_counter() - start)
                _claim_outputs(claim, outputs)
                result = PredictResult(handle.id.name, handle.id.version, sig.name, sig, outputs)
                return encode(result) if encode is not None else result

            def work() -> PredictResult | T:
                self._timeout_ms(deadline)  # expired while queued -> not decoded, not run
                inputs = decode(sig)
                outputs = self._run_model(servable, handle.id.name, "Predict", sig, inputs, output_filter, deadline)
                if deadline is not None and time.monotonic() > deadline:  # answered already
                    raise ServingError(Code.DEADLINE_EXCEEDED, "Deadline exceeded while the request was running")
                _claim_outputs(claim, outputs)
                result = PredictResult(handle.id.name, handle.id.version, sig.name, sig, outputs)
                return encode(result) if encode is not None else result

            return await self._run(handle, work, deadline, claim, quick=small)
        finally:
            handle.release()
            if claim is not None:
                claim.release()

    async def classify(
        self, spec: ModelSpec, examples: Callable[[], list[bytes]], *, deadline: float | None = None
    ) -> ClassifyResult:
        handle = await self._handle(spec, deadline)
        try:
            servable = handle.servable
            sig = _signature(servable, spec.signature_name, "grpc", "classify", self.method_name_check)

            def work() -> ClassifyResult:
                self._timeout_ms(deadline)  # expired while queued -> not run
                serialized = examples()
                self.metrics.observe_examples(handle.id.name, len(serialized))
                run = self._runner(servable, handle.id.name, "Classify", deadline)
                result = inference.classify(run, sig, serialized)
                return ClassifyResult(handle.id.name, handle.id.version, sig.name, result)

            return await self._run(handle, work, deadline)
        finally:
            handle.release()

    async def regress(
        self, spec: ModelSpec, examples: Callable[[], list[bytes]], *, deadline: float | None = None
    ) -> RegressResult:
        handle = await self._handle(spec, deadline)
        try:
            servable = handle.servable
            sig = _signature(servable, spec.signature_name, "grpc", "regress", self.method_name_check)

            def work() -> RegressResult:
                self._timeout_ms(deadline)  # expired while queued -> not run
                serialized = examples()
                self.metrics.observe_examples(handle.id.name, len(serialized))
                run = self._runner(servable, handle.id.name, "Regress", deadline)
                values = inference.regress(run, sig, serialized)
                return RegressResult(handle.id.name, handle.id.version, sig.name, values)

            return await self._run(handle, work, deadline)
        finally:
            handle.release()

    async def metadata(self, spec: ModelSpec, *, deadline: float | None = None) -> tuple[str, int, Any]:
        """(name, version, SignatureDefMap proto) of the resolved version."""
        handle = await self._handle(spec, deadline)
        try:
            return handle.id.name, handle.id.version, handle.servable.signature_def_map()
        finally:
            handle.release()

    async def describe(self, spec: ModelSpec, *, deadline: float | None = None) -> ModelDescription:
        """The resolved version's signature `spec.signature_name` (default serving_default;
        INVALID_ARGUMENT when it has none of that name) and its model format."""
        handle = await self._handle(spec, deadline)
        try:
            servable = handle.servable
            sig = find_signature(servable, spec.signature_name, "predict", "rest")
            platform = getattr(servable, "model_platform", DEFAULT_MODEL_PLATFORM)
            # `__saved_model_init_op` and the like are not callable signatures
            names = [n for n in servable.signatures if not n.startswith("__")]
            return ModelDescription(handle.id.name, handle.id.version, sig, names, platform)
        finally:
            handle.release()

    async def multi_inference(
        self,
        spec: ModelSpec,
        tasks: Sequence[Any],
        examples: Callable[[], list[bytes]],
        *,
        deadline: float | None = None,
    ) -> list[ClassifyResult | RegressResult]:
        """TF Serving's MultiInference. `spec` (the first task's) picks the version; the
        tasks (with `model_spec` and `method_name` fields, like the proto's) are then
        checked against that version's signatures (`inference.multi_inference_tasks`:
        an unknown signature is INVALID_ARGUMENT "Requested signature not found in model
        graph") before anything runs; then, on one worker and that one version, every task
        runs on the same examples (serialized once, counted once, as TF Serving counts them)."""
        handle = await self._handle(spec, deadline)
        try:
            servable = handle.servable
            checked = inference.multi_inference_tasks(tasks, servable.signatures,
                                                      method_check=self.method_name_check)
            signatures = [(servable.signatures[name], method) for name, method in checked]
            if checked:  # metrics label: the first task's signature, which `spec` names
                note_signature(checked[0][0])
            model, version = handle.id.name, handle.id.version

            def work() -> list[ClassifyResult | RegressResult]:
                self._timeout_ms(deadline)  # expired while queued -> not run
                serialized = examples()
                self.metrics.observe_examples(model, len(serialized))
                results: list[ClassifyResult | RegressResult] = []
                for sig, method in signatures:
                    if method == CLASSIFY_METHOD_NAME:
                        run = self._runner(servable, model, "Classify", deadline)
                        results.append(ClassifyResult(model, version, sig.name, inference.classify(run, sig, serialized)))
                    else:
                        run = self._runner(servable, model, "Regress", deadline)
                        results.append(RegressResult(model, version, sig.name, inference.regress(run, sig, serialized)))
                return results

            return await self._run(handle, work, deadline)
        finally:
            handle.release()

    def status(self, name: str, version: int | None = None) -> list[VersionStatus]:
        """Every version's state, or one version's (NOT_FOUND for a model or version the
        server does not have; an empty name is such a model)."""
        return self.control.model_status(name, version)

    def version_of(self, name: str, label: str) -> int:
        """The version `label` names for model `name` (NOT_FOUND for a model the server does not
        have; INVALID_ARGUMENT, as for a request, for an unknown label)."""
        model = self.control.models.get(name)
        if model is None:
            raise ServingError(Code.NOT_FOUND, f"Servable not found for request: Latest({name})")
        version = dict(model.labels).get(label)
        if version is None:
            raise ServingError(Code.INVALID_ARGUMENT, f"Unrecognized servable version label: {label}")
        return int(version)

    def is_available(self, name: str, version: int | None = None, label: str | None = None) -> bool:
        """Whether a request for that version (or label, or the latest) would be served now
        without waiting: it is AVAILABLE. NOT_FOUND for a model or version the server does not
        have."""
        if label is not None:
            version = self.version_of(name, label)
        return any(s.state.name == "AVAILABLE" for s in self.status(name, version))

    def available_versions(self, name: str) -> list[int]:
        """The AVAILABLE versions of `name`, oldest first (NOT_FOUND for an unknown model)."""
        return sorted(s.version for s in self.status(name) if s.state.name == "AVAILABLE")

    async def reload_config(self, models: list[ModelConfig], *, wait_timeout: float) -> None:
        """Replace the served models (TF Serving's HandleReloadConfigRequest); one reload at
        a time, each waiting at most `wait_timeout` for its new models to load. With
        `base_path_allowlist` set, PERMISSION_DENIED for a base path outside its roots."""
        if self.base_path_allowlist:
            await asyncio.to_thread(self.base_path_allowlist.check, [m.base_path for m in models])
        async with self._reload_lock:
            await self.control.reload_config(models, wait_timeout=wait_timeout)


def _claim_outputs(claim: Claim | None, outputs: Mapping[str, Any]) -> None:
    if claim is not None:
        claim.add(sum(getattr(a, "nbytes", 0) for a in outputs.values()), "The model's outputs")
