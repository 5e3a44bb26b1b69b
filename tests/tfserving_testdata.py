"""TF Serving's test data tree, recreated: its half_plus_two family of exports and data files.

TensorFlow Serving tests itself against a folder of small exports
(``tensorflow_serving/servables/tensorflow/testdata``); pyserving's tests use the same folder
layout, models and expected answers. `write_tree(root)` makes that folder from scratch with
the TensorFlow in this environment, so the suite needs nothing outside the repository:

====================================================  ==========================================
``saved_model_half_plus_two_cpu/00000123``            TF1 ``SavedModelBuilder`` export, y = 0.5x + 2
``saved_model_half_plus_two_tf2_cpu/00000123``        the same from ``tf.saved_model.save``
``saved_model_half_plus_two_2_versions/0000012{3,4}`` an older TF1 export, two equal versions
``saved_model_half_plus_three/00000123``              y = 0.5x + 3, signatures without shapes
``saved_model_counter/00000123``                      a stateful counter (ref variable)
``bad_half_plus_two/00000123``                        a pre-SavedModel export (no saved_model.pb)
``saved_model_half_plus_two_tflite{,_with_sigdef}``   TFLite, y = 0.5x + 2 on a [1, 1] input
``*.txt``, ``*_metadata.json``                        configs and expected REST metadata (copied
                                                      from ``tests/data/tfserving``)
====================================================  ==========================================

Each export has the signature names, input and output aliases, tensor names, dtypes, shapes,
method names, variable values, asset file and version folder of TF Serving's file (what a
client sees in ``/metadata`` and what the loader feeds and fetches). The graphs are rebuilt
with today's ops, so op types and internal node names differ (``ParseExampleV2`` for
``ParseExample``, ``tf.Module`` function names in the TF2 export...), which no test relies on.
Two details of the files are kept on purpose: the order in which ``saved_model.pb`` stores its
signatures (pyserving lists signatures in file order; TF 1.x wrote protobuf maps in hash
order), and the ``legacy_init_op`` collection of the older exports (the loader's other way to
find the init op). ``tests/unit/test_tfserving_testdata.py`` compares all of this with TF
Serving's own files when they are present.

All values are fixed (only the staging path of the TF1 exports' asset, recorded in their
graphs as TF Serving's record theirs, varies); the whole tree takes a few seconds to write.
Command line:
``python tests/tfserving_testdata.py OUT_DIR``.
"""

from __future__ import annotations

import contextlib
import shutil
import stat
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator

import tensorflow as tf
from tensorflow.python.util import deprecation

__all__ = [
    "VERSION",
    "DATA_FILES",
    "write_tree",
    "make_half_plus_two_cpu",
    "make_half_plus_two_2_versions",
    "make_half_plus_three",
    "make_half_plus_two_tf2",
    "make_counter",
    "make_bad_half_plus_two",
    "make_half_plus_two_tflite",
]

_v1 = tf.compat.v1
_SERVE = [tf.saved_model.SERVING]
PREDICT = "tensorflow/serving/predict"
CLASSIFY = "tensorflow/serving/classify"
REGRESS = "tensorflow/serving/regress"

VERSION = "00000123"  # TF Serving's version folders are zero-padded: version 123
DATA_FILES = Path(__file__).resolve().parent / "data" / "tfserving"
ASSET_NAME = "foo.txt"
ASSET_CONTENTS = b"asset-file-contents"  # no trailing newline


# ---------------------------------------------------------------------------- helpers


@contextlib.contextmanager
def _graph_session() -> Iterator[Any]:
    """A TF1 session on a fresh default graph (eager mode stays on outside it)."""
    with tf.Graph().as_default() as graph, _v1.Session(graph=graph) as sess:
        with deprecation.silence():
            yield sess


def _ref_variable(value: Any, name: str, **kw: Any) -> Any:
    """A TF1 reference variable (``VariableV2``, nodes ``<name>/Assign``, ``<name>/read``), as
    TF 1.x wrote them; today's default would be a resource variable."""
    return _v1.Variable(value, name=name, use_resource=False, **kw)


def _info(tensor: Any, *, shape: bool = True, dtype: Any = None) -> Any:
    """TensorInfo of ``tensor``; ``shape=False`` leaves the shape out (TF 1.0 did not write
    it); ``dtype`` overrides the recorded dtype."""
    info = _v1.saved_model.build_tensor_info(tensor)
    if not shape:
        info.ClearField("tensor_shape")
    if dtype is not None:
        info.dtype = dtype.as_datatype_enum
    return info


