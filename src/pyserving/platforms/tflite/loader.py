"""The TFLite platform: serve a version folder's ``model.tflite`` through the TFLite
interpreter, as TF Serving does with ``--prefer_tflite_model`` (``tflite_session.cc``).

Which folders: the platform registry picks this loader for a ``model_platform:
"tensorflow"`` version folder holding ``model.tflite`` when ``--prefer_tflite_model`` is
set (else ``saved_model.pb`` is served, as in TF Serving), and also, unlike TF Serving,
when the folder has ``model.tflite`` but no ``saved_model.pb``/``.pbtxt`` (TF Serving
fails that load; serving the only model there is seems the better answer). A model
config may also name ``model_platform: "tflite"`` directly.

Signatures, in this order of preference:

1. SignatureDefs stored in the model's ``signature_defs_metadata`` metadata buffer (TF
   Serving's format, see `_flatbuffer`), as TF Serving serves them: tensor names that do
   not exist are retried without their ``:N`` suffix (``tflite_input:0`` ->
   ``tflite_input``) and shown that way in the metadata; a name that still matches no
   model input/output fails the load (INTERNAL).
2. Otherwise the model's own signatures (``Interpreter.get_signature_list()``: what TF
   2.x converters write), each run through its signature runner, so multi-signature
   models with several subgraphs work. TF Serving ignores these and serves (3) instead,
   with tensor names as aliases (``serving_default_x``, ``StatefulPartitionedCall``);
   here the model's own names and aliases are served.
3. Otherwise one ``serving_default`` made from the model's inputs and outputs, aliases
   being tensor names without ``:N`` (TF Serving's "mock" signature).

Shapes shown are the model's ``shape_signature`` (-1 where a dimension is dynamic); TF
Serving shows the converter's placeholder 1 there. Dtypes map to TF's (``DT_FLOAT``,
``DT_INT8``, ``DT_STRING``...). Method name: ``tensorflow/serving/predict``.

Running: inputs are checked like the TF platform's (`_validation`: names, dtypes, known
dimensions past the batch one), then each input tensor is resized to the request's shape
(so a [1,1] model answers a batch of 3, as in TF Serving) and the model invoked on one
interpreter of the pool. The pool holds ``num_tflite_pools`` x
``num_tflite_interpreters_per_pool`` single-threaded interpreters (TF Serving's
``num_tflite_pools`` interpreters; its per-pool batch scheduler is not reproduced: use
``--enable_batching``). ``timeout_ms`` bounds the wait for a free interpreter; a running
invoke cannot be interrupted (TF Serving's TFLite path ignores the timeout altogether).

Runtime choice (measured on this 2-core machine, TF 2.21, ai-edge-litert 2.3.0, both with
their default XNNPACK delegate, one thread per interpreter; best of 5 interleaved rounds):

===============================================  ==============  ==================
                                                 ai-edge-litert  tf.lite.Interpreter
===============================================  ==============  ==================
half_plus_two tflite, batch 1, set+invoke+get    1.0 us          1.0 us
small CNN (2 conv, 28x28x1), batch 1             25.9 us         25.7 us
same CNN, batch 32                               764 us          766 us
same CNN, batch 32, 2 threads x 2 interpreters   2514 calls/s    2566 calls/s
  (1 thread: 1297 calls/s for both: both release the GIL)
import, fresh process                            0.06 s          2.2 s (all of TF)
import, TF already loaded (as in the server)     0.005 s         0
installed size                                   59 MB (extra)   19 MB inside TF
===============================================  ==============  ==================

Speed is the same (same kernels); neither runs Select-TF-op (Flex) models. The choice is
ai-edge-litert: it is Google's maintained TFLite runtime, while ``tf.lite.Interpreter``
warns on every construction that it is deprecated and scheduled for deletion from TF, and
a TFLite-only deployment need not depend on TF's interpreter. Its cost is an optional
59 MB dependency (``pip install 'pyserving[tflite]'``); without it, TFLite versions fail
to load with FAILED_PRECONDITION naming the package, and every other model is unaffected.

Warmup (``assets.extra/tf_serving_warmup_requests``) runs at the end of `TfLiteLoader.load`
exactly as for SavedModels (`pyserving.platforms.tensorflow.warmup`).

Thread-safety: `TfLiteServable.run` may be called from many threads at once (each run
holds one interpreter for its duration); `signatures` is immutable. `TfLiteLoader.load` /
``unload`` follow the `Loader` contract (never concurrent for one loader).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Mapping, Sequence

import numpy as np
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import get_model_metadata_pb2

from pyserving.errors import Code, ServingError
from pyserving.platforms import TFLITE_MODEL_FILENAME
from pyserving.platforms.base import DEFAULT_SIGNATURE, Signature
from pyserving.platforms._dtypes import tf_dtype_name
from pyserving.platforms.tensorflow._signature import describe_tensors, signature_from_def
from pyserving.platforms.tensorflow._validation import bind_inputs, select_outputs
from pyserving.platforms.tensorflow.warmup import WarmupCallback, WarmupOptions, run_warmup
from pyserving.platforms.tflite._flatbuffer import signature_defs_from_metadata
from pyserving.platforms.tflite.interpreter_pool import (
    RUNTIME_NAME,
    InterpreterPool,
    InterpreterSlot,
    runtime_version,
)

__all__ = ["TfLiteLoader", "TfLiteServable"]

log = logging.getLogger("pyserving.tflite")

PREDICT_METHOD_NAME = "tensorflow/serving/predict"
_DEFAULT_POOLS = os.cpu_count() or 1


# ---------------------------------------------------------------------------- loader


class TfLiteLoader:
    """Loads one version folder's ``model.tflite`` into a pool of interpreters."""

    def __init__(
        self,
        export_dir: str,
        num_tflite_pools: int = _DEFAULT_POOLS,
        num_tflite_interpreters_per_pool: int = 1,
        enable_model_warmup: bool = True,
        num_request_iterations_for_warmup: int = 0,
        on_warmup: WarmupCallback | None = None,
        enable_signature_method_name_check: bool = False,
    ) -> None:
        """Arguments are the server flags of the same names (pool sizes below 1 count as 1)
        and the warmup metrics hook (`warmup.WarmupOptions`)."""
        self._export_dir = os.fspath(export_dir)
        self._num_interpreters = max(1, num_tflite_pools) * max(1, num_tflite_interpreters_per_pool)
        self._warmup = WarmupOptions.from_flags(
            enable_model_warmup, num_request_iterations_for_warmup, on_warmup, enable_signature_method_name_check
        )
        self._servable: TfLiteServable | None = None

    @property
    def export_dir(self) -> str:
        return self._export_dir

    def load(self) -> None:
        """Load (and warm up) the model; raises `ServingError`, leaving nothing allocated."""
        if self._servable is not None:
            return
        path = os.path.join(self._export_dir, TFLITE_MODEL_FILENAME)
        try:
            with open(path, "rb") as f:
                model = f.read()
        except FileNotFoundError:
            raise ServingError(
                Code.NOT_FOUND, f"Could not find {TFLITE_MODEL_FILENAME} in {self._export_dir}"
            ) from None
        except OSError as e:
            raise ServingError(Code.FAILED_PRECONDITION, f"Cannot read {path}: {e}") from None
        servable = TfLiteServable(model, self._export_dir, self._num_interpreters)
        if self._warmup is not None:
            try:
                run_warmup(servable, self._export_dir, self._warmup)
            except BaseException:
                servable.close()
                raise
        self._servable = servable
        log.info(
            "Loaded TFLite model %s with %d interpreter(s) (%s %s); signatures: %s",
            path,
            self._num_interpreters,
            RUNTIME_NAME,
            runtime_version(),
            ", ".join(servable.signatures),
        )

    def unload(self) -> None:
        servable, self._servable = self._servable, None
        if servable is not None:
            servable.close()

    def servable(self) -> TfLiteServable:
        """The loaded servable; FAILED_PRECONDITION if not loaded."""
        if self._servable is None:
            raise ServingError(
                Code.FAILED_PRECONDITION, f"TFLite model at {self._export_dir} is not loaded"
            )
        return self._servable


