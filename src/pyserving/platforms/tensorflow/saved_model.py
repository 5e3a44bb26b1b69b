"""The TensorFlow SavedModel platform: load a version directory the way TF Serving does.

`SavedModelLoader` implements the `Loader` protocol: a fresh ``tf.Graph`` and
``tf.compat.v1.Session`` per version, then the TF1 SavedModel loader on the MetaGraphDef
whose tag set equals ``tags`` (graph import, variable restore, asset feeding, init/main
op): the steps of ``tf.compat.v1.saved_model.loader.load``, run through its
``SavedModelLoader`` so the file is parsed once and tag sets can be checked first.
TF1 builder exports, ``simple_save``, frozen-graph re-exports, TF2
``tf.saved_model.save`` and Keras 3 ``model.export`` directories all load this way, as in
TF Serving. Load failures raise `ServingError` (NOT_FOUND, DATA_LOSS, or TF's own code)
whose message names the directory; no TF exception escapes.

`TensorFlowServable` runs signatures through ``Session::Run`` with the feed/fetch plan
(graph tensor handles) prepared at load time per signature, and cached for other output
filters; a deadline travels as that run's RunOptions timeout, so every deadline shares the
session's one executor per feed/fetch set (warmed by warmup). Like TF Serving's C++ run,
this skips Python's placeholder shape check, so a [3] array fed to a [-1,1] placeholder
works. (A ``MakeCallable`` per signature was ~7 µs faster per call on half_plus_two but
needs one callable, and one cold executor, per timeout.)

Thread-safety: `TensorFlowServable.run` may be called from many threads at once; runs
take no lock (TF sessions are thread-safe); only preparing a new plan takes a lock. `signatures` is immutable. `SavedModelLoader.load`/`unload` are never called
concurrently for one loader (the `Loader` contract); loading twice, or unloading before
loading, is a no-op.
"""

from __future__ import annotations

import math
import os
import threading
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import config_pb2
from tensorflow.python.client import pywrap_tf_session
from tensorflow.python.saved_model import loader_impl
from tensorflow.python.util import deprecation
from tensorflow_serving.apis import get_model_metadata_pb2

from pyserving.errors import Code, ServingError
from pyserving.platforms.base import Signature
from pyserving.platforms.tensorflow._signature import (
    describe_tensors,
    is_dense,
    signatures_from_meta_graph,
)
from pyserving.platforms.tensorflow._validation import (
    bind_inputs,
    select_outputs,
    session_arg_index,
    shape_mismatch_message,
)
from pyserving.platforms.tensorflow._wire_order import KeyOrder, signature_key_order
from pyserving.platforms.tensorflow.warmup import (
    WarmupCallback,
    WarmupOptions,
    run_warmup,
)

if TYPE_CHECKING:
    from tensorflow.core.protobuf import meta_graph_pb2

__all__ = ["SavedModelLoader", "TensorFlowServable", "DEFAULT_TAGS"]

DEFAULT_TAGS: tuple[str, ...] = ("serve",)

_SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")
# Prepared runs beyond each signature's default one (other output filters).
_MAX_EXTRA_CALLABLES = 64


def _code_of(error: tf.errors.OpError) -> Code:
    try:
        return Code(error.error_code)
    except ValueError:
        return Code.UNKNOWN


# ---------------------------------------------------------------------------- loader