def _signature(inputs: dict[str, Any], outputs: dict[str, Any], method: str) -> Any:
    return _v1.saved_model.build_signature_def(inputs, outputs, method)


def _parse_x_and_x2(serialized: Any) -> tuple[Any, Any]:
    """``x`` and ``x2`` (float [-1, 1]) from serialized tf.Examples: ``x`` required, ``x2``
    defaulting to 0; both are Identity nodes named ``x`` and ``x2``."""
    features = {
        "x": tf.io.FixedLenFeature([1], tf.float32),
        "x2": tf.io.FixedLenFeature([1], tf.float32, default_value=[0.0]),
    }
    parsed = _v1.parse_example(serialized, features)
    return _batch_of_one_feature(parsed["x"], "x"), _batch_of_one_feature(parsed["x2"], "x2")


def _batch_of_one_feature(parsed: Any, name: str) -> Any:
    """Identity ``name`` of a parsed [1] feature, with the static shape [-1, 1] TF 1.x gave it
    (its ParseExample took a vector of examples; ParseExampleV2 given a placeholder of
    unknown rank infers nothing)."""
    parsed.set_shape([None, 1])
    return tf.identity(parsed, name=name)


def _asset_source(staging: Path) -> Path:
    """foo.txt written where the builder copies it from (its path ends up in the graph)."""
    source = staging / "original" / "export" / "assets" / ASSET_NAME
    source.parent.mkdir(parents=True, exist_ok=True)
    source.write_bytes(ASSET_CONTENTS)
    return source


def _asset_and_main_op(source: Path) -> Any:
    """The asset tensor in ASSET_FILEPATHS, and a main op assigning the asset's file name to
    a string variable kept out of every collection (so out of the checkpoint)."""
    path = tf.constant(str(source), name="Const")
    _v1.add_to_collection(_v1.GraphKeys.ASSET_FILEPATHS, path)
    filename = _ref_variable(ASSET_NAME, "filename_tensor", trainable=False, collections=[])
    return tf.group(_v1.assign(filename, ASSET_NAME))


def _save_v1(sess: Any, export_dir: Path, signatures: dict[str, Any], *, main_op: Any = None,
             order: list[str], legacy_init_op: bool = False) -> Path:
    builder = _v1.saved_model.Builder(str(export_dir))
    builder.add_meta_graph_and_variables(
        sess, _SERVE, signature_def_map=signatures, main_op=main_op,
        assets_collection=_v1.get_collection(_v1.GraphKeys.ASSET_FILEPATHS) or None,
        strip_default_attrs=True,
    )
    builder.save()
    _rewrite_saved_model(export_dir / "saved_model.pb", order, legacy_init_op)
    return export_dir


def _rewrite_saved_model(pb: Path, order: list[str], legacy_init_op: bool) -> None:
    """Store the signatures in ``order`` and, with ``legacy_init_op``, name the init op's
    collection as TF 1.1 and older did.

    Today's writers store protobuf maps sorted by key; TF Serving's files (TF 1.x) have them
    in hash order, which pyserving keeps. A map is a repeated field of (key, value) entries on
    the wire, so the MetaGraphDef is serialized without its signatures and the entries are
    appended one by one in the wanted order.
    """
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString(pb.read_bytes())
    (meta_graph,) = saved.meta_graphs
    assert sorted(order) == sorted(meta_graph.signature_def), (order, list(meta_graph.signature_def))
    if legacy_init_op:
        main_op = meta_graph.collection_def.pop("saved_model_main_op")
        meta_graph.collection_def["legacy_init_op"].CopyFrom(main_op)
    entries = b""
    for key in order:
        entry = _field(1, key.encode()) + _field(2, meta_graph.signature_def[key].SerializeToString())
        entries += _field(5, entry)  # MetaGraphDef.signature_def = 5
    expected = saved_model_pb2.SavedModel()
    expected.CopyFrom(saved)
    meta_graph.ClearField("signature_def")
    body = meta_graph.SerializeToString() + entries
    # SavedModel: saved_model_schema_version = 1 (varint), meta_graphs = 2
    pb.write_bytes(_varint(1 << 3) + _varint(saved.saved_model_schema_version) + _field(2, body))
    written = saved_model_pb2.SavedModel()
    written.ParseFromString(pb.read_bytes())
    assert written == expected, "the rewritten saved_model.pb does not parse to the same proto"


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