# ---------------------------------------------------------------------------- servable


@dataclass(frozen=True)
class _Binding:
    """How a signature reaches the interpreter.

    ``runner_key`` None: primary subgraph by tensor index, ``inputs`` / ``outputs`` hold
    tensor indices; else the model's signature ``runner_key``, and they hold its names.
    ``inputs`` follows the `Signature`'s input order; ``outputs`` maps output aliases.
    """

    signature: Signature
    sig_def: Any
    runner_key: str | None
    inputs: tuple[Any, ...]
    outputs: Mapping[str, Any]


class TfLiteServable:
    """A loaded TFLite model: its signatures and a thread-safe way to run them."""

    # TF Serving runs a TFLite model through a `TfLiteSession`, a Session like any other,
    # so its runs are labelled "TF1" too.
    runtime_name = "TF1"
    model_platform = "tensorflow_lite"  # the Open Inference Protocol's platform name

    def __init__(self, model: bytes, export_dir: str, num_interpreters: int) -> None:
        """Build the pool and the signatures; raises `ServingError` on a bad model."""
        self._export_dir = export_dir
        try:
            self._pool = InterpreterPool(model, num_interpreters)
        except ServingError:
            raise
        except Exception as e:  # noqa: BLE001 - the runtime raises ValueError/RuntimeError
            raise ServingError(
                Code.INVALID_ARGUMENT,
                f"Cannot build a TFLite interpreter from {os.path.join(export_dir, TFLITE_MODEL_FILENAME)}: "
                f"{type(e).__name__}: {e}",
            ) from None
        try:
            with self._pool.acquire() as slot:
                bindings = _bindings(model, slot)
        except ServingError as e:
            self._pool.close()
            raise ServingError(
                e.code, f"Invalid TFLite model at {export_dir}: {e.message}"
            ) from None
        self._bindings: Mapping[str, _Binding] = MappingProxyType(bindings)
        self._signatures: Mapping[str, Signature] = MappingProxyType(
            {name: b.signature for name, b in bindings.items()}
        )
        self._inputs_text = {name: describe_tensors(b.signature.inputs) for name, b in bindings.items()}

    @property
    def signatures(self) -> Mapping[str, Signature]:
        return self._signatures

    @property
    def export_dir(self) -> str:
        return self._export_dir

    @property
    def num_interpreters(self) -> int:
        return self._pool.size

    def signature_def_map(self) -> get_model_metadata_pb2.SignatureDefMap:
        """The ``tensorflow.serving.SignatureDefMap`` of the served signatures; built once,
        the same message every call (callers must not mutate it)."""
        result = getattr(self, "_signature_def_map", None)
        if result is None:
            result = get_model_metadata_pb2.SignatureDefMap()
            for name, binding in self._bindings.items():
                result.signature_def[name].CopyFrom(binding.sig_def)
            self._signature_def_map = result
        return result

    def run(
        self,
        signature: Signature,
        inputs: Mapping[str, np.ndarray],
        output_filter: Sequence[str] = (),
        timeout_ms: int | None = None,
    ) -> dict[str, np.ndarray]:
        """Run ``signature`` (looked up by name); see `Servable.run`. ``timeout_ms`` bounds
        the wait for a free interpreter (None or 0: no bound; negative: already expired).
        DT_STRING outputs are object arrays of bytes."""
        binding = self._bindings.get(signature.name)
        if binding is None:
            raise ServingError(
                Code.FAILED_PRECONDITION, f'Serving signature key "{signature.name}" not found.'
            )
        sig = binding.signature
        feeds = [np.ascontiguousarray(a) for a in bind_inputs(sig, inputs, {})]
        fetch = select_outputs(sig, output_filter)
        if timeout_ms is not None and timeout_ms < 0:
            raise ServingError(Code.DEADLINE_EXCEEDED, "Deadline exceeded before running")
        wait = timeout_ms / 1000.0 if timeout_ms else None
        out_keys = tuple(binding.outputs[alias] for alias in fetch)
        with self._pool.acquire(wait) as slot:
            if binding.runner_key is None:
                results = self._run_tensors(slot, binding, feeds, out_keys)
            else:
                results = self._run_runner(slot, binding, feeds, out_keys)
        return {alias: _output_array(r) for alias, r in zip(fetch, results)}

    def close(self) -> None:
        """Release the interpreters; later `run` calls raise UNAVAILABLE. Idempotent."""
        self._pool.close()

    # -- internals -----------------------------------------------------------------------

    def _feed_error(self, binding: _Binding, error: Exception) -> ServingError:
        name = binding.signature.name
        return ServingError(
            Code.INVALID_ARGUMENT,
            f'Cannot feed inputs of signature "{name}" to the TFLite model: {str(error).rstrip(".")}. '
            f"Expected inputs: {self._inputs_text[name]}",
        )

    def _run_tensors(
        self, slot: InterpreterSlot, binding: _Binding, feeds: list[np.ndarray], out_keys: tuple[Any, ...]
    ) -> list[np.ndarray]:
        try:
            return slot.run_tensors(binding.inputs, feeds, out_keys)
        except (ValueError, TypeError) as e:
            raise self._feed_error(binding, e) from None
        except RuntimeError as e:
            raise self._runtime_error(binding, e) from None

    def _run_runner(
        self, slot: InterpreterSlot, binding: _Binding, feeds: list[np.ndarray], out_keys: tuple[Any, ...]
    ) -> list[np.ndarray]:
        assert binding.runner_key is not None
        try:
            return slot.run_signature(binding.runner_key, dict(zip(binding.inputs, feeds)), out_keys)
        except (ValueError, TypeError) as e:
            raise self._feed_error(binding, e) from None
        except RuntimeError as e:
            raise self._runtime_error(binding, e) from None

    def _runtime_error(self, binding: _Binding, error: RuntimeError) -> ServingError:
        # Resizing to a shape the model cannot take fails in the runtime's "prepare" step.
        text = str(error).strip().rstrip(".")
        name = binding.signature.name
        return ServingError(
            Code.INVALID_ARGUMENT if "prepare" in text.lower() else Code.INTERNAL,
            f'Failed to run signature "{name}" of the TFLite model: {text}. '
            f"Expected inputs: {self._inputs_text[name]}",
        )


