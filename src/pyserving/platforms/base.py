"""The contract between the serving layers and a model platform.

A platform turns a version directory into a `Servable`. The serving layers only ever see
this protocol: they never import TensorFlow themselves (the TF platform does).

Thread-safety: `Servable.run` is called concurrently from worker threads (never on the
event loop) and must be safe for that; `signatures` is immutable after load.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Protocol, Sequence

import numpy as np

__all__ = ["DEFAULT_SIGNATURE", "MAX_LENIENT_RANK", "TensorSpec", "Signature", "Servable", "AsyncServable",
           "Loader"]

# The signature a request that names none runs, and the name a platform gives a model's
# only signature when the model format has no names of its own (TFLite).
DEFAULT_SIGNATURE = "serving_default"

# Declared ranks up to which an input of another rank is passed to the model as is (as TF
# Serving lets [3] into a [-1,1] placeholder: the runtime decides). Platforms validate
# inputs by it and batching must agree, so that a request batches exactly when it would run.
MAX_LENIENT_RANK = 2


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of a signature.

    `alias` is the signature's key (what clients use); `tensor_name` the graph tensor
    ("x:0"); `dtype` the TF enum name ("DT_FLOAT"); `np_dtype` the numpy dtype used on the
    wire (object for DT_STRING, None where numpy has none); `shape` None for unknown rank,
    else a tuple with -1 for unknown dimensions.
    """

    alias: str
    tensor_name: str
    dtype: str
    np_dtype: np.dtype | None
    shape: tuple[int, ...] | None


@dataclass(frozen=True)
class Signature:
    name: str
    method_name: str
    inputs: Mapping[str, TensorSpec]
    outputs: Mapping[str, TensorSpec]
    # Inputs that have a default value in the SignatureDef and may be omitted (gRPC only).
    defaults: frozenset[str] = field(default_factory=frozenset)


class Servable(Protocol):
    """A loaded model version, ready to run."""

    # The `runtime` label of TF Serving's `runtime_latency` metric for this servable's runs.
    runtime_name: str

    @property
    def signatures(self) -> Mapping[str, Signature]: ...

    def signature_def_map(self) -> Any:
        """The `tensorflow.serving.SignatureDefMap` proto for GetModelMetadata."""

    def run(
        self,
        signature: Signature,
        inputs: Mapping[str, np.ndarray],
        output_filter: Sequence[str] = (),
        timeout_ms: int | None = None,
    ) -> dict[str, np.ndarray]:
        """Run `signature` on `inputs` (alias -> array); blocking.

        Returns alias -> array for every output (or only `output_filter`'s aliases).
        Raises `ServingError` (INVALID_ARGUMENT for bad inputs the runtime rejects,
        DEADLINE_EXCEEDED past `timeout_ms`, INTERNAL otherwise). Never raises anything else.
        """


class AsyncServable(Servable, Protocol):
    """A servable that can also run without a worker thread (batching: the request waits for
    its batch on the event loop). A small request to one is decoded and encoded on the loop
    and awaits `run_async`, one thread hop fewer."""

    async def run_async(
        self,
        signature: Signature,
        inputs: Mapping[str, np.ndarray],
        output_filter: Sequence[str] = (),
        deadline: float | None = None,
    ) -> dict[str, np.ndarray]:
        """`run` for the event loop; `deadline` is a `time.monotonic()` time (None: none)."""


class Loader(Protocol):
    """Loads one version. `load` and `unload` are blocking, called from worker threads,
    never concurrently for the same loader; `servable` is valid between them."""

    def load(self) -> None: ...

    def unload(self) -> None: ...

    def servable(self) -> Servable: ...