# ---------------------------------------------------------------------------- TF1 exports


def make_half_plus_two_cpu(export_dir: Path, staging: Path) -> Path:
    """``saved_model_half_plus_two_cpu`` (written by TF 1.14).

    Variables a = 0.5, b = 2, c = 3, a2 = 0.5, c2 = 3; ``tf_example`` (string placeholder of
    unknown rank) parsed into ``x`` and ``x2``; ``y`` = a*x + b, ``y2`` = a*x + c,
    ``y3`` = a2*x2 + c2 (Identity nodes). Signatures, in file order: ``serving_default``
    (predict, x -> y), ``classify_x_to_y`` (tf_example -> scores y), ``regress_x_to_y2``
    (tf_example -> outputs y2), ``regress_x_to_y`` (tf_example -> outputs y),
    ``regress_x2_to_y3`` (regress with a float input: x2 -> outputs y3). Asset foo.txt and a
    main op (``saved_model_main_op``).
    """
    with _graph_session() as sess:
        a = _ref_variable(0.5, "a")
        b = _ref_variable(2.0, "b")
        c = _ref_variable(3.0, "c")
        serialized = _v1.placeholder(tf.string, name="tf_example")
        x, x2 = _parse_x_and_x2(serialized)
        y = tf.identity(a * x + b, name="y")
        y2 = tf.identity(a * x + c, name="y2")
        a2 = _ref_variable(0.5, "a2")
        c2 = _ref_variable(3.0, "c2")
        y3 = tf.identity(a2 * x2 + c2, name="y3")
        main_op = _asset_and_main_op(_asset_source(staging))
        sess.run(_v1.global_variables_initializer())
        examples = {"inputs": _info(serialized)}
        sigs = {
            "serving_default": _signature({"x": _info(x)}, {"y": _info(y)}, PREDICT),
            "classify_x_to_y": _signature(examples, {"scores": _info(y)}, CLASSIFY),
            "regress_x_to_y2": _signature(examples, {"outputs": _info(y2)}, REGRESS),
            "regress_x_to_y": _signature(examples, {"outputs": _info(y)}, REGRESS),
            "regress_x2_to_y3": _signature({"inputs": _info(x2)}, {"outputs": _info(y3)}, REGRESS),
        }
        return _save_v1(sess, export_dir, sigs, main_op=main_op, order=list(sigs))


def make_half_plus_two_2_versions(export_dir: Path, staging: Path) -> Path:
    """One version of ``saved_model_half_plus_two_2_versions`` (written by TF 1.1).

    Variables a = 0.5, b = 2, c = 3; ``y`` = a*x + b, ``y2`` = a*x + c, ``y3`` = a*x2 + c.
    Signatures, in file order: ``serving_default``, ``classify_x_to_y``, ``classify_x2_to_y3``
    (classify with a float input: x2 -> scores y3), ``regress_x_to_y2``, ``regress_x_to_y``,
    ``regress_x2_to_y3``. Asset foo.txt; the init op in the ``legacy_init_op`` collection.
    """
    with _graph_session() as sess:
        a = _ref_variable(0.5, "a")
        b = _ref_variable(2.0, "b")
        c = _ref_variable(3.0, "c")
        serialized = _v1.placeholder(tf.string, name="tf_example")
        x, x2 = _parse_x_and_x2(serialized)
        y = tf.add(a * x, b, name="y")
        y2 = tf.add(a * x, c, name="y2")
        y3 = tf.add(a * x2, c, name="y3")
        main_op = _asset_and_main_op(_asset_source(staging))
        sess.run(_v1.global_variables_initializer())
        examples = {"inputs": _info(serialized)}
        sigs = {
            "serving_default": _signature({"x": _info(x)}, {"y": _info(y)}, PREDICT),
            "classify_x_to_y": _signature(examples, {"scores": _info(y)}, CLASSIFY),
            "classify_x2_to_y3": _signature({"inputs": _info(x2)}, {"scores": _info(y3)}, CLASSIFY),
            "regress_x_to_y2": _signature(examples, {"outputs": _info(y2)}, REGRESS),
            "regress_x_to_y": _signature(examples, {"outputs": _info(y)}, REGRESS),
            "regress_x2_to_y3": _signature({"inputs": _info(x2)}, {"outputs": _info(y3)}, REGRESS),
        }
        return _save_v1(sess, export_dir, sigs, main_op=main_op, order=list(sigs), legacy_init_op=True)