class SavedModelLoader:
    """Loads one SavedModel version directory into its own graph and session."""

    def __init__(
        self,
        export_dir: str,
        tags: Sequence[str] = DEFAULT_TAGS,
        session_config: config_pb2.ConfigProto | None = None,
        # Model warmup (see warmup.py)
        enable_model_warmup: bool = True,
        num_request_iterations_for_warmup: int = 0,
        on_warmup: WarmupCallback | None = None,
        enable_signature_method_name_check: bool = False,
    ) -> None:
        """``session_config`` None means ``ConfigProto(allow_soft_placement=True)``, so
        exports pinned to a GPU device still load on a CPU-only host. The warmup arguments
        are the server flags of the same names and the metrics hook (`warmup.WarmupOptions`)."""
        self._export_dir = os.fspath(export_dir)
        self._tags = tuple(tags)
        self._session_config = session_config
        self._servable: TensorFlowServable | None = None
        self._warmup = WarmupOptions.from_flags(  # None when warmup is disabled
            enable_model_warmup, num_request_iterations_for_warmup, on_warmup,
            enable_signature_method_name_check,
        )

    @property
    def export_dir(self) -> str:
        return self._export_dir

    def load(self) -> None:
        """Load the version; raises `ServingError` on failure (nothing stays allocated)."""
        if self._servable is not None:
            return
        export_dir = self._export_dir
        reader = _open_saved_model(export_dir)
        index, meta_graph = _find_meta_graph(reader, self._tags, export_dir)
        # Parsed protobuf maps lose the file's order; read it from the file itself.
        order = signature_key_order(os.path.join(export_dir, _SAVED_MODEL_FILES[0]), index)
        config = self._session_config
        if config is None:
            config = config_pb2.ConfigProto(allow_soft_placement=True)
        graph = tf.Graph()
        session = tf.compat.v1.Session(graph=graph, config=config)
        try:
            with deprecation.silence():
                saver, _ = reader.load_graph(graph, list(self._tags))
                reader.restore_variables(session, saver)
                reader.run_init_ops(session, list(self._tags))
            self._servable = TensorFlowServable(session, meta_graph, export_dir, order)
        except tf.errors.OpError as e:
            session.close()
            raise ServingError(
                _code_of(e), f"Failed to load SavedModel at {export_dir}: {e.message}"
            ) from None
        except Exception as e:  # noqa: BLE001 - no TF exception may escape a load
            session.close()
            raise ServingError(
                Code.UNKNOWN,
                f"Failed to load SavedModel at {export_dir}: {type(e).__name__}: {e}",
            ) from None
        # Replay assets.extra/tf_serving_warmup_requests before AVAILABLE
        if not self.defer_warmup:
            try:
                self.warmup(self._servable)
            except BaseException:
                self.unload()  # a failed warmup fails the load; nothing stays allocated
                raise

    # Set by a loader that wraps this one's servable (batching) and replays the warmup
    # file through its wrapper instead, as TF Serving warms the batching session.
    defer_warmup = False

    def warmup(self, servable: Any) -> None:
        """Replay the version's warmup file (if enabled) against `servable`: this loader's
        own or a wrapper around it. Raises `ServingError`; the caller unloads."""
        if self._warmup is not None:
            run_warmup(servable, self._export_dir, self._warmup)

    def unload(self) -> None:
        """Close the session and drop every reference to the graph."""
        servable, self._servable = self._servable, None
        if servable is not None:
            servable.close()

    def servable(self) -> TensorFlowServable:
        """The loaded servable; FAILED_PRECONDITION if not loaded."""
        if self._servable is None:
            raise ServingError(
                Code.FAILED_PRECONDITION, f"SavedModel at {self._export_dir} is not loaded"
            )
        return self._servable


def _open_saved_model(export_dir: str) -> loader_impl.SavedModelLoader:
    """Parse ``saved_model.pb``/``.pbtxt``: NOT_FOUND if absent, DATA_LOSS if unparsable."""
    files = [os.path.join(export_dir, f) for f in _SAVED_MODEL_FILES]
    if not any(os.path.isfile(f) for f in files):
        message = (
            f"Could not find SavedModel .pb or .pbtxt at supplied export directory path: "
            f"{export_dir}"
        )
        if os.path.isfile(os.path.join(export_dir, "export.meta")):
            message += " (it looks like a SessionBundle export, which is not supported)"
        raise ServingError(Code.NOT_FOUND, message)
    try:
        return loader_impl.SavedModelLoader(export_dir)
    except OSError as e:
        raise ServingError(Code.DATA_LOSS, f"Can't parse SavedModel at {export_dir}: {e}") from None
    except Exception as e:  # noqa: BLE001 - e.g. UnicodeDecodeError from a binary .pbtxt
        raise ServingError(
            Code.DATA_LOSS, f"Can't parse SavedModel at {export_dir}: {type(e).__name__}: {e}"
        ) from None


