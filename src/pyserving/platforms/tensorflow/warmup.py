"""Model warmup: replay ``<version>/assets.extra/tf_serving_warmup_requests`` while the
version is LOADING, so it turns AVAILABLE only once its first runs are behind it.

What TF Serving does (``servables/tensorflow/saved_model_warmup{,_util}.cc``), and so
this module:

- No file: log ``No warmup data file found at <path>`` and succeed.
- The file is a TFRecord file (read with TF's own record reader); each record a serialized
  ``tensorflow.serving.PredictionLog``. Its ``predict_log``, ``classify_log``,
  ``regress_log`` or ``multi_inference_log`` request is run against the servable being
  loaded (the request's model name and version are irrelevant; its signature name is
  honoured); the logged response is ignored. With batching, that servable is the batching
  wrapper (TF Serving wraps the session before warmup), so warmup requests are batched. A
  record with no log set does nothing.
  ``session_run_log`` and ``predict_streamed_log`` fail with UNIMPLEMENTED
  ``Unsupported log_type for warmup: <field number>``.
- Each record is replayed ``num_request_iterations`` times (the flag
  ``--num_request_iterations_for_warmup``; 0 or less means 1), records in file order, one
  at a time, with no deadline.
- Requests with and without a deadline share the TF executors this warms (the TF
  platform passes deadlines as per-run RunOptions), so the first real request after
  AVAILABLE, REST (which always carries ``--rest_api_timeout_in_ms``) or gRPC, is warm.
- Any failure fails the whole load (the version ends in END with that error; a version
  already serving is untouched): more than 1000 records (INVALID_ARGUMENT ``Number of
  warmup records exceeds the maximum (1000) at <path>``), a record that does not parse
  (INVALID_ARGUMENT ``Failed to parse warmup record: ...``), a record whose request fails
  (its own code and message, plus which record it was), a damaged file (DATA_LOSS
  ``<reader message>. Please verify your warmup data is in TFRecord format.``).
- Log lines, as TF Serving's: ``Starting to read warmup data for model at <path> with
  model-warmup-options <options>`` and ``Finished reading warmup data for model at <path>.
  Number of warmup records read: N. Elapsed time (microseconds): T.``

Metrics hook: ``WarmupOptions.on_warmup(model_path, status, latency_us, records)`` is
called once per warmup that found a file, whatever its outcome, with the version
directory, ``"OK"`` or ``"<CODE>: <message>"`` (TF's ``Status::ToString``), the wall time
in microseconds and the number of records read. It feeds
``/tensorflow/serving/model_warmup_latency`` and ``model_warmup_records_read``, labelled
``model_path`` and ``status``. (TF Serving records those two metrics only when the file
was read to its end or a read error stopped it; here failed warmups are counted too.) A
callback that raises is logged and ignored.

Request semantics are not written again here: inputs are decoded by the tensor codec
(``protos/tensor_codec.py``), and signature lookup, examples, classify / regress and the
MultiInference checks are those of live requests (``platforms/inference.py``). Works with
any `Servable` (the TensorFlow and the TFLite platforms both call `run_warmup` at the end
of ``load()``; for a batched SavedModel the batching loader calls it once it has wrapped
the servable).

Thread-safety: `run_warmup` blocks; it is called from the loading thread, before the
servable is visible to any request.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

from pyserving.errors import Code, ServingError
from pyserving.platforms import inference
from pyserving.protos.tensor_codec import decode_inputs

__all__ = [
    "MAX_WARMUP_RECORDS",
    "WARMUP_DIRECTORY",
    "WARMUP_FILENAME",
    "WarmupCallback",
    "WarmupOptions",
    "run_warmup",
    "warmup_file",
]

log = logging.getLogger("pyserving.warmup")

WARMUP_DIRECTORY = "assets.extra"
WARMUP_FILENAME = "tf_serving_warmup_requests"
MAX_WARMUP_RECORDS = 1000

# (model_path, status, latency_us, records_read)
WarmupCallback = Callable[[str, str, int, int], None]

_RECORD_PREVIEW_BYTES = 64


@dataclass(frozen=True)
class WarmupOptions:
    """How to warm a version up. ``num_request_iterations`` <= 0 means 1;
    ``method_name_check`` is ``--enable_signature_method_name_check``, which TF Serving
    applies to warmup requests as to live ones."""

    num_request_iterations: int = 1
    on_warmup: WarmupCallback | None = None
    method_name_check: bool = False

    @classmethod
    def from_flags(
        cls,
        enable_model_warmup: bool = True,
        num_request_iterations_for_warmup: int = 0,
        on_warmup: WarmupCallback | None = None,
        enable_signature_method_name_check: bool = False,
    ) -> WarmupOptions | None:
        """The options for the server flags, or None when ``--enable_model_warmup=false``."""
        if not enable_model_warmup:
            return None
        return cls(num_request_iterations_for_warmup, on_warmup, enable_signature_method_name_check)

    def describe(self) -> str:
        """The options as TF Serving logs its ``ModelWarmupOptions`` (set fields only)."""
        if self.num_request_iterations > 0:
            return f"num_request_iterations {{ value: {self.num_request_iterations} }}"
        return ""


def warmup_file(export_dir: str) -> str:
    """``<export_dir>/assets.extra/tf_serving_warmup_requests``."""
    return os.path.join(export_dir, WARMUP_DIRECTORY, WARMUP_FILENAME)


def run_warmup(servable: Any, export_dir: str, options: WarmupOptions | None = None) -> int:
    """Replay the version's warmup file against ``servable``; return the records read.

    Raises `ServingError` (and nothing else) when warmup fails; the caller then unloads
    the servable and fails the load.
    """
    options = options or WarmupOptions()
    path = warmup_file(export_dir)
    if not os.path.exists(path):
        log.info("No warmup data file found at %s", path)
        return 0
    iterations = max(1, options.num_request_iterations)
    log.info(
        "Starting to read warmup data for model at %s with model-warmup-options %s",
        path,
        options.describe(),
    )
    start = time.monotonic()
    records = 0
    error: ServingError | None = None
    try:
        for record in _read_records(path):
            records += 1
            if records > MAX_WARMUP_RECORDS:
                raise ServingError(
                    Code.INVALID_ARGUMENT,
                    f"Number of warmup records exceeds the maximum ({MAX_WARMUP_RECORDS}) "
                    f"at {path}",
                )
            prediction_log = _parse(record, path)
            for _ in range(iterations):
                _replay_one(servable, prediction_log, records, path, None, options.method_name_check)
    except ServingError as e:
        error = e
    except Exception as e:  # noqa: BLE001 - a warmup bug must fail the load, not the server
        error = ServingError(Code.INTERNAL, f"Warmup failed at {path}: {type(e).__name__}: {e}")
    latency_us = int((time.monotonic() - start) * 1e6)
    _report(options, export_dir, error, latency_us, records)
    if error is not None:
        raise error
    log.info(
        "Finished reading warmup data for model at %s. Number of warmup records read: %d. "
        "Elapsed time (microseconds): %d.",
        path,
        records,
        latency_us,
    )
    return records


# ---------------------------------------------------------------------------- reading


def _read_records(path: str) -> Iterator[bytes]:
    """The file's records, through TF's record reader (the one TF Serving uses).

    A damaged file raises DATA_LOSS with TF Serving's hint; other read errors keep TF's
    code (NOT_FOUND, PERMISSION_DENIED, FAILED_PRECONDITION...).
    """
    import tensorflow as tf
    from tensorflow.python.util import deprecation

    try:
        with deprecation.silence():
            iterator = tf.compat.v1.io.tf_record_iterator(path)
        yield from iterator
    except tf.errors.OpError as e:
        try:
            code = Code(e.error_code)
        except ValueError:
            code = Code.UNKNOWN
        message = e.message
        if code == Code.DATA_LOSS:
            message += ". Please verify your warmup data is in TFRecord format."
        raise ServingError(code, message) from None


def _parse(record: bytes, path: str) -> Any:
    from google.protobuf.message import DecodeError
    from tensorflow_serving.apis import prediction_log_pb2

    try:
        return prediction_log_pb2.PredictionLog.FromString(record)
    except (DecodeError, ValueError, RuntimeError):
        preview = record[:_RECORD_PREVIEW_BYTES]
        more = "..." if len(record) > _RECORD_PREVIEW_BYTES else ""
        raise ServingError(
            Code.INVALID_ARGUMENT,
            f"Failed to parse warmup record: {preview!r}{more} from {path}",
        ) from None


# ---------------------------------------------------------------------------- replay


def _replay_one(
    servable: Any, prediction_log: Any, number: int, path: str, timeout_ms: int | None,
    method_check: bool = False,
) -> None:
    """Run one record's request; errors keep their code and say which record it was."""
    try:
        _dispatch(servable, prediction_log, timeout_ms, method_check)
    except ServingError as e:
        raise ServingError(
            e.code, f"{e.message} [while replaying warmup record {number} from {path}]"
        ) from None


