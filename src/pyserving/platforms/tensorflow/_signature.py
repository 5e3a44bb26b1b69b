"""SignatureDef protos -> pyserving `Signature`s, and shape/dtype text for messages.

Contract: `signatures_from_meta_graph` keeps the file's order (signatures, and inputs and
outputs within each) when given it, else sorts by name, so the order never depends on
protobuf map iteration; `TensorSpec.tensor_name` is the TensorInfo's dense tensor name, or
"" for sparse / composite encodings (which the predict path cannot feed or fetch).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from tensorflow.core.framework import types_pb2

from pyserving.platforms.base import Signature, TensorSpec
from pyserving.platforms._dtypes import numpy_dtype
from pyserving.platforms.tensorflow._wire_order import KeyOrder

__all__ = [
    "signatures_from_meta_graph",
    "signature_from_def",
    "tensor_spec",
    "format_shape",
    "describe_tensors",
    "is_dense",
]

_DTYPE_VALUES = frozenset(types_pb2.DataType.values())


def tensor_spec(alias: str, info: Any) -> TensorSpec:
    """A `TensorSpec` from a ``tensorflow.TensorInfo`` proto."""
    dtype = types_pb2.DataType.Name(info.dtype) if info.dtype in _DTYPE_VALUES else "DT_INVALID"
    shape_proto = info.tensor_shape
    shape = None if shape_proto.unknown_rank else tuple(int(d.size) for d in shape_proto.dim)
    name = info.name if info.WhichOneof("encoding") == "name" else ""
    return TensorSpec(
        alias=alias, tensor_name=name, dtype=dtype, np_dtype=numpy_dtype(dtype), shape=shape
    )


def signature_from_def(
    name: str,
    sig_def: Any,
    input_order: Sequence[str] = (),
    output_order: Sequence[str] = (),
) -> Signature:
    """A `Signature` from a ``tensorflow.SignatureDef`` proto.

    Inputs and outputs follow ``input_order`` / ``output_order`` when those hold exactly
    the proto's aliases, else sorted order.
    """
    return Signature(
        name=name,
        method_name=sig_def.method_name,
        inputs={
            a: tensor_spec(a, sig_def.inputs[a]) for a in _ordered(sig_def.inputs, input_order)
        },
        outputs={
            a: tensor_spec(a, sig_def.outputs[a]) for a in _ordered(sig_def.outputs, output_order)
        },
        defaults=frozenset(sig_def.defaults.keys()),
    )


def signatures_from_meta_graph(
    meta_graph: Any, order: KeyOrder | None = None
) -> dict[str, Signature]:
    """Every signature of a ``MetaGraphDef``, keyed by name, in ``order`` (the file's order
    from `signature_key_order`) where it matches the proto, else sorted."""
    order = order or {}
    sig_defs = meta_graph.signature_def
    result = {}
    for name in _ordered(sig_defs, list(order)):
        inputs, outputs = order.get(name, ((), ()))
        result[name] = signature_from_def(name, sig_defs[name], inputs, outputs)
    return result


def _ordered(proto_map: Any, order: Sequence[str]) -> list[str]:
    keys = list(proto_map.keys())
    if len(order) == len(keys) and set(order) == set(keys):
        return list(order)
    return sorted(keys)


def is_dense(spec: TensorSpec) -> bool:
    """Whether the tensor is a plain named tensor (feedable / fetchable by name)."""
    return bool(spec.tensor_name)


def format_shape(shape: tuple[int, ...] | None) -> str:
    """``[-1,28,28,1]`` style (TF Serving's), or ``<unknown rank>``."""
    if shape is None:
        return "<unknown rank>"
    return "[" + ",".join(str(d) for d in shape) + "]"


def describe_tensors(specs: Mapping[str, TensorSpec]) -> str:
    """``{x: DT_FLOAT [-1,1], y: DT_STRING [-1]}``: aliases with dtypes and shapes."""
    return "{" + ", ".join(
        f"{alias}: {spec.dtype} {format_shape(spec.shape)}" for alias, spec in specs.items()
    ) + "}"
