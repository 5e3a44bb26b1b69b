"""What a Predict, Classify, Regress or MultiInference request means for a `Servable`,
independent of how the request arrived.

Two callers must agree on it exactly: the prediction service, for requests from the REST
and gRPC front ends, and warmup (`platforms/tensorflow/warmup.py`), which replays logged
requests against a version while it loads. So the rules live here, below both: which
signature a name picks (and the errors when it picks none), what a classification or
regression signature must look like, how serialized examples are fed and how the outputs
become classifications or values, and the checks on a MultiInference request's tasks.
This module needs only the `Servable` contract, numpy and the table of TF dtype names;
the protos it reads (an `Input`, MultiInference tasks) are used through their fields, never
imported. Every check raises `ServingError` with TF Serving's code and message
(`classifier.cc`, `regressor.cc`, `multi_inference.cc`), whatever the model returned.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Literal, Mapping, Sequence

import numpy as np

from pyserving.errors import Code, ServingError
from pyserving.platforms.base import DEFAULT_SIGNATURE, Servable, Signature
from pyserving.platforms._dtypes import tf_dtype_name

__all__ = [
    "Api",
    "PREDICT_METHOD_NAME",
    "CLASSIFY_METHOD_NAME",
    "REGRESS_METHOD_NAME",
    "Runner",
    "find_signature",
    "check_method_name",
    "serialized_examples",
    "string_tensor",
    "classify_input",
    "classification_rows",
    "classify",
    "regress_input",
    "regression_values",
    "regress",
    "multi_inference_tasks",
]

PREDICT_METHOD_NAME = "tensorflow/serving/predict"
CLASSIFY_METHOD_NAME = "tensorflow/serving/classify"
REGRESS_METHOD_NAME = "tensorflow/serving/regress"

Api = Literal["rest", "grpc"]
# Runs a signature: (signature, inputs, output_filter) -> outputs. The caller binds the
# servable and whatever it adds around the run (a deadline, the runtime metric).
Runner = Callable[[Signature, Mapping[str, np.ndarray], Sequence[str]], Mapping[str, Any]]


def find_signature(servable: Servable, name: str, method: str, api: Api = "grpc") -> Signature:
    """The signature `name` picks ("" = serving_default), with TF Serving's not-found
    error for that API and method (Predict's differs between REST and gRPC)."""
    sig_name = name or DEFAULT_SIGNATURE
    sig = servable.signatures.get(sig_name)
    if sig is not None:
        return sig
    if method != "predict":
        raise ServingError(Code.INVALID_ARGUMENT, f"No signature was found with the name: {sig_name}")
    if api == "rest":
        raise ServingError(Code.INVALID_ARGUMENT, f'Serving signature name: "{sig_name}" not found in signature def')
    raise ServingError(Code.FAILED_PRECONDITION, f'Serving signature key "{sig_name}" not found.')


def check_method_name(sig: Signature, method: str) -> None:
    """What `--enable_signature_method_name_check` adds (off by default, as in TF Serving,
    whose help says to leave it off for native TF2 classification and regression models,
    whose signatures all say predict): Predict runs predict, classify and regress
    signatures (else INTERNAL, as `predict_util.cc` answers); Classify only classify ones
    and Regress only regress ones (else INVALID_ARGUMENT). `method` is "predict",
    "classify" or "regress"."""
    if method == "predict":
        if sig.method_name not in (PREDICT_METHOD_NAME, CLASSIFY_METHOD_NAME, REGRESS_METHOD_NAME):
            raise ServingError(
                Code.INTERNAL,
                f"Expected prediction signature method_name to be one of {{{PREDICT_METHOD_NAME}, "
                f"{CLASSIFY_METHOD_NAME}, {REGRESS_METHOD_NAME}}}. Was: {sig.method_name}",
            )
        return
    expected, kind = (CLASSIFY_METHOD_NAME, "classification") if method == "classify" else \
        (REGRESS_METHOD_NAME, "regression")
    if sig.method_name != expected:
        raise _invalid(f"Expected {kind} signature method_name to be {expected}. Was: {sig.method_name}")


def serialized_examples(input_proto: Any) -> Callable[[], list[bytes]]:
    """A callable building one serialized tf.Example per example of a
    `tensorflow.serving.Input` (context merged in front, byte-concatenated as TF Serving
    does); INVALID_ARGUMENT `Input is empty.`"""

    def build() -> list[bytes]:
        kind = input_proto.WhichOneof("kind")
        if kind == "example_list":
            out = [e.SerializeToString() for e in input_proto.example_list.examples]
        elif kind == "example_list_with_context":
            with_context = input_proto.example_list_with_context
            context = with_context.context.SerializeToString()
            out = [context + e.SerializeToString() for e in with_context.examples]
        else:
            out = []
        if not out:
            raise ServingError(Code.INVALID_ARGUMENT, "Input is empty.")
        return out

    return build


def string_tensor(values: list[bytes]) -> np.ndarray:
    """A 1-D object array of serialized examples (the examples input's feed)."""
    arr = np.empty(len(values), dtype=object)
    arr[:] = values
    return arr


def _examples_input(sig: Signature) -> str:
    if len(sig.inputs) != 1:
        raise ServingError(Code.INVALID_ARGUMENT, "Expected one input Tensor.")
    alias, spec = next(iter(sig.inputs.items()))
    if spec.dtype != "DT_STRING":
        raise ServingError(
            Code.INVALID_ARGUMENT, f"Expected input Tensor '{alias}' of type DT_STRING (serialized tf.Example)"
        )
    return alias


def classify_input(sig: Signature) -> str:
    """The alias of a classification signature's serialized-examples input; raises
    INVALID_ARGUMENT unless it has one DT_STRING input and a `classes` or `scores` output."""
    input_alias = _examples_input(sig)
    if not ("classes" in sig.outputs or "scores" in sig.outputs):
        raise ServingError(
            Code.INVALID_ARGUMENT,
            "Expected classification signature outputs to contain classes and/or scores",
        )
    return input_alias


def _shape_text(array: np.ndarray) -> str:
    return "[" + ",".join(str(d) for d in array.shape) + "]"  # TensorShape::DebugString


def _invalid(message: str) -> ServingError:
    return ServingError(Code.INVALID_ARGUMENT, message)


def _class_output(out: Mapping[str, Any], alias: str, dtype: str, n: int) -> np.ndarray | None:
    """A classification output checked as TF Serving checks it: rank 2, `dtype`, `n` rows."""
    value = out.get(alias)
    if value is None:
        return None
    array = np.asarray(value)
    if array.ndim != 2:
        raise _invalid(f"Expected Tensor shape: [batch_size num_classes] but got {_shape_text(array)}")
    got = tf_dtype_name(array.dtype)
    if got != dtype:
        raise _invalid(f"Expected {alias} Tensor of {dtype}. Got: {got}")
    if array.shape[0] != n:
        raise _invalid(f"Expected {alias} output batch size of {n}. Got: {array.shape[0]}")
    return array


def classification_rows(out: Mapping[str, Any], n: int) -> list[list[tuple[bytes, float]]]:
    """Per example, its (label, score) pairs from a classification run's outputs.

    The outputs are checked first, with TF Serving's messages (INVALID_ARGUMENT), in its
    order: `classes` (rank 2, DT_STRING, `n` rows), then `scores` (rank 2, DT_FLOAT, `n`
    rows), then that both have as many columns. A missing output gives "" labels or 0 scores.
    """
    classes = _class_output(out, "classes", "DT_STRING", n)
    scores = _class_output(out, "scores", "DT_FLOAT", n)
    if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
        raise _invalid(
            f"Tensors class and score should match in dim_size(1). Got {classes.shape[1]} vs. {scores.shape[1]}"
        )
    k = classes.shape[1] if classes is not None else scores.shape[1] if scores is not None else 0
    labels = (
        [[v if isinstance(v, bytes) else str(v).encode() for v in row] for row in classes.tolist()]
        if classes is not None else [[b""] * k] * n
    )
    values = scores.tolist() if scores is not None else [[0.0] * k] * n
    return [list(zip(label_row, score_row)) for label_row, score_row in zip(labels, values)]


def classify(run: Runner, sig: Signature, examples: list[bytes]) -> list[list[tuple[bytes, float]]]:
    """Classify `examples` with `sig`: the input check, the run, the rows."""
    input_alias = classify_input(sig)
    out = run(sig, {input_alias: string_tensor(examples)}, ())
    return classification_rows(out, len(examples))


def regress_input(sig: Signature) -> str:
    """The alias of a regression signature's serialized-examples input; raises
    INVALID_ARGUMENT unless it has one DT_STRING input and an `outputs` output."""
    input_alias = _examples_input(sig)
    if "outputs" not in sig.outputs:
        raise ServingError(
            Code.INVALID_ARGUMENT, "Expected regression signature outputs to contain 'outputs'"
        )
    return input_alias


def regression_values(out: Mapping[str, Any], n: int) -> list[float]:
    """One value per example from a regression run's `outputs`, checked as TF Serving
    checks it (INVALID_ARGUMENT, in its order): shape [n] or [n,1], then DT_FLOAT."""
    values = np.asarray(out["outputs"])
    if not (values.ndim == 1 or (values.ndim == 2 and values.shape[1] == 1)):
        raise _invalid(
            "Expected output Tensor shape to be either [batch_size] or [batch_size, 1] "
            f"but got {_shape_text(values)}"
        )
    if values.shape[0] != n:
        raise _invalid(f"Input batch size did not match output batch size: {n} vs. {values.shape[0]}")
    got = tf_dtype_name(values.dtype)
    if got != "DT_FLOAT":
        raise _invalid(f"Expected output Tensor of DT_FLOAT.  Got: {got}")  # sic: two spaces
    return values.reshape(-1).tolist()


def regress(run: Runner, sig: Signature, examples: list[bytes]) -> list[float]:
    """Regress `examples` with `sig`: the input check, the run, one value per example."""
    input_alias = regress_input(sig)
    out = run(sig, {input_alias: string_tensor(examples)}, ("outputs",))
    return regression_values(out, len(examples))


def multi_inference_tasks(
    tasks: Iterable[Any], signatures: Mapping[str, Signature] | None = None, *, method_check: bool = False
) -> list[tuple[str, str]]:
    """(signature name, method name) of each task of a MultiInference request, after TF
    Serving's checks, in its order: every task names the same, non-empty model; no
    signature twice; only classify and regress methods. With `signatures` (the servable's,
    where the caller has it before anything runs), a signature it lacks is INVALID_ARGUMENT
    `Requested signature not found in model graph`, and with `method_check` a signature
    whose method is not the task's fails as Classify or Regress would (`check_method_name`)."""
    model_name = ""
    seen: set[str] = set()
    result = []
    for task in tasks:
        spec = task.model_spec
        if not spec.name:
            raise ServingError(Code.INVALID_ARGUMENT, "Found ModelSpec with an empty model name.")
        if not model_name:
            model_name = spec.name
        elif spec.name != model_name:
            raise ServingError(
                Code.INVALID_ARGUMENT,
                "All ModelSpecs in a MultiInferenceRequest must access the same model name.",
            )
        signature = spec.signature_name or DEFAULT_SIGNATURE
        if signature in seen:
            raise ServingError(Code.INVALID_ARGUMENT, f"Duplicate evaluation of signature: {signature}")
        seen.add(signature)
        sig = signatures.get(signature) if signatures is not None else None
        if signatures is not None and sig is None:
            raise ServingError(Code.INVALID_ARGUMENT, f"Requested signature not found in model graph: {signature}")
        if task.method_name not in (CLASSIFY_METHOD_NAME, REGRESS_METHOD_NAME):
            raise ServingError(Code.UNIMPLEMENTED, f"Unsupported signature method_name: {task.method_name}")
        if method_check and sig is not None:
            check_method_name(sig, "classify" if task.method_name == CLASSIFY_METHOD_NAME else "regress")
        result.append((signature, task.method_name))
    return result
