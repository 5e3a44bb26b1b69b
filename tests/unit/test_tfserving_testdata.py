"""TF Serving's test data tree: the generated one against TF Serving's own files.

The suite runs on the tree tests/tfserving_testdata.py writes (the `testdata` fixture). When
TF Serving's own files are at hand (`tfserving_testdata`: PYSERVING_SHARED_DIR or ../shared),
these tests also check that each generated export matches its original in everything a
client or the loader sees, and run the key checks (metadata, predict, the broken export, the
TFLite SignatureDef metadata, the config files) on both trees. Without them, the tests that
need them skip.
"""

from __future__ import annotations

import contextlib
import json
import string
import sys
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
from google.protobuf import json_format, text_format
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2

_TESTS_DIR = Path(__file__).resolve().parents[1]
if str(_TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(_TESTS_DIR))

import modelgen  # noqa: E402

from pyserving.api.rest import response_json  # noqa: E402
from pyserving.batching.options import read_batching_parameters_file  # noqa: E402
from pyserving.errors import Code, ServingError  # noqa: E402
from pyserving.monitoring.exporter import read_monitoring_config  # noqa: E402
from pyserving.platforms.tensorflow._wire_order import signature_key_order  # noqa: E402
from pyserving.platforms.tensorflow.saved_model import SavedModelLoader  # noqa: E402
from pyserving.server.model_config import (  # noqa: E402
    ConfigParseError,
    parse_config_text,
    read_config_file,
    to_model_configs,
)

SAVED_MODELS = [
    "saved_model_half_plus_two_cpu/00000123",
    "saved_model_half_plus_two_tf2_cpu/00000123",
    "saved_model_half_plus_two_2_versions/00000123",
    "saved_model_half_plus_two_2_versions/00000124",
    "saved_model_half_plus_three/00000123",
    "saved_model_counter/00000123",
]
TFLITE_MODELS = [
    "saved_model_half_plus_two_tflite/00000123",
    "saved_model_half_plus_two_tflite_with_sigdef/00000123",
]
# (model name, version, expected metadata file) of TF Serving's REST metadata answers.
METADATA = [
    ("saved_model_half_plus_two_cpu", "00000123", "half_plus_two_model_metadata.json"),
    ("saved_model_half_plus_two_2_versions", "00000123",
     "saved_model_half_plus_two_2_versions_metadata.json"),
]


@contextlib.contextmanager
def loaded(path: Path) -> Iterator[Any]:
    loader = SavedModelLoader(str(path))
    loader.load()
    try:
        yield loader.servable()
    finally:
        loader.unload()


def run(servable: Any, signature: str, **inputs: Any) -> dict[str, np.ndarray]:
    return servable.run(servable.signatures[signature], inputs)


def f32(values: Any) -> np.ndarray:
    return np.asarray(values, np.float32)


def examples(feature: str, *values: float) -> np.ndarray:
    return np.array(modelgen.serialized_examples(feature, list(values)), dtype=object)


def _good_config(root: Path, two: str, three: str) -> Any:
    text = string.Template((root / "good_model_config.txt").read_text())
    return parse_config_text(text.substitute(TEST_HALF_PLUS_TWO_DIR=two, TEST_HALF_PLUS_THREE_DIR=three))


# ---------------------------------------------------------------------------- generated == TF Serving's


def test_the_generated_tree_has_tf_servings_files(testdata: Path, tfserving_testdata: Path) -> None:
    def files(root: Path) -> set[str]:
        return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}

    assert files(testdata) == files(tfserving_testdata) - {"README.md"}


def _saved_model(path: Path) -> Any:
    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((path / "saved_model.pb").read_bytes())
    (meta_graph,) = proto.meta_graphs
    return meta_graph


def _variables(path: Path) -> dict[str, Any]:
    import tensorflow as tf

    reader = tf.train.load_checkpoint(str(path / "variables" / "variables"))
    names = [n for n in reader.get_variable_to_shape_map() if n != "_CHECKPOINTABLE_OBJECT_GRAPH"]
    return {name: reader.get_tensor(name).tolist() for name in names}