def _find_meta_graph(
    reader: loader_impl.SavedModelLoader, tags: Sequence[str], export_dir: str
) -> tuple[int, meta_graph_pb2.MetaGraphDef]:
    """(index, MetaGraphDef) whose tag set equals ``tags``; NOT_FOUND listing the tag sets."""
    wanted = set(tags)
    available = []
    for index, meta_graph in enumerate(reader.saved_model.meta_graphs):
        have = list(meta_graph.meta_info_def.tags)
        if set(have) == wanted:
            return index, meta_graph
        available.append("{ " + " ".join(sorted(have)) + " }")
    raise ServingError(
        Code.NOT_FOUND,
        f"Could not find meta graph def matching supplied tags: {{ {' '.join(sorted(wanted))} }} "
        f"in SavedModel at {export_dir}. Available tag sets: [{', '.join(available)}]",
    )


# ---------------------------------------------------------------------------- servable


@dataclass(frozen=True)
class _Compiled:
    """One prepared run (feeds -> fetches) plus how to turn its results into the requested
    outputs. ``fn(feeds, timeout_ms)`` runs it through ``Session::Run``; the session caches
    one executor per feed/fetch set, shared by every timeout, so no deadline ever meets a
    cold executor (a ``MakeCallable`` per timeout would: ~50 ms to build for the MNIST CNN).

    ``sources[i]`` says where the i-th requested output comes from: ``("fetch", k)`` is
    the run's k-th result, ``("feed", k)`` the k-th fed array (a tensor both fed and
    fetched, which ``MakeCallable`` refuses but ``Session::Run`` allows). ``direct`` is set
    when results map to the requested outputs one to one. It depends only on tensor
    names, so signatures sharing tensors share it.
    """

    fn: Callable[[Sequence[np.ndarray], int | None], list[Any]]
    sources: tuple[tuple[str, int], ...]
    direct: bool


@dataclass
class _Runner:
    """Per-signature state prepared at load time."""

    signature: Signature
    feed_names: tuple[str, ...]
    default_values: Mapping[str, np.ndarray]
    all_outputs: tuple[str, ...]
    arg_index: Mapping[str, int]  # alias -> its place among Session::Run's arguments
    default: _Compiled | None = None
    error: ServingError | None = None
    inputs_text: str = ""  # "{x: DT_FLOAT [-1,1]}", for error messages


