"""Generators for tiny, real TensorFlow SavedModels used throughout the test suite.

Every ``make_*`` function writes one SavedModel into ``<base_dir>/<version>/`` and returns
that path. ``<base_dir>`` is created if needed; ``<base_dir>/<version>`` must not exist yet.
All models are deterministic (fixed constants or fixed seeds) and build in well under a
few seconds on 2 CPU cores.

TF1-style exports (``SavedModelBuilder``, ``simple_save``, frozen graphs) are built inside
``tf.Graph().as_default()`` with an explicit ``tf.compat.v1.Session``, so they work while
eager mode stays on in the calling process. TF2 exports use ``tf.saved_model.save``.

Run ``python tests/modelgen.py OUT_DIR`` to write every model under ``OUT_DIR/<model>/1``.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import tensorflow as tf
from tensorflow.python.util import deprecation

__all__ = [
    "make_half_plus_two",
    "make_half_plus_two_simple_save",
    "make_frozen_graph_model",
    "make_tf2_multi_signature",
    "make_keras_export",
    "make_image_bytes_model",
    "make_siamese_model",
    "make_detection_model",
    "make_mnist_cnn",
    "make_classifier_model",
    "make_slow_model",
    "make_simple",
    "make_broken_version",
    "png_bytes",
    "jpeg_bytes",
    "serialized_examples",
    "image_bytes_model_reference",
    "detection_model_reference",
    "frozen_graph_weights",
    "keras_export_weights",
    "build_mnist_cnn",
    "CLASSIFIER_LABELS",
    "ALL_GENERATORS",
    "IDENTITY_DTYPES",
    "make_identity_model",
]

_v1 = tf.compat.v1
_SERVE = [tf.saved_model.SERVING]
_DEFAULT_KEY = tf.saved_model.DEFAULT_SERVING_SIGNATURE_DEF_KEY


def _version_dir(base_dir: str | Path, version: int) -> Path:
    base = Path(base_dir)
    base.mkdir(parents=True, exist_ok=True)
    return base / str(version)


@contextlib.contextmanager
def _v1_session() -> Iterator[Any]:
    """A ``tf.compat.v1.Session`` on a fresh graph made the default, TF1 deprecation logs off."""
    with tf.Graph().as_default() as graph, _v1.Session(graph=graph) as sess:
        with deprecation.silence():
            yield sess


def _save_v1(
    sess: Any, export_dir: Path, signatures: dict[str, Any], main_op: Any = None
) -> Path:
    builder = _v1.saved_model.Builder(str(export_dir))
    builder.add_meta_graph_and_variables(
        sess, _SERVE, signature_def_map=signatures, main_op=main_op, strip_default_attrs=True
    )
    builder.save()
    return export_dir


def serialized_examples(feature: str, values: list[float]) -> list[bytes]:
    """One serialized ``tf.train.Example`` per value, with float feature ``feature``."""
    out = []
    for v in values:
        ex = tf.train.Example(
            features=tf.train.Features(
                feature={feature: tf.train.Feature(float_list=tf.train.FloatList(value=[v]))}
            )
        )
        out.append(ex.SerializeToString())
    return out


# ---------------------------------------------------------------------------- half plus two


def _half_plus_two_graph(slope: float, intercept: float) -> tuple[Any, Any, Any]:
    """Build TF Serving's half_plus_two graph in the current default graph.

    Returns (serialized tf.Example placeholder, x, y); ``x`` is ``x:0`` (an identity of the
    parsed feature, shape [-1, 1], fed directly by the predict signature) and ``y`` is
    ``y:0`` = slope * x + intercept (slope and intercept are variables).
    """
    a = _v1.get_variable("a", initializer=tf.constant(slope, tf.float32))
    b = _v1.get_variable("b", initializer=tf.constant(intercept, tf.float32))
    serialized = _v1.placeholder(tf.string, shape=[None], name="tf_example")
    parsed = _v1.parse_example(serialized, {"x": tf.io.FixedLenFeature([1], tf.float32)})
    x = tf.identity(parsed["x"], name="x")
    y = tf.add(tf.multiply(a, x), b, name="y")
    return serialized, x, y


def make_half_plus_two(
    base_dir: str | Path, version: int = 1, slope: float = 0.5, intercept: float = 2.0
) -> Path:
    """TF1 ``SavedModelBuilder`` export shaped like TF Serving's ``saved_model_half_plus_two``.

    Signatures (tag ``serve``):
    - ``serving_default`` (predict): ``x`` (DT_FLOAT [-1,1], ``x:0``) -> ``y`` (``y:0``);
    - ``classify_x_to_y`` (classify): ``inputs`` (DT_STRING [-1], serialized tf.Example with
      float feature ``x``) -> ``scores`` (``y:0``);
    - ``regress_x_to_y`` (regress): ``inputs`` -> ``outputs`` (``y:0``).
    ``y = slope * x + intercept``; use a different ``intercept`` per version to tell them apart.
    """
    export_dir = _version_dir(base_dir, version)
    with _v1_session() as sess:
        serialized, x, y = _half_plus_two_graph(slope, intercept)
        sess.run(_v1.global_variables_initializer())
        sigs = {
            _DEFAULT_KEY: _v1.saved_model.predict_signature_def({"x": x}, {"y": y}),
            "classify_x_to_y": _v1.saved_model.classification_signature_def(
                serialized, None, y
            ),
            "regress_x_to_y": _v1.saved_model.regression_signature_def(serialized, y),
        }
        return _save_v1(sess, export_dir, sigs)


def make_half_plus_two_simple_save(
    base_dir: str | Path, version: int = 1, slope: float = 0.5, intercept: float = 2.0
) -> Path:
    """The half_plus_two computation exported with ``tf.compat.v1.saved_model.simple_save``.

    One signature, ``serving_default`` (predict): ``x`` (DT_FLOAT [-1,1]) -> ``y``.
    """
    export_dir = _version_dir(base_dir, version)
    with _v1_session() as sess:
        _, x, y = _half_plus_two_graph(slope, intercept)
        sess.run(_v1.global_variables_initializer())
        _v1.saved_model.simple_save(sess, str(export_dir), inputs={"x": x}, outputs={"y": y})
    return export_dir


# ---------------------------------------------------------------------------- frozen graph


def make_frozen_graph_model(base_dir: str | Path, version: int = 1) -> Path:
    """Seed 004's "frozen graph -> SavedModel" route.

    A graph with variables (input ``input_1`` [-1,4] float32, dense 4->3 then softmax) is frozen
    with ``convert_variables_to_constants``, imported with ``import_graph_def(name="")`` into
    a fresh graph and exported with ``SavedModelBuilder``. Signature ``serving_default``
    (predict): ``input_image`` (``input_1:0``, DT_FLOAT [-1,4]) -> ``y_pred``
    (``dense/Softmax:0``, DT_FLOAT [-1,3]) = softmax(x @ W + b) with
    ``W = arange(12).reshape(4,3) / 10`` and ``b = [0.1, 0.2, 0.3]``.
    """
    export_dir = _version_dir(base_dir, version)
    w_value, b_value = frozen_graph_weights()
    with _v1_session() as sess:
        x = _v1.placeholder(tf.float32, [None, 4], name="input_1")
        with _v1.variable_scope("dense"):
            w = _v1.get_variable("kernel", initializer=tf.constant(w_value))
            b = _v1.get_variable("bias", initializer=tf.constant(b_value))
            y = tf.nn.softmax(tf.matmul(x, w) + b, name="Softmax")
        sess.run(_v1.global_variables_initializer())
        frozen = _v1.graph_util.convert_variables_to_constants(
            sess, sess.graph.as_graph_def(), [y.op.name]
        )
    with _v1_session() as sess2:
        tf.graph_util.import_graph_def(frozen, name="")
        g2 = sess2.graph
        sigs = {
            _DEFAULT_KEY: _v1.saved_model.predict_signature_def(
                {"input_image": g2.get_tensor_by_name("input_1:0")},
                {"y_pred": g2.get_tensor_by_name("dense/Softmax:0")},
            )
        }
        return _save_v1(sess2, export_dir, sigs)


def frozen_graph_weights() -> tuple[np.ndarray, np.ndarray]:
    """The (W, b) constants of `make_frozen_graph_model`."""
    return (
        (np.arange(12, dtype=np.float32).reshape(4, 3) / 10).astype(np.float32),
        np.array([0.1, 0.2, 0.3], np.float32),
    )


# ---------------------------------------------------------------------------- TF2 multi signature


class _MultiSignatureModule(tf.Module):
    def __init__(self) -> None:
        super().__init__()
        self.slope = tf.Variable(0.5, dtype=tf.float32)
        self.intercept = tf.Variable(2.0, dtype=tf.float32)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
    def half_plus_two(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"y": self.slope * x + self.intercept}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
    def times_three(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"y": 3.0 * x}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.int64, name="x")])
    def add_one_int64(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"y": x + 1}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def echo_bytes(self, text: tf.Tensor) -> dict[str, tf.Tensor]:
        return {
            "echo_bytes": text,
            "upper": tf.strings.upper(text),
            "length": tf.strings.length(text),
        }

    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.float32, name="a"),
            tf.TensorSpec([None, 2], tf.int32, name="b"),
        ]
    )
    def multi_input(self, a: tf.Tensor, b: tf.Tensor) -> dict[str, tf.Tensor]:
        total = a + tf.cast(tf.reduce_sum(b, axis=1), tf.float32)
        return {"sum": total, "b_doubled": b * 2}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
    def mismatched_batch(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"same": x, "doubled_batch": tf.concat([x, x], axis=0)}


def make_tf2_multi_signature(base_dir: str | Path, version: int = 1) -> Path:
    """``tf.saved_model.save`` of a ``tf.Module`` with several ``@tf.function`` signatures.

    Signatures (all predict; TF2 input aliases are the TensorSpec names):
    - ``serving_default``: ``x`` float32 [-1] -> ``y`` = 0.5x + 2 (slope/intercept variables);
    - ``times_three``: ``x`` float32 [-1] -> ``y`` = 3x;
    - ``add_one_int64``: ``x`` int64 [-1] -> ``y`` = x + 1 (int64);
    - ``echo_bytes``: ``text`` string [-1] -> ``echo_bytes`` (the input, DT_STRING),
      ``upper`` (DT_STRING, upper-cased), ``length`` (int32 byte lengths);
    - ``multi_input``: ``a`` float32 [-1], ``b`` int32 [-1,2] -> ``sum`` float32 [-1]
      = a + b.sum(1), ``b_doubled`` int32 [-1,2];
    - ``mismatched_batch``: ``x`` float32 [-1] -> ``same`` [n] and ``doubled_batch`` [2n]
      (outputs of different batch sizes, for REST's batch-consistency error).
    The file also holds TF2's ``__saved_model_init_op`` pseudo-signature.
    """
    export_dir = _version_dir(base_dir, version)
    module = _MultiSignatureModule()
    signatures = {
        _DEFAULT_KEY: module.half_plus_two,
        "times_three": module.times_three,
        "add_one_int64": module.add_one_int64,
        "echo_bytes": module.echo_bytes,
        "multi_input": module.multi_input,
        "mismatched_batch": module.mismatched_batch,
    }
    tf.saved_model.save(module, str(export_dir), signatures=signatures)
    return export_dir


# ---------------------------------------------------------------------------- Keras export


def make_keras_export(base_dir: str | Path, version: int = 1) -> Path:
    """A Keras 3 model exported with ``model.export(path, format="tf_saved_model")``.

    Model: ``Input((3,), name="features")`` -> ``Dense(2, name="dense")`` with kernel
    ``[[1,0],[0,1],[1,1]]`` and bias ``[0.5,-0.5]`` (so y = [x0+x2+0.5, x1+x2-0.5]).
    Keras 3 writes two identical predict signatures, ``serve`` and ``serving_default``,
    each with input alias ``features`` (named after the Input layer; an unnamed Input gets
    the alias ``keras_tensor``) DT_FLOAT [-1,3] and output alias ``output_0`` DT_FLOAT
    [-1,2]; plus TF2's ``__saved_model_init_op``.
    """
    import keras  # noqa: PLC0415 - keras import is slow; only pay for it when used

    export_dir = _version_dir(base_dir, version)
    inputs = keras.layers.Input((3,), name="features")
    outputs = keras.layers.Dense(2, name="dense")(inputs)
    model = keras.Model(inputs, outputs)
    model.get_layer("dense").set_weights(keras_export_weights())
    model.export(str(export_dir), format="tf_saved_model", verbose=False)
    return export_dir


def keras_export_weights() -> list[np.ndarray]:
    """The [kernel, bias] of `make_keras_export`'s Dense layer."""
    return [
        np.array([[1, 0], [0, 1], [1, 1]], np.float32),
        np.array([0.5, -0.5], np.float32),
    ]


# ---------------------------------------------------------------------------- image bytes


_IMAGE_SIZE = 32
_IMAGE_CLASSES = 4


def _image_weights() -> np.ndarray:
    return np.array(
        [[1.0, 0.0, 0.5, -1.0], [0.0, 1.0, 0.5, -1.0], [0.0, 0.0, 1.0, 2.0]], np.float32
    )


class _ImageBytesModule(tf.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = tf.Variable(_image_weights())

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
    def serve(self, image_bytes: tf.Tensor) -> dict[str, tf.Tensor]:
        def decode(data: tf.Tensor) -> tf.Tensor:
            image = tf.io.decode_image(data, channels=3, expand_animations=False)
            image = tf.image.resize(image, [_IMAGE_SIZE, _IMAGE_SIZE]) / 255.0
            return tf.ensure_shape(image, [_IMAGE_SIZE, _IMAGE_SIZE, 3])

        images = tf.map_fn(
            decode,
            image_bytes,
            fn_output_signature=tf.TensorSpec([_IMAGE_SIZE, _IMAGE_SIZE, 3], tf.float32),
        )
        mean_rgb = tf.reduce_mean(images, axis=[1, 2])  # [batch, 3]
        return {"probabilities": tf.nn.softmax(tf.matmul(mean_rgb, self.w))}


def make_image_bytes_model(base_dir: str | Path, version: int = 1) -> Path:
    """Seed 000's custom serving function taking encoded image bytes.

    ``serving_default`` (predict): ``image_bytes`` DT_STRING [-1] (PNG/JPEG/BMP/GIF bytes, one
    image per element) -> ``probabilities`` DT_FLOAT [-1,4]. Each image is decoded with
    ``channels=3``, resized to 32x32 and scaled to [0,1]; the output is
    ``softmax(mean_rgb @ W)`` (see `image_bytes_model_reference`). ``tf.map_fn`` makes
    batches of several images work.
    """
    export_dir = _version_dir(base_dir, version)
    module = _ImageBytesModule()
    tf.saved_model.save(module, str(export_dir), signatures={_DEFAULT_KEY: module.serve})
    return export_dir


def image_bytes_model_reference(rgb: tuple[int, int, int]) -> np.ndarray:
    """Expected `make_image_bytes_model` output for a solid-colour image of ``rgb``."""
    logits = (np.asarray(rgb, np.float32) / 255.0) @ _image_weights()
    e = np.exp(logits - logits.max())
    return (e / e.sum()).astype(np.float32)


def png_bytes(height: int = 8, width: int = 8, rgb: tuple[int, int, int] = (255, 0, 0)) -> bytes:
    """A small valid PNG of one solid colour."""
    image = tf.constant(np.broadcast_to(np.asarray(rgb, np.uint8), (height, width, 3)))
    return bytes(tf.io.encode_png(image).numpy())


def jpeg_bytes(height: int = 8, width: int = 8, rgb: tuple[int, int, int] = (255, 0, 0)) -> bytes:
    """A small valid JPEG of one solid colour (lossy: decoded values are only close)."""
    image = tf.constant(np.broadcast_to(np.asarray(rgb, np.uint8), (height, width, 3)))
    return bytes(tf.io.encode_jpeg(image, quality=100).numpy())


# ---------------------------------------------------------------------------- siamese


def make_siamese_model(base_dir: str | Path, version: int = 1) -> Path:
    """Seed 004's two-input siamese re-identification model (TF1 ``SavedModelBuilder``).

    Single signature ``signature-reid`` (predict; there is no ``serving_default``):
    ``img1`` (``input_6:0``) and ``img2`` (``input_7:0``), both DT_FLOAT [-1,64,32,3] ->
    ``predict`` (``dense_2/Sigmoid:0``) DT_FLOAT [-1,1]
    = sigmoid(2 - 10 * sum(|mean_rgb(img1) - mean_rgb(img2)|)).
    Identical images give sigmoid(2) ~ 0.8808.
    """
    export_dir = _version_dir(base_dir, version)
    with _v1_session() as sess:
        img1 = _v1.placeholder(tf.float32, [None, 64, 32, 3], name="input_6")
        img2 = _v1.placeholder(tf.float32, [None, 64, 32, 3], name="input_7")
        scale = _v1.get_variable("scale", initializer=tf.constant(-10.0))
        bias = _v1.get_variable("bias", initializer=tf.constant(2.0))
        e1 = tf.reduce_mean(img1, axis=[1, 2])
        e2 = tf.reduce_mean(img2, axis=[1, 2])
        dist = tf.reduce_sum(tf.abs(e1 - e2), axis=1, keepdims=True)
        with tf.name_scope("dense_2"):
            pred = tf.sigmoid(scale * dist + bias, name="Sigmoid")
        sess.run(_v1.global_variables_initializer())
        sigs = {
            "signature-reid": _v1.saved_model.predict_signature_def(
                {"img1": img1, "img2": img2}, {"predict": pred}
            )
        }
        return _save_v1(sess, export_dir, sigs)


# ---------------------------------------------------------------------------- detection


_MAX_DETECTIONS = 100


def make_detection_model(base_dir: str | Path, version: int = 1) -> Path:
    """Seed 004's object-detection signature shape (like ssd_mobilenet_v2's export).

    ``serving_default`` (predict): ``inputs`` (``image_tensor:0``) DT_UINT8 [-1,-1,-1,3] ->
    ``detection_boxes`` [-1,100,4], ``detection_classes`` [-1,100], ``detection_scores``
    [-1,100], ``num_detections`` [-1], all DT_FLOAT. Deterministic: with ``m`` the image's
    mean pixel value / 255, box i is ``[i/100, i/100, (i+1)/100, (i+1)/100]``, class i is
    ``i % 90 + 1``, score i is ``m * (1 - i/100)`` and ``num_detections`` counts scores > 0.5.
    """
    export_dir = _version_dir(base_dir, version)
    n = _MAX_DETECTIONS
    with _v1_session() as sess:
        images = _v1.placeholder(tf.uint8, [None, None, None, 3], name="image_tensor")
        batch = tf.shape(images)[0]
        mean = tf.reduce_mean(tf.cast(images, tf.float32), axis=[1, 2, 3]) / 255.0  # [b]
        idx = tf.range(n, dtype=tf.float32) / n
        box = tf.stack([idx, idx, idx + 1.0 / n, idx + 1.0 / n], axis=1)  # [n, 4]
        boxes = tf.tile(box[tf.newaxis], tf.stack([batch, 1, 1]), name="detection_boxes")
        classes_row = tf.cast(tf.range(n) % 90 + 1, tf.float32)
        classes = tf.tile(classes_row[tf.newaxis], tf.stack([batch, 1]), name="detection_classes")
        scores = tf.identity(mean[:, tf.newaxis] * (1.0 - idx[tf.newaxis]), name="detection_scores")
        num = tf.reduce_sum(tf.cast(scores > 0.5, tf.float32), axis=1, name="num_detections")
        boxes.set_shape([None, n, 4])
        classes.set_shape([None, n])
        scores.set_shape([None, n])
        sigs = {
            _DEFAULT_KEY: _v1.saved_model.predict_signature_def(
                {"inputs": images},
                {
                    "detection_boxes": boxes,
                    "detection_classes": classes,
                    "detection_scores": scores,
                    "num_detections": num,
                },
            )
        }
        return _save_v1(sess, export_dir, sigs)


def detection_model_reference(images: np.ndarray) -> dict[str, np.ndarray]:
    """Expected `make_detection_model` outputs for a uint8 batch ``images`` [b,h,w,3]."""
    n = _MAX_DETECTIONS
    b = images.shape[0]
    mean = images.reshape(b, -1).astype(np.float64).mean(axis=1) / 255.0
    idx = np.arange(n, dtype=np.float32) / n
    box = np.stack([idx, idx, idx + 1.0 / n, idx + 1.0 / n], axis=1)
    scores = (mean[:, None] * (1.0 - idx[None])).astype(np.float32)
    return {
        "detection_boxes": np.broadcast_to(box, (b, n, 4)).astype(np.float32),
        "detection_classes": np.broadcast_to(
            (np.arange(n) % 90 + 1).astype(np.float32), (b, n)
        ).copy(),
        "detection_scores": scores,
        "num_detections": (scores > 0.5).sum(axis=1).astype(np.float32),
    }


# ---------------------------------------------------------------------------- MNIST CNN


def build_mnist_cnn(seed: int = 0) -> Any:
    """Seed 004's MNIST CNN as a Keras 3 model (156,234 parameters), random weights."""
    import keras  # noqa: PLC0415

    keras.utils.set_random_seed(seed)
    layers = keras.layers
    model = keras.Sequential(name="mnist_cnn")
    model.add(layers.InputLayer(shape=(28, 28, 1)))
    for filters in (16, 32, 64):
        model.add(
            layers.Conv2D(filters, kernel_size=(3, 3), strides=(1, 1), padding="same",
                          activation="relu")
        )
        model.add(layers.MaxPooling2D(pool_size=(2, 2), strides=(2, 2), padding="same"))
        model.add(layers.BatchNormalization(axis=-1, momentum=0.99, epsilon=0.001))
    model.add(layers.Flatten())
    model.add(layers.Dense(128, activation="relu"))
    model.add(layers.Dropout(0.5))
    model.add(layers.Dense(10, activation="softmax"))
    return model


def make_mnist_cnn(base_dir: str | Path, version: int = 1, seed: int = 0) -> Path:
    """Seed 004's MNIST CNN (Conv2D 16/32/64 + MaxPool + BatchNorm, Dense 128, Dropout, Dense 10).

    Untrained, weights from ``keras.utils.set_random_seed(seed)`` (`build_mnist_cnn` gives
    the same model for in-process comparisons). Exported with ``keras.export.ExportArchive``
    as one endpoint in inference mode: ``serving_default`` (predict) ``input_image``
    DT_FLOAT [-1,28,28,1] -> ``y_pred`` DT_FLOAT [-1,10] (softmax rows); plus TF2's
    ``__saved_model_init_op``.

    Not ``tf.saved_model.save`` of a ``tf.Module`` holding the Keras 3 model: that export
    writes each variable twice (Keras-named handles and ``Variable_N``), the checkpoint
    restore through the TF1 loader (TF Serving's path) fills only one set, and every run
    fails with FAILED_PRECONDITION "Could not find variable ...".
    """
    import keras  # noqa: PLC0415

    export_dir = _version_dir(base_dir, version)
    model = build_mnist_cnn(seed)
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        name=_DEFAULT_KEY,
        fn=lambda input_image: {"y_pred": model(input_image, training=False)},
        input_signature=[tf.TensorSpec([None, 28, 28, 1], tf.float32, name="input_image")],
    )
    archive.write_out(str(export_dir), verbose=False)
    return export_dir


# ---------------------------------------------------------------------------- classifier


CLASSIFIER_LABELS = (b"negative", b"positive")


def make_classifier_model(base_dir: str | Path, version: int = 1) -> Path:
    """TF1 graph with a classify and a regress signature over tf.Example feature ``x``.

    - ``serving_default`` (``tensorflow/serving/classify``): ``inputs`` DT_STRING [-1]
      (serialized tf.Example, float feature ``x``) -> ``classes`` DT_STRING [-1,2]
      (always ``[b"negative", b"positive"]``) and ``scores`` DT_FLOAT [-1,2]
      = ``[sigmoid(-x), sigmoid(x)]``;
    - ``regress`` (``tensorflow/serving/regress``): ``inputs`` -> ``outputs`` DT_FLOAT [-1]
      = 2x + 1.
    """
    export_dir = _version_dir(base_dir, version)
    with _v1_session() as sess:
        serialized = _v1.placeholder(tf.string, shape=[None], name="tf_example")
        parsed = _v1.parse_example(serialized, {"x": tf.io.FixedLenFeature([1], tf.float32)})
        x = parsed["x"]  # [n, 1]
        scores = tf.concat([tf.sigmoid(-x), tf.sigmoid(x)], axis=1, name="scores")
        labels = tf.constant(list(CLASSIFIER_LABELS))
        classes = tf.tile(labels[tf.newaxis], tf.stack([tf.shape(x)[0], 1]), name="classes")
        classes.set_shape([None, 2])
        value = tf.reshape(2.0 * x + 1.0, [-1], name="value")
        sigs = {
            _DEFAULT_KEY: _v1.saved_model.classification_signature_def(
                serialized, classes, scores
            ),
            "regress": _v1.saved_model.regression_signature_def(serialized, value),
        }
        return _save_v1(sess, export_dir, sigs)


# ---------------------------------------------------------------------------- simple (Triton's)


class _SimpleModule(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None, 16], tf.int32, name="INPUT0"),
                                  tf.TensorSpec([None, 16], tf.int32, name="INPUT1")])
    def serve(self, INPUT0: tf.Tensor, INPUT1: tf.Tensor) -> dict[str, tf.Tensor]:  # noqa: N803
        return {"OUTPUT0": INPUT0 + INPUT1, "OUTPUT1": INPUT0 - INPUT1}


