"""`tensorflow.serving.PredictionService` and `ModelService` over grpc.aio.

Thin: each method checks the request the way TF Serving does before anything runs
(`Missing ModelSpec`, metadata fields, MultiInference task rules, reload config kind),
converts the protos, delegates to `PredictionService` (the data plane), and builds the
response. Tensor decoding and response encoding for Predict run on the service's worker
thread (the `decode`/`encode` callbacks), never on the event loop.

Every method is wrapped by `rpc`, the single place where errors become gRPC statuses:
`ServingError` keeps its code (message truncated past 1024 characters, as TF Serving's
`ToGRPCStatus`), anything unexpected becomes INTERNAL with a message and a logged traceback.

Deadlines: the RPC's remaining time (`context.time_remaining()`) becomes the service's
monotonic `deadline`; like TF Serving's `enforce_session_run_timeout`, it also bounds the
model run.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from typing import Any, Awaitable, Callable, TypeVar

import grpc
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from pyserving.api.grpc._access import request_model_name
from pyserving.api.grpc.status import to_grpc_status, truncate
from pyserving.errors import Code, ServingError
from pyserving.monitoring.metrics import ServingMetrics
from pyserving.platforms.base import DEFAULT_SIGNATURE, Signature
from pyserving.platforms.inference import serialized_examples
from pyserving.protos.tensor_codec import decode_inputs, encode_outputs
from pyserving.server.admission import Admission, RequestGate
from pyserving.server.model_config import to_model_configs
from pyserving.server.prediction_service import (
    SMALL_REQUEST_BYTES,
    ClassifyResult,
    ModelSpec,
    PredictionService,
    PredictResult,
)

__all__ = ["PredictionServicer", "ModelServicer", "rpc", "DEFAULT_RELOAD_WAIT_SECONDS"]

log = logging.getLogger("pyserving.grpc")

SIGNATURE_DEF_FIELD = "signature_def"
# HandleReloadConfigRequest without an RPC deadline waits at most this long for new models.
DEFAULT_RELOAD_WAIT_SECONDS = 300.0
# Kept back from the RPC deadline so our own "timed out" answer reaches the client.
_DEADLINE_MARGIN_SECONDS = 0.05
# A call cancelled this close to its deadline counts as DEADLINE_EXCEEDED: the client's end
# of the deadline reaches the server as a cancellation, before the server's own copy of the
# deadline (which started when the call arrived) has passed (seen once under CI load).
_DEADLINE_TOLERANCE_SECONDS = 0.05
_FILL_ON_LOOP_ROWS = 1000

Request = TypeVar("Request")
Response = TypeVar("Response")
Method = Callable[[Any, Request, grpc.aio.ServicerContext], Awaitable[Response]]


# Per-method metrics labels and admission
# method -> (our `api` label, TF Serving's `API` label or None when TF Serving does not count
# it, bounded by --max_in_flight_requests_per_model)
_METHODS: dict[str, tuple[str, str | None, bool]] = {
    "Predict": ("predict", "Predict", True),
    "Classify": ("classify", "Classify", True),
    "Regress": ("regress", "Regress", True),
    "MultiInference": ("multi_inference", None, True),
    "GetModelMetadata": ("metadata", None, False),
    "GetModelStatus": ("status", None, False),
    "HandleReloadConfigRequest": ("reload_config", None, False),
    # inference.GRPCInferenceService (the Open Inference Protocol)
    "ModelInfer": ("infer", "Predict", True),
    "ModelMetadata": ("model_metadata", None, False),
    "ModelReady": ("model_ready", None, False),
}


class _NoService:
    """Metrics and gate for servicers without a PredictionService (they go nowhere)."""

    def __init__(self) -> None:
        self.metrics = ServingMetrics()
        self.gate = RequestGate()

    def begin(self, entrypoint: str, api: str = "", model: str = "", tf_api: str | None = None) -> Admission:
        return Admission(self.metrics, self.gate, entrypoint, api, model, tf_api)


@functools.cache
def _no_service() -> _NoService:
    return _NoService()


def rpc(method: Method) -> Method:
    """Run a servicer method; map `ServingError` and unexpected exceptions to a status.

    Also, on a servicer whose `_service` is a `PredictionService`, admits the
    call through its `RequestGate` (UNAVAILABLE while draining, RESOURCE_EXHAUSTED past the
    per-model bound) and records its metrics.
    """
    api, tf_api, bounded = _METHODS.get(method.__name__, (method.__name__, None, False))

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        service = getattr(self, "_service", None)
        if service is None:  # a bare servicer: error mapping only
            service = _no_service()
        model = request_model_name(request)
        admission = service.begin("grpc", api, model, tf_api)
        error: ServingError | None = None
        try:
            admission.admit(model, bounded)
            try:
                return await method(self, request, context)
            finally:
                admission.leave()
        except ServingError as err:
            error = err
            code, message = to_grpc_status(err)
        except (asyncio.CancelledError, grpc.aio.AbortError):
            remaining = context.time_remaining()
            expired = remaining is not None and remaining <= _DEADLINE_TOLERANCE_SECONDS
            error = ServingError(Code.DEADLINE_EXCEEDED if expired else Code.CANCELLED, "RPC ended by the client")
            raise
        except Exception as exc:  # a bug: answer, log, keep serving
            log.exception("Unexpected error in %s", method.__name__)
            code, message = grpc.StatusCode.INTERNAL, truncate(f"{type(exc).__name__}: {exc}")
            error = ServingError(Code.INTERNAL, message)
        finally:
            admission.finish(error)
        await context.abort(code, message)

    return wrapper


def deadline_of(context: grpc.aio.ServicerContext) -> float | None:
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining


def model_spec(request: Any) -> ModelSpec:
    """The request's `model_spec`, or INVALID_ARGUMENT `Missing ModelSpec`."""
    if not request.HasField("model_spec"):
        raise ServingError(Code.INVALID_ARGUMENT, "Missing ModelSpec")
    return spec_from_proto(request.model_spec)


