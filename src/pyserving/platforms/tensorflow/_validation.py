"""Request checks done before the session runs, with TF Serving's messages.

TF Serving's order (``predict_util.cc`` / ``saved_model/util.cc``) is kept: input count,
then each signature input (omitted ones take the SignatureDef's default value, else an
error), then unknown input names, then ``output_filter``. On top of that, and still before
the session, each fed array is checked against the signature by `check_array` (dtype;
known dimensions; rank only where a wrong rank could crash TF). What TF Serving lets
through is let through here too ([3] into a [-1,1] placeholder works, and so does [3] into
the [1] of its TF2 half_plus_two export); the session judges those.

Every failure raises ``ServingError(INVALID_ARGUMENT, ...)``. Name sets in messages are
sorted and comma-joined, as TF Serving prints its ``std::set``s.
"""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import numpy as np

from pyserving.errors import Code, ServingError
from pyserving.platforms.base import MAX_LENIENT_RANK, Signature, TensorSpec
from pyserving.platforms._dtypes import accepts, tf_dtype_name
from pyserving.platforms.tensorflow._signature import format_shape

__all__ = ["bind_inputs", "select_outputs", "check_array", "session_arg_index", "shape_mismatch_message"]


def _join(names: Iterable[str]) -> str:
    return ",".join(sorted(names))


def _invalid(message: str) -> ServingError:
    return ServingError(Code.INVALID_ARGUMENT, message)


def bind_inputs(
    signature: Signature,
    inputs: Mapping[str, np.ndarray],
    default_values: Mapping[str, np.ndarray],
    arg_index: Mapping[str, int] | None = None,
) -> list[np.ndarray]:
    """The arrays to feed, one per signature input in signature order.

    ``default_values`` holds the SignatureDef defaults (alias -> array); an omitted input
    with a default is fed that value, as TF Serving does. Non-ndarray values are converted
    with ``np.asarray`` (no dtype coercion). ``arg_index`` (see `session_arg_index`), for a
    model run by ``Session::Run``, gives a wrong dtype the session's own message.
    """
    sig_inputs = signature.inputs
    n_req, n_sig = len(inputs), len(sig_inputs)
    if n_req > n_sig or (n_req < n_sig and not signature.defaults):
        req, sig = set(inputs), set(sig_inputs)
        raise _invalid(
            f"input size does not match signature: {n_req}!={n_sig} len({{{_join(req)}}}) "
            f"!= len({{{_join(sig)}}}). Sent extra: {{{_join(req - sig)}}}. "
            f"Missing but required: {{{_join(sig - req)}}}."
        )
    feeds: list[np.ndarray] = []
    used = 0
    for alias, spec in sig_inputs.items():
        value = inputs.get(alias)
        if value is None:
            default = default_values.get(alias)
            if default is None:
                raise _invalid(
                    f"Signature input alias: {alias}(feed name: {spec.tensor_name}) not found "
                    f"in request and no default value provided. Inputs expected to be in the "
                    f"request {{{_join(inputs)}}}, or default input alias set: "
                    f"{_join(signature.defaults)}"
                )
            feeds.append(default)
            continue
        used += 1
        if type(value) is not np.ndarray:
            value = np.asarray(value)
        check_array(signature.name, spec, value, arg_index.get(alias) if arg_index else None)
        feeds.append(value)
    if used != n_req:
        seen = [a for a in sig_inputs if a in inputs]
        raise _invalid(
            f"Inputs contains invalid name. Used request inputs: {_join(seen)}, "
            f"request input: {_join(inputs)}"
        )
    return feeds


def session_arg_index(signature: Signature) -> dict[str, int]:
    """alias -> the position of its tensor among ``Session::Run``'s arguments: TF's
    DirectSession orders a run's feeds by tensor name (and every signature input is fed,
    defaults included), which its dtype message counts in ("Expects arg[1] ...")."""
    names = sorted({spec.tensor_name for spec in signature.inputs.values()})
    position = {name: i for i, name in enumerate(names)}
    return {alias: position[spec.tensor_name] for alias, spec in signature.inputs.items()}