def make_simple(base_dir: str | Path, version: int = 1) -> Path:
    """Triton's ``simple`` example model as a TF2 SavedModel, for the Open Inference Protocol
    clients' own examples: ``serving_default`` takes ``INPUT0`` and ``INPUT1`` (DT_INT32
    [-1,16]) and gives ``OUTPUT0`` = INPUT0 + INPUT1 and ``OUTPUT1`` = INPUT0 - INPUT1."""
    export_dir = _version_dir(base_dir, version)
    module = _SimpleModule()
    tf.saved_model.save(module, str(export_dir), signatures={_DEFAULT_KEY: module.serve})
    return export_dir


# ---------------------------------------------------------------------------- slow model


def make_slow_model(base_dir: str | Path, version: int = 1) -> Path:
    """A model whose run time is set by the request, for deadline tests.

    ``serving_default`` (predict): ``n`` DT_INT64 scalar [] -> ``count`` DT_FLOAT [] after
    ``n`` iterations of a ``tf.while_loop`` (a few microseconds each; 10**7 takes many
    seconds, so a request with a short timeout reliably hits DEADLINE_EXCEEDED, and TF
    cancels the loop when the deadline passes).
    """
    export_dir = _version_dir(base_dir, version)
    with _v1_session() as sess:
        n = _v1.placeholder(tf.int64, [], name="n")
        _, count = tf.while_loop(
            lambda i, c: i < n,
            lambda i, c: (i + 1, c + 1.0),
            (tf.constant(0, tf.int64), tf.constant(0.0)),
        )
        count = tf.identity(count, name="count")
        sigs = {_DEFAULT_KEY: _v1.saved_model.predict_signature_def({"n": n}, {"count": count})}
        return _save_v1(sess, export_dir, sigs)