def spec_from_proto(spec: Any) -> ModelSpec:
    choice = spec.WhichOneof("version_choice")
    return ModelSpec(
        name=spec.name,
        version=spec.version.value if choice == "version" else None,
        label=spec.version_label if choice == "version_label" else None,
        signature_name=spec.signature_name,
    )


def echo_spec(target: Any, name: str, version: int, signature_name: str | None = None) -> None:
    """Fill a response's `model_spec` like TF Serving's `MakeModelSpec`."""
    target.name = name
    target.version.value = version
    if signature_name is not None:
        target.signature_name = signature_name or DEFAULT_SIGNATURE


def _label(label: bytes) -> str:
    return label.decode("utf-8", "replace")


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, service: PredictionService, *, tensor_content: bool = False) -> None:
        self._service = service
        self._tensor_content = tensor_content

    @rpc
    async def Predict(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        spec = model_spec(request)
        inputs = request.inputs
        name = request.model_spec.name
        tensor_content = self._tensor_content

        claim = self._service.budget.claim()

        def decode(signature: Signature) -> dict[str, Any]:
            return decode_inputs(inputs, signature.inputs, claim)

        def encode(result: PredictResult) -> Any:
            response = predict_pb2.PredictResponse()
            echo_spec(response.model_spec, name, result.version, result.signature_name)
            encode_outputs(result.outputs, response.outputs, tensor_content=tensor_content)
            return response

        return await self._service.predict(
            spec,
            decode,
            output_filter=list(request.output_filter),
            deadline=deadline_of(context),
            api="grpc",
            encode=encode,
            small=request.ByteSize() <= SMALL_REQUEST_BYTES,  # batched fast path
            claim=claim,
        )

    @rpc
    async def Classify(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        spec = model_spec(request)
        result = await self._service.classify(
            spec, serialized_examples(request.input), deadline=deadline_of(context)
        )
        response = classification_pb2.ClassificationResponse()
        echo_spec(response.model_spec, request.model_spec.name, result.version, result.signature_name)
        await _off_loop_if_big(len(result.classifications), _fill_classifications, response.result,
                               result.classifications)
        return response

    @rpc
    async def Regress(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        spec = model_spec(request)
        result = await self._service.regress(
            spec, serialized_examples(request.input), deadline=deadline_of(context)
        )
        response = regression_pb2.RegressionResponse()
        echo_spec(response.model_spec, request.model_spec.name, result.version, result.signature_name)
        await _off_loop_if_big(len(result.values), _fill_regressions, response.result, result.values)
        return response

    @rpc
    async def MultiInference(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        tasks = list(request.tasks)
        if not tasks or not tasks[0].model_spec.name:
            # TF Serving looks the servable up with the first task's (or an empty) spec.
            raise ServingError(Code.INVALID_ARGUMENT, "ModelSpec has no name specified.")
        name = tasks[0].model_spec.name
        results = await self._service.multi_inference(
            spec_from_proto(tasks[0].model_spec), tasks, serialized_examples(request.input),
            deadline=deadline_of(context))
        response = inference_pb2.MultiInferenceResponse()
        for result in results:
            result_proto = response.results.add()
            if isinstance(result, ClassifyResult):
                _fill_classifications(result_proto.classification_result, result.classifications)
            else:
                _fill_regressions(result_proto.regression_result, result.values)
            echo_spec(result_proto.model_spec, name, result.version, result.signature_name)
        return response

    @rpc
    async def GetModelMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        spec = model_spec(request)
        if not request.metadata_field:
            raise ServingError(
                Code.INVALID_ARGUMENT, "GetModelMetadataRequest must specify at least one metadata_field"
            )
        for field in request.metadata_field:
            if field != SIGNATURE_DEF_FIELD:
                raise ServingError(Code.INVALID_ARGUMENT, f"Metadata field {field} is not supported")
        name, version, signature_def_map = await self._service.metadata(spec, deadline=deadline_of(context))
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        echo_spec(response.model_spec, name, version)
        response.metadata[SIGNATURE_DEF_FIELD].Pack(signature_def_map)
        return response


async def _off_loop_if_big(rows: int, fill: Callable[..., None], *args: Any) -> None:
    """Fill a response on a worker thread when it has many rows (a Python loop of seconds
    on the event loop would stall every other client)."""
    if rows <= _FILL_ON_LOOP_ROWS:
        fill(*args)
    else:
        await asyncio.to_thread(fill, *args)


def _fill_classifications(target: Any, classifications: list[list[tuple[bytes, float]]]) -> None:
    for row in classifications:
        classes = target.classifications.add().classes
        for label, score in row:
            classes.add(label=_label(label), score=score)


def _fill_regressions(target: Any, values: list[float]) -> None:
    for value in values:
        target.regressions.add(value=value)


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    """GetModelStatus and HandleReloadConfigRequest.

    `metric_value(name)` (optional) reads an int64 metric by its TF Serving name for
    `ReloadConfigRequest.metric_names`; unknown names count as 0, as in TF Serving.
    """

    def __init__(self, service: PredictionService, metric_value: Callable[[str], int] | None = None) -> None:
        self._service = service
        self._metric_value = metric_value
        self._reload_lock = asyncio.Lock()

    @rpc
    async def GetModelStatus(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        if not request.HasField("model_spec"):
            raise ServingError(Code.INVALID_ARGUMENT, "Missing ModelSpec")
        spec = request.model_spec
        version = spec.version.value if spec.HasField("version") else None
        # TF Serving answers an empty name with NOT_FOUND (no versions), not a name error.
        statuses = self._service.status(spec.name, version)
        response = get_model_status_pb2.GetModelStatusResponse()
        for status in statuses:
            entry = response.model_version_status.add(version=status.version, state=int(status.state))
            entry.status.error_code = int(status.error_code)
            entry.status.error_message = status.error_message
        return response

    def _metrics(self, names: Any) -> dict[str, int]:
        values: dict[str, int] = {}
        for name in names:
            try:
                values[name] = int(self._metric_value(name)) if self._metric_value else 0
            except Exception:  # a metric we cannot read counts as 0, as in TF Serving
                values[name] = 0
        return values

    @rpc
    async def HandleReloadConfigRequest(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        config = request.config
        error: ServingError | None = None
        async with self._reload_lock:
            before = self._metrics(request.metric_names)
            if config.WhichOneof("config") != "model_config_list":
                error = ServingError(
                    Code.INVALID_ARGUMENT,
                    "ServerModelConfig type not supported by HandleReloadConfigRequest. "
                    "Only ModelConfigList is currently supported",
                )
            else:
                for index, model in enumerate(config.model_config_list.config):
                    log.info(
                        "Config entry index: %d path: %s name: %s platform: %s",
                        index, model.base_path, model.name, model.model_platform,
                    )
                remaining = context.time_remaining()
                wait = (
                    DEFAULT_RELOAD_WAIT_SECONDS if remaining is None
                    else max(0.0, remaining - _DEADLINE_MARGIN_SECONDS)
                )
                try:
                    await self._service.reload_config(to_model_configs(config), wait_timeout=wait)
                except ServingError as err:
                    error = err
            after = self._metrics(request.metric_names)
        if error is not None:
            log.error("ReloadConfig failed: %s", error.message)
        response = model_management_pb2.ReloadConfigResponse()
        for name, value in after.items():
            response.metric.add(name=name, int64_value_increase=value - before.get(name, 0))
        if error is not None:
            # The gRPC status equals response.status (a failed RPC carries no body).
            response.status.error_code = int(error.code)
            response.status.error_message = error.message
            raise error
        return response