def make_half_plus_three(export_dir: Path, staging: Path) -> Path:
    """``saved_model_half_plus_three`` (written by TF 1.0, which recorded no shapes).

    Variables a = 0.5, b = 3, c = 3; ``tf_example`` parsed into ``x``; ``y`` = a*x + b;
    ``x2`` a float placeholder, ``y2`` = a*x2 + c. Signatures (no tensor shapes), in file
    order: ``serving_default`` (predict, x -> y) and ``tensorflow/serving/regress``
    (regress: inputs tf_example:0, recorded as DT_FLOAT as in TF Serving's file -> outputs
    ``Identity:0``, an Identity of y). Asset foo.txt; ``legacy_init_op``.
    """
    with _graph_session() as sess:
        a = _ref_variable(0.5, "a")
        b = _ref_variable(3.0, "b")
        c = _ref_variable(3.0, "c")
        serialized = _v1.placeholder(tf.string, name="tf_example")
        parsed = _v1.parse_example(serialized, {"x": tf.io.FixedLenFeature([1], tf.float32)})
        x = _batch_of_one_feature(parsed["x"], "x")
        y = tf.add(a * x, b, name="y")
        regress_out = tf.identity(y, name="Identity")
        x2 = _v1.placeholder(tf.float32, name="x2")
        tf.add(a * x2, c, name="y2")
        main_op = _asset_and_main_op(_asset_source(staging))
        sess.run(_v1.global_variables_initializer())
        sigs = {
            "serving_default": _signature(
                {"x": _info(x, shape=False)}, {"y": _info(y, shape=False)}, PREDICT),
            REGRESS: _signature(
                {"inputs": _info(serialized, shape=False, dtype=tf.float32)},
                {"outputs": _info(regress_out, shape=False)}, REGRESS),
        }
        return _save_v1(sess, export_dir, sigs, main_op=main_op, order=list(sigs), legacy_init_op=True)


def make_counter(export_dir: Path) -> Path:
    """``saved_model_counter`` (written by TF 1.5): a float reference variable ``counter`` = 0.

    Predict signatures (output alias ``output``, DT_FLOAT_REF scalars), in file order:
    ``get_counter`` (``counter:0``), ``incr_counter_by`` (input ``delta``, float of unknown
    rank; ``incr_counter_by_op/AssignAdd:0``), ``incr_counter`` (+1,
    ``incr_counter_op/AssignAdd:0``), ``reset_counter`` (= 0, ``reset_counter_op/Assign:0``).
    """
    with _graph_session() as sess:
        counter = _ref_variable(0.0, "counter")
        with tf.name_scope("incr_counter_op"):
            incr = _v1.assign_add(counter, 1.0)
        delta = _v1.placeholder(tf.float32, name="delta")
        with tf.name_scope("incr_counter_by_op"):
            incr_by = _v1.assign_add(counter, delta)
        with tf.name_scope("reset_counter_op"):
            reset = _v1.assign(counter, 0.0)
        sess.run(_v1.global_variables_initializer())
        ref = counter._ref()  # the variable's own DT_FLOAT_REF tensor, counter:0
        sigs = {
            "get_counter": _signature({}, {"output": _info(ref)}, PREDICT),
            "incr_counter_by": _signature({"delta": _info(delta)}, {"output": _info(incr_by)}, PREDICT),
            "incr_counter": _signature({}, {"output": _info(incr)}, PREDICT),
            "reset_counter": _signature({}, {"output": _info(reset)}, PREDICT),
        }
        return _save_v1(sess, export_dir, sigs, order=list(sigs))