def _type_string(dtype_name: str) -> str:
    """TF's ``DataTypeString``: "DT_FLOAT" -> "float", "DT_STRING" -> "string"."""
    return dtype_name[3:].lower() if dtype_name.startswith("DT_") else dtype_name


def check_array(signature_name: str, spec: TensorSpec, value: np.ndarray, arg: int | None = None) -> None:
    """Raise INVALID_ARGUMENT if ``value`` cannot match ``spec``. Checked:

    - dtype: must equal the signature's (object/bytes/str arrays for DT_STRING). With
      ``arg`` (the input's place among the session's arguments) the message is the one TF
      Serving passes on from ``Session::Run`` ("Expects arg[0] to be float but bool is
      provided"), else it names the alias and the signature;
    - equal rank, declared rank above 2: every known dimension but the first (batch) one
      must match (declared rank up to 2: left to the session, as in TF Serving). Dimension 0
      is let through: exports often pin the batch size in the signature (TF Serving's own
      ``saved_model_half_plus_two_tf2_cpu`` declares ``x`` as [1]) while the graph computes
      any batch, and TF Serving runs such requests. If the session then fails,
      `shape_mismatch_message` explains it;
    - other rank: allowed (as TF Serving allows [3] for [-1,1]) only when the declared rank
      is at most 2. Higher-rank inputs feed rank-specific kernels (convolution, pooling),
      and TF's oneDNN convolution aborts the whole process on a wrong-rank input instead of
      returning an error, so those are rejected here.
    """
    expected = spec.np_dtype
    if expected is not None and value.dtype != expected and not accepts(expected, value.dtype):
        if arg is not None:
            raise _invalid(
                f"Expects arg[{arg}] to be {_type_string(spec.dtype)} but "
                f"{_type_string(tf_dtype_name(value.dtype))} is provided"
            )
        raise _invalid(
            f"input tensor alias: {spec.alias} has dtype {tf_dtype_name(value.dtype)} but "
            f'signature "{signature_name}" expects {spec.dtype}'
        )
    shape = spec.shape
    if shape is None:
        return
    rank = len(shape)
    if value.ndim != rank:
        if rank > MAX_LENIENT_RANK:
            raise _invalid(_shape_message(signature_name, spec, value.shape))
        return
    if rank <= MAX_LENIENT_RANK:
        return  # as lenient as TF Serving: [1,3] into [-1,1] runs (the session decides)
    got_shape = value.shape
    for i in range(1, rank):
        if shape[i] >= 0 and shape[i] != got_shape[i]:
            raise _invalid(_shape_message(signature_name, spec, got_shape))


def shape_mismatch_message(
    signature: Signature, feeds: Sequence[np.ndarray]
) -> str | None:
    """The message for the first fed array whose shape, at equal rank, differs from the
    signature in a known dimension (including dimension 0); None if there is none."""
    for spec, value in zip(signature.inputs.values(), feeds):
        shape = spec.shape
        if shape is None or value.ndim != len(shape):
            continue
        if any(want >= 0 and want != got for want, got in zip(shape, value.shape)):
            return _shape_message(signature.name, spec, value.shape)
    return None


def _shape_message(signature_name: str, spec: TensorSpec, got: tuple[int, ...]) -> str:
    return (
        f"input tensor alias: {spec.alias} has shape {format_shape(got)} but "
        f'signature "{signature_name}" expects {format_shape(spec.shape)}'
    )


def select_outputs(signature: Signature, output_filter: Sequence[str]) -> tuple[str, ...]:
    """Output aliases to fetch, in signature order: all, or those named in ``output_filter``."""
    outputs = signature.outputs
    if not output_filter:
        return tuple(outputs)
    seen: set[str] = set()
    for alias in output_filter:
        if alias not in outputs:
            raise _invalid(
                f"output tensor alias not found in signature: {alias} Outputs expected to be "
                f"in the set {{{_join(outputs)}}}."
            )
        if alias in seen:
            raise _invalid(f"duplicate output tensor alias: {alias}")
        seen.add(alias)
    return tuple(a for a in outputs if a in seen)