def _output_array(result: Any) -> np.ndarray:
    array = result if isinstance(result, np.ndarray) else np.asarray(result)
    if array.dtype.kind in "SU":
        return array.astype(object)
    return array


# ---------------------------------------------------------------------------- signatures


def _dtype_enum(dtype: Any) -> int:
    name = tf_dtype_name(np.dtype(dtype))
    return int(types_pb2.DataType.Value(name)) if name in types_pb2.DataType.keys() else 0


def _tensor_info(info: Any, details: Mapping[str, Any]) -> None:
    """Fill a ``TensorInfo`` from interpreter tensor details (dynamic dims as -1)."""
    info.name = details["name"]
    info.dtype = _dtype_enum(details["dtype"])
    shape = details.get("shape_signature")
    if shape is None or len(shape) != len(details["shape"]):
        shape = details["shape"]
    for size in shape:
        info.tensor_shape.dim.add().size = int(size)


def _bindings(model: bytes, slot: InterpreterSlot) -> dict[str, _Binding]:
    """The served signatures (see the module docstring for the order of preference)."""
    try:
        stored = signature_defs_from_metadata(model)
    except ValueError as e:
        raise ServingError(Code.INVALID_ARGUMENT, f"Invalid SignatureDefs found in TfLite model: {e}") from None
    interpreter = slot.interpreter
    if stored:
        return _stored_bindings(stored, interpreter)
    if interpreter.get_signature_list():
        return _runner_bindings(slot)
    log.warning("No signature def found in TFLite model. Generating one.")
    return _mock_bindings(interpreter)