# ---------------------------------------------------------------------------- broken


def make_broken_version(base_dir: str | Path, version: int = 1) -> Path:
    """A version folder whose ``saved_model.pb`` is garbage bytes (loading must fail)."""
    export_dir = _version_dir(base_dir, version)
    export_dir.mkdir()
    (export_dir / "saved_model.pb").write_bytes(b"\x00\xffthis is not a SavedModel\xff" * 8)
    return export_dir


# ---------------------------------------------------------------------------- identity per dtype


IDENTITY_DTYPES = {
    "float32": tf.float32, "float64": tf.float64, "float16": tf.float16, "bfloat16": tf.bfloat16,
    "int8": tf.int8, "int16": tf.int16, "int32": tf.int32, "int64": tf.int64,
    "uint8": tf.uint8, "uint16": tf.uint16, "uint32": tf.uint32, "uint64": tf.uint64,
    "bool": tf.bool, "complex64": tf.complex64, "complex128": tf.complex128, "string": tf.string,
}


def make_identity_model(base: Path, version: int = 1) -> Path:
    """One signature per dtype, named after it: `x` (any shape) -> `y` = identity(x)."""
    export_dir = base / str(version)
    signatures = {}
    for name, dtype in IDENTITY_DTYPES.items():
        fn = tf.function(lambda x: {"y": tf.identity(x)}, input_signature=[tf.TensorSpec(None, dtype, name="x")])
        signatures[name] = fn.get_concrete_function()
    tf.saved_model.save(tf.Module(), str(export_dir), signatures=signatures)
    return export_dir


ALL_GENERATORS: dict[str, Callable[..., Path]] = {
    "half_plus_two": make_half_plus_two,
    "half_plus_two_simple_save": make_half_plus_two_simple_save,
    "frozen_graph": make_frozen_graph_model,
    "tf2_multi_signature": make_tf2_multi_signature,
    "keras_export": make_keras_export,
    "image_bytes": make_image_bytes_model,
    "siamese": make_siamese_model,
    "detection": make_detection_model,
    "mnist_cnn": make_mnist_cnn,
    "classifier": make_classifier_model,
    "slow": make_slow_model,
    "simple": make_simple,
    "broken": make_broken_version,
}


def main(argv: list[str]) -> int:
    """Write every model under ``argv[0]/<name>/1`` and print the paths."""
    if len(argv) != 1:
        print("usage: python tests/modelgen.py OUT_DIR", file=sys.stderr)
        return 2
    out = Path(argv[0])
    for name, make in ALL_GENERATORS.items():
        print(make(out / name, 1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
