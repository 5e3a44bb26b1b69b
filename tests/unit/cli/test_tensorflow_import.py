"""The server process and the cyclic GC: TensorFlow is imported without Keras, scikit-learn
and SciPy (~90 MiB and ~1.3 s a model server does not use), which stay importable
afterwards (`tf.keras` too); versions loaded while serving are frozen."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

_SCRIPT = """
import sys
from pyserving.cli.main import _import_tensorflow
_import_tensorflow()
import tensorflow as tf
assert "tensorflow" in sys.modules and tf.constant(2.0).numpy() == 2.0
hidden = not any(m in sys.modules for m in ("keras", "sklearn", "scipy"))
import sklearn  # still importable once TensorFlow is in
print("hidden" if hidden else "imported", sklearn.__name__, tf.keras.layers.Dense.__name__)
"""


@pytest.mark.skipif(importlib.util.find_spec("sklearn") is None, reason="scikit-learn is not installed")
def test_tensorflow_is_imported_without_scikit_learn():
    out = subprocess.run([sys.executable, "-c", _SCRIPT], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["hidden", "sklearn", "Dense"]


def test_versions_loaded_while_serving_are_kept_out_of_the_cyclic_gc():
    import gc

    from pyserving.core.servable_id import ServableId
    from pyserving.core.servable_state import ManagerState, ServableState
    from pyserving import model_server as lifecycle

    gc.unfreeze()
    try:
        garbage_candidates = [[i] for i in range(1000)]  # tracked containers, as a load leaves
        lifecycle._freeze_after_load(ServableState(ServableId("m", 2), ManagerState.LOADING))
        assert gc.get_freeze_count() == 0
        lifecycle._freeze_after_load(ServableState(ServableId("m", 2), ManagerState.AVAILABLE))
        assert gc.get_freeze_count() >= len(garbage_candidates)
    finally:
        gc.unfreeze()