@pytest.mark.parametrize("export", SAVED_MODELS)
def test_each_generated_saved_model_matches_tf_servings(
    testdata: Path, tfserving_testdata: Path, export: str
) -> None:
    ours, theirs = testdata / export, tfserving_testdata / export
    mine, original = _saved_model(ours), _saved_model(theirs)
    # Signatures: names, aliases, tensor names, dtypes, shapes, method names, defaults...
    assert dict(mine.signature_def) == dict(original.signature_def)
    # ...in the order the file stores them...
    order = signature_key_order(str(ours / "saved_model.pb"), 0)
    assert order is not None and order == signature_key_order(str(theirs / "saved_model.pb"), 0)
    # ...the tags, the collections the loader reads (init op, assets) and the asset files...
    assert list(mine.meta_info_def.tags) == list(original.meta_info_def.tags)
    assert sorted(mine.collection_def) == sorted(original.collection_def)
    assert [a.filename for a in mine.asset_file_def] == [a.filename for a in original.asset_file_def]
    for asset in sorted((theirs / "assets").glob("*")):
        assert (ours / "assets" / asset.name).read_bytes() == asset.read_bytes()
    # ...and the checkpoint: variable names and values.
    assert _variables(ours) == _variables(theirs)


def _interpreter_facts(model: bytes) -> dict[str, Any]:
    from ai_edge_litert.interpreter import Interpreter

    from pyserving.platforms.tflite._flatbuffer import read_metadata, signature_defs_from_metadata

    interpreter = Interpreter(model_content=model)

    def tensors(details: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
        return [(d["name"], d["shape"].tolist(), d["shape_signature"].tolist(), d["dtype"])
                for d in details]

    return {
        "inputs": tensors(interpreter.get_input_details()),
        "outputs": tensors(interpreter.get_output_details()),
        "tensors": sorted(d["name"] for d in interpreter.get_tensor_details()),
        "signatures": interpreter.get_signature_list(),
        "metadata": list(read_metadata(model)),
        "signature_defs": signature_defs_from_metadata(model),
    }


@pytest.mark.parametrize("export", TFLITE_MODELS)
def test_each_generated_tflite_model_matches_tf_servings(
    testdata: Path, tfserving_testdata: Path, export: str
) -> None:
    ours = _interpreter_facts((testdata / export / "model.tflite").read_bytes())
    assert ours == _interpreter_facts((tfserving_testdata / export / "model.tflite").read_bytes())


def test_the_data_files_say_what_tf_servings_say(testdata: Path, tfserving_testdata: Path) -> None:
    from pyserving.protos.config_protos import BatchingParameters, MonitoringConfig, parse_text

    for name in ("half_plus_two_model_metadata.json", "saved_model_half_plus_two_2_versions_metadata.json",
                 "saved_model_half_plus_two_tf2_2_versions_metadata.json"):
        assert json.loads((testdata / name).read_text()) == json.loads((tfserving_testdata / name).read_text())
    for name, message in (("batching_config.txt", BatchingParameters), ("monitoring_config.txt", MonitoringConfig)):
        ours, theirs = (parse_text(message, (root / name).read_text()) for root in (testdata, tfserving_testdata))
        assert ours == theirs and ours.ListFields()
    ours, theirs = (_good_config(root, "/m/two", "/m/three") for root in (testdata, tfserving_testdata))
    assert ours == theirs


# ---------------------------------------------------------------------------- both trees


@pytest.mark.parametrize(("model", "version", "expected"), METADATA)
def test_metadata_is_tf_servings(each_testdata: Path, model: str, version: str, expected: str) -> None:
    want = json.loads((each_testdata / expected).read_text())
    with loaded(each_testdata / model / version) as servable:
        sigmap = json_format.MessageToDict(servable.signature_def_map(), preserving_proto_field_name=True,
                                           always_print_fields_with_no_presence=True)
    spec = want["model_spec"]
    text = response_json.encode_metadata(spec["name"], int(spec["version"]), sigmap)
    assert json.loads(text) == want


def test_predict_regress_and_classify_answer_half_plus_two(each_testdata: Path) -> None:
    with loaded(each_testdata / "saved_model_half_plus_two_cpu" / "00000123") as s:
        np.testing.assert_allclose(run(s, "serving_default", x=f32([[1.0], [2.0], [5.0]]))["y"],
                                   [[2.5], [3.0], [4.5]])
        np.testing.assert_allclose(run(s, "classify_x_to_y", inputs=examples("x", 2.0))["scores"], [[3.0]])
        np.testing.assert_allclose(run(s, "regress_x_to_y", inputs=examples("x", 4.0))["outputs"], [[4.0]])
        np.testing.assert_allclose(run(s, "regress_x_to_y2", inputs=examples("x", 4.0))["outputs"], [[5.0]])
        np.testing.assert_allclose(run(s, "regress_x2_to_y3", inputs=f32([[2.0]]))["outputs"], [[4.0]])
    for version in ("00000123", "00000124"):
        with loaded(each_testdata / "saved_model_half_plus_two_2_versions" / version) as s:
            np.testing.assert_allclose(run(s, "serving_default", x=f32([[1.0]]))["y"], [[2.5]])
            np.testing.assert_allclose(run(s, "classify_x2_to_y3", inputs=f32([[2.0]]))["scores"], [[4.0]])
    with loaded(each_testdata / "saved_model_half_plus_three" / "00000123") as s:
        np.testing.assert_allclose(run(s, "serving_default", x=f32([[1.0], [2.0]]))["y"], [[3.5], [4.0]])
    with loaded(each_testdata / "saved_model_half_plus_two_tf2_cpu" / "00000123") as s:
        np.testing.assert_allclose(s.run(s.signatures["serving_default"], {})["y"], [2.0])  # default x = [0]
        np.testing.assert_allclose(run(s, "serving_default", x=f32([2.0]))["y"], [3.0])
        np.testing.assert_allclose(run(s, "regress_x_to_y2", inputs=examples("x", 2.0))["outputs"], [[4.0]])
        np.testing.assert_allclose(run(s, "classify_x2_to_y3", inputs=f32([2.0]))["scores"], [4.0])


def test_the_counter_keeps_its_state(each_testdata: Path) -> None:
    with loaded(each_testdata / "saved_model_counter" / "00000123") as s:
        assert run(s, "get_counter")["output"] == 0.0
        run(s, "incr_counter")
        assert run(s, "incr_counter_by", delta=np.float32(2.5))["output"] == 3.5
        assert run(s, "reset_counter")["output"] == 0.0


def test_the_bad_export_fails_to_load_cleanly(each_testdata: Path) -> None:
    path = each_testdata / "bad_half_plus_two" / "00000123"
    loader = SavedModelLoader(str(path))
    with pytest.raises(ServingError) as info:
        loader.load()
    assert info.value.code == Code.NOT_FOUND
    assert "Could not find SavedModel .pb or .pbtxt" in info.value.message and str(path) in info.value.message
    assert "it looks like a SessionBundle export" in info.value.message  # export.meta is there


def test_the_tflite_signature_def_comes_from_the_metadata_buffer(each_testdata: Path) -> None:
    from pyserving.platforms.tflite.loader import TfLiteLoader

    for export, input_name in (("saved_model_half_plus_two_tflite_with_sigdef", "tflite_input"),
                               ("saved_model_half_plus_two_tflite", "x")):
        # With the metadata, its SignatureDef (tensor names without ":0"); without, the
        # signature TF Serving makes from the model's input and output tensors.
        want = text_format.Parse(f"""
            inputs {{ key: "x" value {{ name: "{input_name}" dtype: DT_FLOAT
                                       tensor_shape {{ dim {{ size: 1 }} dim {{ size: 1 }} }} }} }}
            outputs {{ key: "y" value {{ name: "y" dtype: DT_FLOAT tensor_shape {{ dim {{ size: 1 }} dim {{ size: 1 }} }} }} }}
            method_name: "tensorflow/serving/predict"
        """, meta_graph_pb2.SignatureDef())
        loader = TfLiteLoader(str(each_testdata / export / "00000123"), num_tflite_pools=1)
        loader.load()
        try:
            servable = loader.servable()
            assert servable.signature_def_map().signature_def["serving_default"] == want
            assert run(servable, "serving_default", x=f32([[2.0]]))["y"].tolist() == [[3.0]]
        finally:
            loader.unload()


def test_the_config_files_parse(each_testdata: Path) -> None:
    configs = to_model_configs(_good_config(each_testdata, str(each_testdata / "saved_model_half_plus_two_cpu"),
                                            str(each_testdata / "saved_model_half_plus_three")))
    assert [(c.name, c.base_path, c.platform) for c in configs] == [
        ("half_plus_two", str(each_testdata / "saved_model_half_plus_two_cpu"), "tensorflow"),
        ("half_plus_three", str(each_testdata / "saved_model_half_plus_three"), "tensorflow"),
    ]
    with pytest.raises(ConfigParseError, match="Error parsing text-format tensorflow.serving.ModelServerConfig"):
        read_config_file(str(each_testdata / "bad_model_config.txt"))
    batching = read_batching_parameters_file(str(each_testdata / "batching_config.txt"))
    assert (batching.max_batch_size, batching.batch_timeout_micros, batching.max_enqueued_batches,
            batching.num_batch_threads) == (128, 0, 1000000, 8)
    monitoring = read_monitoring_config(str(each_testdata / "monitoring_config.txt"))
    assert monitoring.enable and monitoring.path == "/monitoring/prometheus/metrics"