def make_bad_half_plus_two(export_dir: Path) -> Path:
    """``bad_half_plus_two``: half_plus_two from the days before SavedModel, a V1 checkpoint
    ``export``, its graph ``export.meta`` and a ``checkpoint`` file. There is no
    saved_model.pb, so a SavedModel loader must refuse it (NOT_FOUND)."""
    from tensorflow.core.protobuf import saver_pb2

    export_dir.mkdir(parents=True)
    with _graph_session() as sess:
        a = _ref_variable(0.5, "Variable")
        b = _ref_variable(2.0, "Variable_1")
        x = _v1.placeholder(tf.float32, name="Placeholder")
        tf.add(a * x, b, name="Add")
        sess.run(_v1.global_variables_initializer())
        saver = _v1.train.Saver(write_version=saver_pb2.SaverDef.V1, sharded=False)
        saver.save(sess, str(export_dir / "export"), latest_filename="checkpoint")
    return export_dir


# ---------------------------------------------------------------------------- TF2 export


class _HalfPlusTwo(tf.Module):
    """The TF2 half_plus_two: variables a = 0.5, b = 2, c = 3 and the asset foo.txt."""

    def __init__(self, asset: Path) -> None:
        super().__init__()
        self.a = tf.Variable(0.5, name="a")
        self.b = tf.Variable(2.0, name="b")
        self.c = tf.Variable(3.0, name="c")
        self.asset = tf.saved_model.Asset(str(asset))

    @staticmethod
    def _x(serialized: tf.Tensor) -> tf.Tensor:
        return tf.io.parse_example(serialized, {"x": tf.io.FixedLenFeature([1], tf.float32)})["x"]

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def regress_xy(self, inputs: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"outputs": self.a * self._x(inputs) + self.b}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def regress_xy2(self, inputs: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"outputs": self.a * self._x(inputs) + self.c}

    @tf.function(input_signature=[tf.TensorSpec([1], tf.float32)])
    def regress_x2y3(self, inputs: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"outputs": self.a * inputs + self.c}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def classify_xy(self, inputs: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"scores": self.a * self._x(inputs) + self.b}

    @tf.function(input_signature=[tf.TensorSpec([1], tf.float32)])
    def classify_x2y3(self, inputs: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"scores": self.a * inputs + self.c}

    # A default value: the SignatureDef gets `defaults { key: "x" }` and x may be left out.
    @tf.function(input_signature=[tf.TensorSpec([1], tf.float32)])
    def predict(self, x: tf.Tensor = tf.constant([0.0])) -> dict[str, tf.Tensor]:
        return {"y": self.a * x + self.b}


def make_half_plus_two_tf2(export_dir: Path, staging: Path) -> Path:
    """``saved_model_half_plus_two_tf2_cpu`` (``tf.saved_model.save``, TF 2.14).

    All signatures are predict; input placeholders are ``<signature>_<argument>``, outputs
    ``StatefulPartitionedCall[_N]:0`` numbered in signature order: ``classify_x2_to_y3``
    (float [1] -> scores [1] = a*x2 + c), ``classify_x_to_y`` (string [-1] -> scores [-1,1]
    = a*x + b), ``regress_x2_to_y3``, ``regress_x_to_y``, ``regress_x_to_y2`` (a*x + c),
    ``serving_default`` (x float [1], default [0] -> y [1] = a*x + b); plus
    ``__saved_model_init_op``. Asset foo.txt.
    """
    module = _HalfPlusTwo(_asset_source(staging))
    signatures = {
        "regress_x_to_y": module.regress_xy,
        "regress_x_to_y2": module.regress_xy2,
        "regress_x2_to_y3": module.regress_x2y3,
        "classify_x_to_y": module.classify_xy,
        "classify_x2_to_y3": module.classify_x2y3,
        "serving_default": module.predict,
    }
    tf.saved_model.save(module, str(export_dir), signatures=signatures)
    return export_dir


# ---------------------------------------------------------------------------- TFLite


_TFLITE_SIGNATURE_DEF = f"""
inputs {{ key: "x" value {{ name: "tflite_input:0" dtype: DT_FLOAT
                          tensor_shape {{ dim {{ size: 1 }} dim {{ size: 1 }} }} }} }}
outputs {{ key: "y" value {{ name: "y:0" dtype: DT_FLOAT tensor_shape {{ dim {{ size: 1 }} dim {{ size: 1 }} }} }} }}
method_name: "{PREDICT}"
"""


