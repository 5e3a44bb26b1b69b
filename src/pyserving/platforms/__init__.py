"""Platform registry: a `model_platform` name -> the loader class that serves it.

Platforms are named by "module:attr" strings and imported only when a model asks for
them, so a missing optional package is an error for that model alone.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import os
from typing import Any

from pyserving.errors import Code, ServingError
from pyserving.platforms.base import Loader

__all__ = ["PLATFORMS", "create_loader", "is_known_platform", "select_platform"]

PLATFORMS: dict[str, str] = {
    "tensorflow": "pyserving.platforms.tensorflow.saved_model:SavedModelLoader",
    "tflite": "pyserving.platforms.tflite.loader:TfLiteLoader",
}


def is_known_platform(name: str) -> bool:
    return name in PLATFORMS


def create_loader(platform: str, export_dir: str, **options: Any) -> Loader:
    """A loader for one version folder (nothing is loaded until `load()`).

    `options` are the server-wide loader options; each loader gets those its constructor
    names (`select_platform` may turn "tensorflow" into "tflite" first)."""
    platform = select_platform(platform, export_dir, bool(options.get("prefer_tflite_model")))
    target = PLATFORMS.get(platform)
    if target is None:
        raise ServingError(Code.INVALID_ARGUMENT, f"Unsupported platform {platform}")
    module_name, _, attr = target.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except ImportError as exc:
        raise ServingError(
            Code.FAILED_PRECONDITION,
            f"Platform {platform} is not available: {exc}. Install its optional dependencies.",
        ) from None
    return cls(export_dir, **_accepted_options(cls, options))


# TFLite selection (--prefer_tflite_model) and per-loader options
TFLITE_MODEL_FILENAME = "model.tflite"
_SAVED_MODEL_FILENAMES = ("saved_model.pb", "saved_model.pbtxt")


def select_platform(platform: str, export_dir: str, prefer_tflite_model: bool) -> str:
    """The platform that serves one "tensorflow" version folder: "tflite" when it holds
    `model.tflite` and either `prefer_tflite_model` is set (TF Serving's rule) or it has no
    saved_model.pb/.pbtxt (where TF Serving would fail the load); else `platform`."""
    if platform != "tensorflow":
        return platform
    if not os.path.isfile(os.path.join(export_dir, TFLITE_MODEL_FILENAME)):
        return platform
    if prefer_tflite_model:
        return "tflite"
    if any(os.path.isfile(os.path.join(export_dir, f)) for f in _SAVED_MODEL_FILENAMES):
        return platform
    return "tflite"


@functools.lru_cache(maxsize=None)
def _accepted_names(cls: type) -> frozenset[str] | None:
    """The keyword arguments `cls` takes (None: any, it has **kwargs)."""
    params = inspect.signature(cls).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return frozenset(p.name for p in params if p.kind is not inspect.Parameter.POSITIONAL_ONLY)


def _accepted_options(cls: type, options: dict[str, Any]) -> dict[str, Any]:
    names = _accepted_names(cls)
    return dict(options) if names is None else {k: v for k, v in options.items() if k in names}
