"""A model platform in pure numpy, and helpers to drive a `ServerCore` in-process.

The serving layers are tested here with a real platform rather than mocks of our own code:
`register` adds it to the platform registry under "numpy", so `ServerCore` builds its
loaders exactly as it builds TensorFlow's (the source finds a version folder, the registry
makes a loader for it with the server's loader options, the manager loads it on its
threads). No TensorFlow: a test using it starts in milliseconds.

A version folder holds `weights.npy` ([slope, intercept]); a folder without it is a broken
version (its load fails). Every answer follows from the weights and the inputs, so tests
assert exact values:
- serving_default (predict): y = slope * x + intercept, negated = -x;
- classify: per example e, p = len(e) / 8; classes [negative, positive], scores [1 - p, p]
  (exact in float32 for examples of up to 8 bytes); scores_only / classes_only keep one;
- regress: outputs = slope * len(e) + intercept, shaped [n, 1].
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from pathlib import Path
from typing import Any, AsyncIterator, Mapping, Sequence

import numpy as np

from pyserving.core.servable_state import ManagerState
from pyserving.errors import Code, ServingError
from pyserving.platforms import PLATFORMS
from pyserving.platforms.base import Signature, TensorSpec
from pyserving.platforms.inference import CLASSIFY_METHOD_NAME, REGRESS_METHOD_NAME
from pyserving.server.model_config import ModelConfig
from pyserving.server.server_core import CoreOptions, ServerCore
from pyserving.sources.version_policy import Latest, VersionPolicy

PLATFORM = "numpy"
WEIGHTS = "weights.npy"
CLASSES = (b"negative", b"positive")


def register(monkeypatch: Any) -> None:
    """Serve PLATFORM with `NumpyLoader` for the length of one test."""
    monkeypatch.setitem(PLATFORMS, PLATFORM, f"{__name__}:NumpyLoader")


def write_version(base: Path, version: int, slope: float = 2.0, intercept: float = 0.0) -> Path:
    folder = base / str(version)
    folder.mkdir(parents=True)
    np.save(folder / WEIGHTS, np.array([slope, intercept], np.float32))
    return folder


def write_broken_version(base: Path, version: int) -> Path:
    folder = base / str(version)
    folder.mkdir(parents=True)
    return folder


def _spec(alias: str, dtype: str, shape: tuple[int, ...]) -> TensorSpec:
    np_dtype = np.dtype(object) if dtype == "DT_STRING" else np.dtype(np.float32)
    return TensorSpec(alias, f"{alias}:0", dtype, np_dtype, shape)


_EXAMPLES = {"inputs": _spec("inputs", "DT_STRING", (-1,))}
SIGNATURES: Mapping[str, Signature] = {
    sig.name: sig for sig in (
        Signature("serving_default", "tensorflow/serving/predict", {"x": _spec("x", "DT_FLOAT", (-1,))},
                  {"y": _spec("y", "DT_FLOAT", (-1,)), "negated": _spec("negated", "DT_FLOAT", (-1,))}),
        Signature("classify", CLASSIFY_METHOD_NAME, _EXAMPLES,
                  {"classes": _spec("classes", "DT_STRING", (-1, 2)),
                   "scores": _spec("scores", "DT_FLOAT", (-1, 2))}),
        Signature("scores_only", CLASSIFY_METHOD_NAME, _EXAMPLES, {"scores": _spec("scores", "DT_FLOAT", (-1, 2))}),
        Signature("classes_only", CLASSIFY_METHOD_NAME, _EXAMPLES,
                  {"classes": _spec("classes", "DT_STRING", (-1, 2))}),
        Signature("regress", REGRESS_METHOD_NAME, _EXAMPLES, {"outputs": _spec("outputs", "DT_FLOAT", (-1, 1))}),
    )
}


def _invalid(message: str) -> ServingError:
    return ServingError(Code.INVALID_ARGUMENT, message)


class NumpyServable:
    runtime_name = "numpy"

    def __init__(self, slope: float, intercept: float) -> None:
        self.slope = np.float32(slope)
        self.intercept = np.float32(intercept)
        self.sigdefs = object()  # stands for the SignatureDefMap proto: passed through untouched
        self._lock = threading.Lock()
        self.runs = 0  # guarded by _lock: runs from worker threads

    @property
    def signatures(self) -> Mapping[str, Signature]:
        return SIGNATURES

    def signature_def_map(self) -> Any:
        return self.sigdefs

    def run(self, signature: Signature, inputs: Mapping[str, np.ndarray], output_filter: Sequence[str] = (),
            timeout_ms: int | None = None) -> dict[str, np.ndarray]:
        # The checks a platform makes before running: the serving layers must pass its errors on.
        if set(inputs) != set(signature.inputs):
            raise _invalid(f"Expected inputs {sorted(signature.inputs)}, got {sorted(inputs)}")
        unknown = set(output_filter) - set(signature.outputs)
        if unknown:
            raise _invalid(f"Unknown outputs {sorted(unknown)}")
        with self._lock:
            self.runs += 1
        if signature.name == "serving_default":
            x = np.asarray(inputs["x"])
            if x.dtype != np.float32:
                raise _invalid(f"Expected DT_FLOAT for x, got {x.dtype}")
            outputs = {"y": self.slope * x + self.intercept, "negated": -x}
        else:
            lengths = np.array([len(e) for e in inputs["inputs"]], np.float32)
            p = lengths / 8
            labels = np.empty((len(lengths), 2), object)
            labels[:] = CLASSES
            outputs = {"classes": labels, "scores": np.stack([1 - p, p], axis=1),
                       "outputs": (self.slope * lengths + self.intercept).reshape(-1, 1)}
            outputs = {k: v for k, v in outputs.items() if k in signature.outputs}
        return {k: v for k, v in outputs.items() if not output_filter or k in output_filter}


class NumpyLoader:
    """One version folder. Its options come from `CoreOptions.loader_options`, as a real
    platform's do: `journal` records loads and unloads; `load_gate` holds `load()` until set
    (a slow load); `create_gate` holds the constructor, which runs on the source's poll
    thread (a slow poll), and `created` is set once the constructor has been entered."""

    def __init__(self, export_dir: str, journal: list[tuple[str, str]] | None = None,
                 load_gate: threading.Event | None = None, create_gate: threading.Event | None = None,
                 created: threading.Event | None = None) -> None:
        if created is not None:
            created.set()
        if create_gate is not None:
            assert create_gate.wait(10)
        self.export_dir = export_dir
        self._journal = journal if journal is not None else []
        self._load_gate = load_gate
        self._servable: NumpyServable | None = None

    def load(self) -> None:
        if self._load_gate is not None and not self._load_gate.wait(10):
            raise ServingError(Code.INTERNAL, "load gate never opened")
        try:
            slope, intercept = np.load(Path(self.export_dir) / WEIGHTS).tolist()
        except OSError:
            raise ServingError(Code.NOT_FOUND, f"No {WEIGHTS} in {self.export_dir}") from None
        self._servable = NumpyServable(slope, intercept)
        self._journal.append(("load", self.export_dir))

    def unload(self) -> None:
        self._servable = None
        self._journal.append(("unload", self.export_dir))

    def servable(self) -> NumpyServable:
        assert self._servable is not None
        return self._servable


# -- driving a ServerCore in-process --------------------------------------------------------

def model(name: str, base: Path, policy: VersionPolicy | None = None, **labels: int) -> ModelConfig:
    return ModelConfig(name, str(base), PLATFORM, policy or Latest(1), tuple(sorted(labels.items())))


def run(coro: Any, timeout: float = 20.0) -> Any:
    """Run a test's scenario; a hang fails the test instead of the whole run."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


@contextlib.asynccontextmanager
async def started(models: list[ModelConfig], *, wait: bool = True, **options: Any) -> AsyncIterator[ServerCore]:
    """A started core (one poll, no polling loop: tests call `poll_now`), stopped on exit.
    Loads are not retried unless asked, so a broken version fails at once."""
    options.setdefault("file_system_poll_wait_seconds", 0)
    options.setdefault("max_num_load_retries", 0)
    core = ServerCore(CoreOptions(**options))
    await core.start(models)
    try:
        if wait:
            await core.wait_initial_load()
        yield core
    finally:
        await core.stop(timeout=10)


async def reach(core: ServerCore, name: str, version: int, state: ManagerState, timeout: float = 10.0) -> None:
    """Until the monitor has `state` for the version: woken by the core's own events."""
    loop = asyncio.get_running_loop()
    changed = asyncio.Event()
    unsubscribe = core.bus.subscribe(lambda event: loop.call_soon_threadsafe(changed.set))
    try:
        async with asyncio.timeout(timeout):
            while (s := core.monitor.state(name, version)) is None or s.state != state:
                await changed.wait()
                changed.clear()
    finally:
        unsubscribe()