def make_half_plus_two_tflite(export_dir: Path, with_sigdef: bool = False) -> Path:
    """``saved_model_half_plus_two_tflite[_with_sigdef]/00000123/model.tflite``.

    y = 0.5x + 2 (tensors ``x`` [1, 1], ``a``, ``b``, ``Mul``, ``y``), no SignatureDefs of
    its own, one metadata entry ``min_runtime_version``. With ``with_sigdef`` the input tensor
    is ``tflite_input`` and a second metadata entry, ``signature_defs_metadata``, holds a
    FlexBuffer map {"serving_default": serialized SignatureDef x (``tflite_input:0``) -> y
    (``y:0``), both DT_FLOAT [1, 1], predict}, the form TF Lite's ``SetSignatureDefMap`` writes
    and TF Serving reads.
    """
    from flatbuffers import flexbuffers
    from google.protobuf import text_format
    from tensorflow.core.protobuf import meta_graph_pb2

    input_name = "tflite_input" if with_sigdef else "x"
    with _graph_session() as sess:
        x = _v1.placeholder(tf.float32, [1, 1], name=input_name)
        product = tf.multiply(x, tf.constant(0.5, name="a"), name="Mul")
        y = tf.add(product, tf.constant(2.0, name="b"), name="y")
        model = _v1.lite.TFLiteConverter.from_session(sess, [x], [y]).convert()
    metadata: dict[str, bytes] = {}
    if with_sigdef:
        sig = text_format.Parse(_TFLITE_SIGNATURE_DEF, meta_graph_pb2.SignatureDef())
        fbb = flexbuffers.Builder()
        with fbb.Map():
            # FlexBuffers' Python String() takes text; this small SignatureDef serializes
            # to ASCII bytes (short lengths, low field numbers), so it round-trips exactly.
            fbb.String("serving_default", sig.SerializeToString().decode("ascii"))
        metadata["signature_defs_metadata"] = bytes(fbb.Finish())
    export_dir.mkdir(parents=True)
    (export_dir / "model.tflite").write_bytes(_with_metadata(model, metadata))
    return export_dir


def _with_metadata(model: bytes, extra: dict[str, bytes]) -> bytes:
    """The model with only its ``min_runtime_version`` metadata entry and ``extra`` added
    (the converter also writes ``CONVERSION_METADATA``, which TF Serving's files predate)."""
    import flatbuffers
    import numpy as np
    from tensorflow.lite.python import schema_py_generated as schema

    tree = schema.ModelT.InitFromPackedBuf(bytearray(model), 0)
    tree.metadata = [m for m in tree.metadata if m.name == b"min_runtime_version"]
    for name, data in extra.items():
        buffer = schema.BufferT()
        buffer.data = np.frombuffer(data, np.uint8)
        tree.buffers.append(buffer)
        entry = schema.MetadataT()
        entry.name = name
        entry.buffer = len(tree.buffers) - 1
        tree.metadata.append(entry)
    builder = flatbuffers.Builder(1024)
    builder.Finish(tree.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


# ---------------------------------------------------------------------------- the tree


def write_tree(root: Path) -> Path:
    """Write TF Serving's test data tree under ``root`` (created; must not hold it yet) and
    return ``root``. Files are made read-only, as in a checkout of TF Serving's data."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tfserving-staging-") as tmp:
        staging = Path(tmp)
        make_half_plus_two_cpu(root / "saved_model_half_plus_two_cpu" / VERSION, staging / "cpu")
        for version in (VERSION, "00000124"):
            make_half_plus_two_2_versions(
                root / "saved_model_half_plus_two_2_versions" / version, staging / version)
        make_half_plus_three(root / "saved_model_half_plus_three" / VERSION, staging / "three")
        make_half_plus_two_tf2(root / "saved_model_half_plus_two_tf2_cpu" / VERSION, staging / "tf2")
    make_counter(root / "saved_model_counter" / VERSION)
    make_bad_half_plus_two(root / "bad_half_plus_two" / VERSION)
    make_half_plus_two_tflite(root / "saved_model_half_plus_two_tflite" / VERSION)
    make_half_plus_two_tflite(root / "saved_model_half_plus_two_tflite_with_sigdef" / VERSION,
                              with_sigdef=True)
    for data in sorted(DATA_FILES.iterdir()):
        if data.suffix in (".txt", ".json"):
            shutil.copyfile(data, root / data.name)
    for path in root.rglob("*"):
        if path.is_file():
            path.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
    return root


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python tests/tfserving_testdata.py OUT_DIR", file=sys.stderr)
        return 2
    print(write_tree(Path(argv[0])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
