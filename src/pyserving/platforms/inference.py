"""What a Predict, Classify, Regress or MultiInference request means for a `Servable`,
independent of how the request arrived.

Two callers must agree on it exactly: the prediction service, for requests from the REST
and gRPC front ends, and warmup (`platforms/tensorflow/warmup.py`), which replays logged
requests against a version while it loads. So the rules live here, below both: which
signature a name picks (and the errors when it picks none), what a classification or
regression signature must look like, how serialized examples are fed and how the outputs
become classifications or values, and the checks on a MultiInference request's tasks.
This module needs only the `Servable` contract and numpy; the protos it reads (an
`Input`, MultiInference tasks) are used through their fields, never imported.
"""

from __future__ import annotations

from typing import Any, Callable, Container, Iterable, Literal, Mapping, Sequence

import numpy as np

from pyserving.errors import Code, ServingError
from pyserving.platforms.base import DEFAULT_SIGNATURE, Servable, Signature

__all__ = [
    "Api",
    "CLASSIFY_METHOD_NAME",
    "REGRESS_METHOD_NAME",
    "Runner",
    "find_signature",
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


def classification_rows(out: Mapping[str, Any], n: int) -> list[list[tuple[bytes, float]]]:
    """Per example, its (label, score) pairs from a classification run's outputs."""
    classes = out.get("classes")
    scores = out.get("scores")
    if scores is not None:
        scores = np.asarray(scores).reshape(n, -1)
    if classes is not None:
        classes = np.asarray(classes).reshape(n, -1)
    k = (scores if scores is not None else classes).shape[1]  # type: ignore[union-attr]
    result = []
    for i in range(n):
        row = []
        for j in range(k):
            label = classes[i, j] if classes is not None else b""
            score = float(scores[i, j]) if scores is not None else 0.0
            row.append((label if isinstance(label, bytes) else str(label).encode(), score))
        result.append(row)
    return result


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
    """One value per example from a regression run's `outputs` ([n] or [n,1])."""
    values = np.asarray(out["outputs"], dtype=np.float64).reshape(-1)
    if values.shape[0] != n:
        raise ServingError(
            Code.INVALID_ARGUMENT,
            f"Expected output Tensor shape to be [{n}] or [{n},1]",
        )
    return values.tolist()


def regress(run: Runner, sig: Signature, examples: list[bytes]) -> list[float]:
    """Regress `examples` with `sig`: the input check, the run, one value per example."""
    input_alias = regress_input(sig)
    out = run(sig, {input_alias: string_tensor(examples)}, ("outputs",))
    return regression_values(out, len(examples))


def multi_inference_tasks(tasks: Iterable[Any], signatures: Container[str] | None = None) -> list[tuple[str, str]]:
    """(signature name, method name) of each task of a MultiInference request, after TF
    Serving's checks, in its order: every task names the same, non-empty model; no
    signature twice; only classify and regress methods. With `signatures` (the servable's,
    where the caller has it before anything runs), a signature it lacks is INVALID_ARGUMENT
    `Requested signature not found in model graph`."""
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
        if signatures is not None and signature not in signatures:
            raise ServingError(Code.INVALID_ARGUMENT, f"Requested signature not found in model graph: {signature}")
        if task.method_name not in (CLASSIFY_METHOD_NAME, REGRESS_METHOD_NAME):
            raise ServingError(Code.UNIMPLEMENTED, f"Unsupported signature method_name: {task.method_name}")
        result.append((signature, task.method_name))
    return result