def _dispatch(servable: Any, prediction_log: Any, timeout_ms: int | None, method_check: bool) -> None:
    kind = prediction_log.WhichOneof("log_type")
    if kind == "predict_log":
        _predict(servable, prediction_log.predict_log.request, timeout_ms, method_check)
    elif kind == "classify_log":
        _classify(servable, prediction_log.classify_log.request, timeout_ms, method_check)
    elif kind == "regress_log":
        _regress(servable, prediction_log.regress_log.request, timeout_ms, method_check)
    elif kind == "multi_inference_log":
        _multi_inference(servable, prediction_log.multi_inference_log.request, timeout_ms, method_check)
    elif kind is not None:  # session_run_log, predict_streamed_log, anything newer
        number = prediction_log.DESCRIPTOR.fields_by_name[kind].number
        raise ServingError(Code.UNIMPLEMENTED, f"Unsupported log_type for warmup: {number}")


def _signature(servable: Any, name: str, method: str, method_check: bool) -> Any:
    sig = inference.find_signature(servable, name, method)
    if method_check:
        inference.check_method_name(sig, method)
    return sig


def _predict(servable: Any, request: Any, timeout_ms: int | None, method_check: bool) -> None:
    sig = _signature(servable, request.model_spec.signature_name, "predict", method_check)
    inputs = decode_inputs(request.inputs, sig.inputs)
    servable.run(sig, inputs, list(request.output_filter), timeout_ms)