class TensorFlowServable:
    """A loaded SavedModel version: its signatures and a way to run them."""

    # TF Serving labels Session runs "TF1" ("TFRT" is its other runtime, which this is not).
    runtime_name = "TF1"
    model_platform = "tensorflow_savedmodel"  # the Open Inference Protocol's platform name

    def __init__(
        self,
        session: tf.compat.v1.Session,
        meta_graph: meta_graph_pb2.MetaGraphDef,
        export_dir: str,
        key_order: KeyOrder | None = None,
    ) -> None:
        """Built by `SavedModelLoader.load`; prepares one callable per runnable signature.

        ``key_order`` is the file's order of signatures and aliases (else sorted order)."""
        self._session: tf.compat.v1.Session | None = session
        self._meta_graph = meta_graph
        self._signature_def_map: get_model_metadata_pb2.SignatureDefMap | None = None
        self._export_dir = export_dir
        self._signatures: Mapping[str, Signature] = MappingProxyType(
            signatures_from_meta_graph(meta_graph, key_order)
        )
        self._lock = threading.Lock()  # guards creation of entries in _callables
        self._callables: dict[tuple[Any, ...], _Compiled] = {}
        self._runners = {
            name: self._prepare(sig, meta_graph.signature_def[name])
            for name, sig in self._signatures.items()
        }

    # -- public API ----------------------------------------------------------------------

    @property
    def signatures(self) -> Mapping[str, Signature]:
        return self._signatures

    @property
    def export_dir(self) -> str:
        return self._export_dir

    @property
    def meta_graph_def(self) -> meta_graph_pb2.MetaGraphDef:
        """The loaded MetaGraphDef (read-only by convention)."""
        return self._meta_graph

    def signature_def_map(self) -> get_model_metadata_pb2.SignatureDefMap:
        """The ``tensorflow.serving.SignatureDefMap`` with the SignatureDefs as in the file
        (a protobuf map: its iteration order is the runtime's, not `signatures`' order).
        Built once; every call returns the same message, which callers must not mutate (so
        front ends can cache what they derive from it by identity)."""
        result = self._signature_def_map
        if result is None:
            result = get_model_metadata_pb2.SignatureDefMap()
            sig_defs = self._meta_graph.signature_def
            for name in self._signatures:
                result.signature_def[name].CopyFrom(sig_defs[name])
            self._signature_def_map = result
        return result

    def run(
        self,
        signature: Signature,
        inputs: Mapping[str, np.ndarray],
        output_filter: Sequence[str] = (),
        timeout_ms: int | None = None,
    ) -> dict[str, np.ndarray]:
        """Run ``signature`` (looked up by name) on ``inputs``; see `Servable.run`.

        ``timeout_ms`` None or 0 means no timeout (else TF's RunOptions timeout: the run is
        cancelled past it); a negative value is an already expired deadline.
        Outputs come in signature order; DT_STRING outputs are object arrays of bytes.
        """
        runner = self._runners.get(signature.name)
        if runner is None:
            raise ServingError(
                Code.FAILED_PRECONDITION, f'Serving signature key "{signature.name}" not found.'
            )
        if runner.error is not None:
            raise runner.error
        sig = runner.signature
        feeds = bind_inputs(sig, inputs, runner.default_values, runner.arg_index)
        if output_filter:
            fetch_aliases = select_outputs(sig, output_filter)
        else:
            fetch_aliases = runner.all_outputs
        if timeout_ms is not None and timeout_ms < 0:
            raise ServingError(Code.DEADLINE_EXCEEDED, "Deadline exceeded before running")
        if fetch_aliases is runner.all_outputs and runner.default is not None:
            compiled = runner.default
        else:
            compiled = self._compiled(runner, fetch_aliases)
        try:
            results = compiled.fn(feeds, math.ceil(timeout_ms) if timeout_ms else None)
        except tf.errors.OpError as e:
            raise self._session_error(runner, e, feeds) from None
        except (TypeError, ValueError) as e:
            raise ServingError(
                Code.INVALID_ARGUMENT,
                f'Cannot feed inputs of signature "{sig.name}": {e}. '
                f"Expected inputs: {runner.inputs_text}",
            ) from None
        except Exception as e:  # noqa: BLE001 - run() must only raise ServingError
            raise ServingError(Code.INTERNAL, f"{type(e).__name__}: {e}") from None
        if compiled.direct:
            return {
                alias: r if type(r) is np.ndarray else np.asarray(r)
                for alias, r in zip(fetch_aliases, results)
            }
        out: dict[str, np.ndarray] = {}
        for alias, (kind, k) in zip(fetch_aliases, compiled.sources):
            value = results[k] if kind == "fetch" else feeds[k]
            out[alias] = value if type(value) is np.ndarray else np.asarray(value)
        return out

    def close(self) -> None:
        """Close the session; later `run` calls raise UNAVAILABLE. Idempotent."""
        session, self._session = self._session, None
        closed = ServingError(
            Code.UNAVAILABLE, f"SavedModel at {self._export_dir} has been unloaded"
        )
        for runner in self._runners.values():
            runner.error = closed
            runner.default = None
        with self._lock:
            self._callables.clear()
        if session is not None:
            try:
                session.close()
            except Exception:  # noqa: BLE001, S110 - closing must not fail an unload
                pass

    # -- internals -----------------------------------------------------------------------

    def _prepare(self, sig: Signature, sig_def: Any) -> _Runner:
        runner = _Runner(
            signature=sig,
            feed_names=tuple(spec.tensor_name for spec in sig.inputs.values()),
            default_values=_default_values(sig_def),
            all_outputs=tuple(sig.outputs),
            arg_index=session_arg_index(sig),
            inputs_text=describe_tensors(sig.inputs),
        )
        specs = [*sig.inputs.values(), *sig.outputs.values()]
        if not all(is_dense(spec) for spec in specs):
            runner.error = ServingError(
                Code.INVALID_ARGUMENT,
                f'Signature "{sig.name}" has sparse or composite tensors, which are not '
                f"supported",
            )
            return runner
        try:
            runner.default = self._build(runner, runner.all_outputs)
        except ServingError as e:
            runner.error = e
        return runner

    def _compiled(self, runner: _Runner, fetch_aliases: tuple[str, ...]) -> _Compiled:
        outputs = runner.signature.outputs
        key = (runner.feed_names, tuple(outputs[a].tensor_name for a in fetch_aliases))
        compiled = self._callables.get(key)
        if compiled is not None:
            return compiled
        with self._lock:
            compiled = self._callables.get(key)
            if compiled is None:
                compiled = self._build(runner, fetch_aliases)
                if len(self._callables) >= _MAX_EXTRA_CALLABLES:
                    del self._callables[next(iter(self._callables))]
                self._callables[key] = compiled
        return compiled

    def _build(self, runner: _Runner, fetch_aliases: tuple[str, ...]) -> _Compiled:
        session = self._session
        if session is None:
            raise ServingError(
                Code.UNAVAILABLE, f"SavedModel at {self._export_dir} has been unloaded"
            )
        outputs = runner.signature.outputs
        fed = {name: i for i, name in enumerate(runner.feed_names)}
        fetch_names: list[str] = []
        sources: list[tuple[str, int]] = []
        for alias in fetch_aliases:
            name = outputs[alias].tensor_name
            if name in fed:
                sources.append(("feed", fed[name]))
            else:
                sources.append(("fetch", len(fetch_names)))
                fetch_names.append(name)
        try:
            graph = session.graph
            feed_outputs = tuple(graph.get_tensor_by_name(n)._as_tf_output() for n in runner.feed_names)  # noqa: SLF001
            fetch_outputs = [graph.get_tensor_by_name(n)._as_tf_output() for n in fetch_names]  # noqa: SLF001
            session._extend_graph()  # noqa: SLF001 - make the graph known to the C session
        except Exception as e:  # noqa: BLE001
            raise ServingError(
                Code.INTERNAL,
                f'Signature "{runner.signature.name}" cannot be run: {type(e).__name__}: {e}',
            ) from None
        # Session::Run without Python's feed shape checks (TF Serving's C++ run has none).
        run = session._call_tf_sessionrun  # noqa: SLF001

        def fn(feeds: Sequence[np.ndarray], timeout_ms: int | None) -> list[Any]:
            feed_dict = dict(zip(feed_outputs, feeds))
            if not timeout_ms:
                return run(None, feed_dict, fetch_outputs, [], None)
            options = pywrap_tf_session.TF_NewBufferFromString(
                config_pb2.RunOptions(timeout_in_ms=timeout_ms).SerializeToString()
            )
            try:
                return run(options, feed_dict, fetch_outputs, [], None)
            finally:
                pywrap_tf_session.TF_DeleteBuffer(options)

        direct = all(kind == "fetch" and k == i for i, (kind, k) in enumerate(sources))
        return _Compiled(fn=fn, sources=tuple(sources), direct=direct)

    def _session_error(
        self, runner: _Runner, error: tf.errors.OpError, feeds: Sequence[np.ndarray]
    ) -> ServingError:
        """The `ServingError` for a failed session run (INVALID_ARGUMENT gets the expected
        inputs appended, or leads with the input whose shape mismatches)."""
        if self._session is None:
            return ServingError(
                Code.UNAVAILABLE, f"SavedModel at {self._export_dir} has been unloaded"
            )
        code = _code_of(error)
        message = error.message.rstrip()
        if code == Code.INTERNAL and message.startswith("Unsupported object type"):
            # TF could not convert an object array element (e.g. an int) to a string.
            return ServingError(
                Code.INVALID_ARGUMENT,
                f"DT_STRING inputs must hold bytes or str: {message}. Signature "
                f'"{runner.signature.name}" expects inputs: {runner.inputs_text}',
            )
        if code == Code.INVALID_ARGUMENT:
            mismatch = shape_mismatch_message(runner.signature, feeds)
            if mismatch is not None:
                message = f"{mismatch}\n\t{message}"
            message += (
                f'\n\tSignature "{runner.signature.name}" expects inputs: {runner.inputs_text}'
            )
        return ServingError(code, message)


def _default_values(sig_def: Any) -> Mapping[str, np.ndarray]:
    """SignatureDef.defaults as arrays (entries that do not convert are left out)."""
    values: dict[str, np.ndarray] = {}
    for alias, proto in sig_def.defaults.items():
        try:
            values[alias] = np.asarray(tf.make_ndarray(proto))
        except Exception:  # noqa: BLE001, S112 - an unusable default is treated as absent
            continue
    return MappingProxyType(values)