def _stored_bindings(stored: Mapping[str, Any], interpreter: Any) -> dict[str, _Binding]:
    in_index = {d["name"]: int(d["index"]) for d in interpreter.get_input_details()}
    out_index = {d["name"]: int(d["index"]) for d in interpreter.get_output_details()}
    result = {}
    for name, sig_def in stored.items():
        inputs = {a: _fix_name(in_index, info, f"Signature input {a}") for a, info in sig_def.inputs.items()}
        outputs = {a: _fix_name(out_index, info, f"Signature output {a}") for a, info in sig_def.outputs.items()}
        signature = signature_from_def(name, sig_def)
        result[name] = _Binding(
            signature, sig_def, None, tuple(inputs[a] for a in signature.inputs), outputs
        )
    return result


def _fix_name(index: Mapping[str, int], info: Any, what: str) -> int:
    """TF Serving's ``FixTfLiteTensorName``: the tensor, else its name without ``:N``."""
    if info.name in index:
        return index[info.name]
    legacy = info.name.split(":", 1)[0]
    if legacy in index:
        info.name = legacy
        return index[legacy]
    raise ServingError(Code.INTERNAL, f"{what} references an unknown tensor '{info.name}'")


def _runner_bindings(slot: InterpreterSlot) -> dict[str, _Binding]:
    result = {}
    for key in slot.interpreter.get_signature_list():
        runner = slot.interpreter.get_signature_runner(key)
        in_details = runner.get_input_details()
        out_details = runner.get_output_details()
        sig_def = meta_graph_pb2.SignatureDef(method_name=PREDICT_METHOD_NAME)
        for alias, details in in_details.items():
            _tensor_info(sig_def.inputs[alias], details)
        for alias, details in out_details.items():
            _tensor_info(sig_def.outputs[alias], details)
        signature = signature_from_def(key, sig_def, list(in_details), list(out_details))
        result[key] = _Binding(
            signature, sig_def, key, tuple(signature.inputs), {a: a for a in signature.outputs}
        )
    return result


def _mock_bindings(interpreter: Any) -> dict[str, _Binding]:
    sig_def = meta_graph_pb2.SignatureDef(method_name=PREDICT_METHOD_NAME)
    inputs: dict[str, int] = {}
    outputs: dict[str, int] = {}
    for kind, details_list, target, infos in (
        ("Input", interpreter.get_input_details(), inputs, sig_def.inputs),
        ("Output", interpreter.get_output_details(), outputs, sig_def.outputs),
    ):
        for details in details_list:
            alias = details["name"].split(":", 1)[0]
            if not alias:
                raise ServingError(Code.INTERNAL, f"{kind} name missing for tensor index: {details['index']}")
            if alias in target:
                raise ServingError(
                    Code.ALREADY_EXISTS, f"{kind} tensor name: {alias} has multiple indices"
                )
            target[alias] = int(details["index"])
            _tensor_info(infos[alias], details)
    order_in, order_out = list(inputs), list(outputs)
    signature = signature_from_def(DEFAULT_SIGNATURE, sig_def, order_in, order_out)
    return {
        DEFAULT_SIGNATURE: _Binding(
            signature, sig_def, None, tuple(inputs[a] for a in signature.inputs), outputs
        )
    }