def _runner(servable: Any, timeout_ms: int | None) -> inference.Runner:
    return lambda sig, inputs, output_filter: servable.run(sig, inputs, output_filter, timeout_ms)


def _classify(
    servable: Any, request: Any, timeout_ms: int | None, method_check: bool, signature_name: str | None = None
) -> None:
    name = request.model_spec.signature_name if signature_name is None else signature_name
    sig = _signature(servable, name, "classify", method_check)
    examples = inference.serialized_examples(request.input)()
    inference.classify(_runner(servable, timeout_ms), sig, examples)


def _regress(
    servable: Any, request: Any, timeout_ms: int | None, method_check: bool, signature_name: str | None = None
) -> None:
    name = request.model_spec.signature_name if signature_name is None else signature_name
    sig = _signature(servable, name, "regress", method_check)
    examples = inference.serialized_examples(request.input)()
    inference.regress(_runner(servable, timeout_ms), sig, examples)


def _multi_inference(servable: Any, request: Any, timeout_ms: int | None, method_check: bool) -> None:
    """TF Serving's ``TensorFlowMultiInferenceRunner`` checks, then each task in turn."""
    tasks = inference.multi_inference_tasks(request.tasks, servable.signatures, method_check=method_check)
    for signature, method in tasks:
        if method == inference.CLASSIFY_METHOD_NAME:
            _classify(servable, request, timeout_ms, method_check, signature)
        else:
            _regress(servable, request, timeout_ms, method_check, signature)


def _report(
    options: WarmupOptions,
    export_dir: str,
    error: ServingError | None,
    latency_us: int,
    records: int,
) -> None:
    if options.on_warmup is None:
        return
    status = "OK" if error is None else str(error)
    try:
        options.on_warmup(export_dir, status, latency_us, records)
    except Exception:  # noqa: BLE001 - metrics must never fail a load
        log.exception("Warmup metrics callback failed for %s", export_dir)
