"""ModelServerConfig: read (text proto, the official message), build, validate."""

from __future__ import annotations

import os
from dataclasses import dataclass

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from pyserving.errors import Code, ServingError
from pyserving.platforms import is_known_platform
from pyserving.sources import stores
from pyserving.sources.version_policy import VersionPolicy, policy_from_proto

__all__ = ["ConfigParseError", "ModelConfig", "parse_config_text", "read_config_file", "read_config_file_text",
           "single_model_config", "to_model_configs"]

ModelServerConfig = model_server_config_pb2.ModelServerConfig


class ConfigParseError(Exception):
    """A config file that is not a valid text-format ModelServerConfig."""


@dataclass(frozen=True)
class ModelConfig:
    name: str
    base_path: str
    platform: str
    policy: VersionPolicy
    labels: tuple[tuple[str, int], ...] = ()


def parse_config_text(text: str) -> "model_server_config_pb2.ModelServerConfig":
    config = ModelServerConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as exc:
        raise ConfigParseError(
            f"Error parsing text-format tensorflow.serving.ModelServerConfig: {exc}"
        ) from None
    return config


def read_config_file_text(path: str) -> str:
    """The text of the file at `path`, local or in a model store (see sources/stores.py);
    ConfigParseError when it cannot be read."""
    try:
        return stores.read_text(path)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigParseError(f"Cannot read model config file {path}: {exc}") from None


def read_config_file(path: str) -> "model_server_config_pb2.ModelServerConfig":
    return parse_config_text(read_config_file_text(path))


def single_model_config(name: str, base_path: str) -> "model_server_config_pb2.ModelServerConfig":
    config = ModelServerConfig()
    model = config.model_config_list.config.add()
    model.name = name
    model.base_path = base_path
    model.model_platform = "tensorflow"
    return config


def to_model_configs(config: "model_server_config_pb2.ModelServerConfig") -> list[ModelConfig]:
    """Validate as TF Serving does and convert; raises ServingError(INVALID_ARGUMENT)."""
    which = config.WhichOneof("config")
    if which == "custom_model_config":
        raise ServingError(
            Code.INVALID_ARGUMENT,
            "ServerModelConfig type not supported. Only ModelConfigList is currently supported",
        )
    models: list[ModelConfig] = []
    seen: set[str] = set()
    for m in config.model_config_list.config:
        if m.name in seen:
            raise ServingError(Code.INVALID_ARGUMENT, f"Illegal to list model {m.name} multiple times in config list")
        seen.add(m.name)
        if not m.name:
            raise ServingError(Code.INVALID_ARGUMENT, "Model name must not be empty")
        if not (os.path.isabs(m.base_path) or "://" in m.base_path):
            raise ServingError(
                Code.INVALID_ARGUMENT,
                f"Expected model {m.name} to have an absolute path or URI; got base_path()={m.base_path}",
            )
        platform = m.model_platform
        if m.model_type and platform:
            raise ServingError(
                Code.INVALID_ARGUMENT,
                f"Illegal setting both ModelServerConfig::model_type (deprecated) and "
                f"ModelServerConfig::model_platform, model name is {m.name}",
            )
        if not platform:
            if m.model_type == 1:  # ModelType.TENSORFLOW
                platform = "tensorflow"
            else:
                raise ServingError(
                    Code.INVALID_ARGUMENT,
                    "Illegal setting neither ModelServerConfig::model_type (deprecated) nor "
                    f"ModelServerConfig::model_platform, model name is {m.name}",
                )
        if not is_known_platform(platform):
            raise ServingError(Code.INVALID_ARGUMENT, f"Model {m.name} requests unsupported platform {platform}")
        models.append(
            ModelConfig(
                name=m.name,
                base_path=m.base_path,
                platform=platform,
                policy=policy_from_proto(m.model_version_policy),
                labels=tuple(sorted((k, int(v)) for k, v in m.version_labels.items())),
            )
        )
    return models
