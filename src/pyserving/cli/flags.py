"""Every `tensorflow_model_server` flag, declared once.

The table drives parsing (TF's rules: `--name=value`, booleans as `--flag`,
`--flag=true|false`, later occurrences win) and produces a frozen `ServerOptions`. Unlike
TF Serving, which prints "unknown argument" and serves with the mistyped feature off, an
unknown argument is an error, with the nearest flag name suggested. Flags we accept for compatibility but
do not act on are marked `inert` and logged when set.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from typing import Any, Callable

__all__ = ["Flag", "FLAGS", "ServerOptions", "FlagError", "parse_flags", "usage",
           "unknown_argument_message"]

_CPUS = os.cpu_count() or 1


class FlagError(Exception):
    pass


@dataclass(frozen=True)
class Flag:
    name: str
    type: Callable[[str], Any]
    default: Any
    help: str
    inert: bool = False  # accepted for compatibility; no effect here


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise ValueError(f"not a boolean: {text!r}")


def _int(text: str) -> int:
    return int(text.strip())


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _log_level(text: str) -> str:  # a typo is a flag error, not silently INFO
    level = text.strip().upper()
    level = {"WARN": "WARNING", "FATAL": "CRITICAL"}.get(level, level)
    if level not in LOG_LEVELS:
        raise ValueError(f"expected one of {', '.join(LOG_LEVELS)}")
    return level


FLAGS: tuple[Flag, ...] = (
    Flag("port", _int, 8500, "Port to listen on for gRPC API (0 disables TCP gRPC)"),
    Flag("grpc_socket_path", str, "", "If non-empty, listen to a UNIX socket for gRPC API on the given path"),
    Flag("rest_api_port", _int, 0, "Port to listen on for HTTP/REST API (0 disables REST)"),
    Flag("rest_api_num_threads", _int, 4 * _CPUS, "Number of threads for HTTP/REST API processing", inert=True),
    Flag("rest_api_timeout_in_ms", _int, 30000, "Timeout for HTTP/REST API calls"),
    Flag("rest_api_enable_cors_support", _bool, False, "Enable CORS headers in response"),
    Flag("rest_api_max_body_bytes", _int, 1 << 30,
         "pyserving: largest accepted REST request body in bytes (larger ones answer 413)"),
    Flag("rest_api_max_header_bytes", _int, 64 * 1024,
         "pyserving: largest REST request head (request line and headers) in bytes; larger answers 431"),
    Flag("rest_api_max_headers", _int, 100, "pyserving: most header fields in a REST request; more answers 431"),
    Flag("rest_api_read_timeout_seconds", float, 30.0,
         "pyserving: a REST request head must arrive, and a body must send something, within this; else 408"),
    Flag("enable_batching", _bool, False, "enable batching"),
    Flag("allow_version_labels_for_unavailable_models", _bool, False,
         "If true, allows assigning unused version labels to models that are not available yet"),
    Flag("batching_parameters_file", str, "", "If non-empty, read an ascii BatchingParameters protobuf"),
    Flag("enable_per_model_batching_parameters", _bool, False,
         "Enables model specific batching params like batch sizes, timeouts, batching feature flags"),
    Flag("model_config_file", str, "", "If non-empty, read an ascii ModelServerConfig protobuf"),
    Flag("model_config_file_poll_wait_seconds", _int, 0,
         "Interval in seconds between each poll of the model config file (0: read once)"),
    Flag("model_name", str, "default", "name of model (ignored if --model_config_file is set)"),
    Flag("model_base_path", str, "", "path to export (ignored if --model_config_file is set)"),
    Flag("num_load_threads", _int, 0, "Number of threads used to load models (0: 4)"),
    Flag("num_unload_threads", _int, 0, "Number of threads used to unload models (0: 2)"),
    Flag("unload_drain_seconds", float, 300.0,
         "pyserving: how long unloading a version waits for a request without a deadline that still "
         "uses it (requests with a deadline are waited for until it has passed)"),
    Flag("load_timeout_seconds", float, 600.0,
         "pyserving: a version still loading after this long (retries and warmup included) is reported "
         "as failed and never served (0: no limit)"),
    Flag("max_num_load_retries", _int, 5, "maximum number of times it retries loading a model after the first failure"),
    Flag("load_retry_interval_micros", _int, 60 * 1000 * 1000,
         "The interval, in microseconds, between each servable load retry"),
    Flag("file_system_poll_wait_seconds", _int, 1,
         "Interval in seconds between each poll of the filesystem for new model version (0: once)"),
    Flag("flush_filesystem_caches", _bool, True, "flush filesystem caches after loads", inert=True),
    Flag("tensorflow_session_parallelism", _int, 0, "Number of threads to use for running a TensorFlow session"),
    Flag("tensorflow_session_config_file", str, "", "If non-empty, read an ascii TensorFlow Session ConfigProto"),
    Flag("tensorflow_intra_op_parallelism", _int, 0, "Number of threads to use to parallelize the execution of an individual op"),
    Flag("tensorflow_inter_op_parallelism", _int, 0, "Controls the number of operators that can be executed simultaneously"),
    Flag("use_alts_credentials", _bool, False, "Use Google ALTS credentials", inert=True),
    Flag("ssl_config_file", str, "", "If non-empty, read an ascii SSLConfig protobuf for gRPC TLS"),
    Flag("platform_config_file", str, "", "If non-empty, read an ascii PlatformConfigMap protobuf", inert=True),
    Flag("per_process_gpu_memory_fraction", float, 0.0, "Fraction of GPU memory each process may use"),
    Flag("saved_model_tags", str, "serve", "Comma-separated set of tags of the MetaGraphDef to load"),
    Flag("grpc_channel_arguments", str, "", "A comma separated list of arguments to be passed to the grpc server"),
    Flag("grpc_max_threads", _int, 4 * _CPUS, "Max gRPC server threads", inert=True),
    Flag("enable_model_warmup", _bool, True, "Enables model warmup from assets.extra/tf_serving_warmup_requests"),
    Flag("num_request_iterations_for_warmup", _int, 0, "Number of times each warmup request is replayed"),
    Flag("version", _bool, False, "Display version"),
    Flag("monitoring_config_file", str, "", "If non-empty, read an ascii MonitoringConfig protobuf"),
    Flag("remove_unused_fields_from_bundle_metagraph", _bool, True, "Drop unused MetaGraphDef fields", inert=True),
    Flag("prefer_tflite_model", _bool, False, "Prefer model.tflite over saved_model.pb when both exist"),
    Flag("num_tflite_pools", _int, _CPUS, "Number of TFLite interpreter pools"),
    Flag("num_tflite_interpreters_per_pool", _int, 1, "Number of TFLite interpreters per pool"),
    Flag("enable_signature_method_name_check", _bool, False,
         "Check SignatureDef method_name for Predict/Classify/Regress", inert=True),
    Flag("xla_cpu_compilation_enabled", _bool, False, "Allow XLA:CPU JIT", inert=True),
    Flag("xla_gpu_compilation_enabled", _bool, False, "Allow XLA:GPU JIT", inert=True),
    Flag("enable_profiler", _bool, True, "Enable the TF profiler gRPC service"),
    Flag("profiler_dir", str, "",
         "pyserving: directory the profiler writes traces to (<dir>/<session_id>/<host>.xplane.pb; a client's "
         "repository_root is ignored); empty: a private temporary directory (mode 0700) made at the first profile"),
    Flag("profiler_max_duration_seconds", float, 300.0,
         "pyserving: longest trace a ProfilerService/Profile request may ask for (longer: INVALID_ARGUMENT)"),
    Flag("thread_pool_factory_config_file", str, "", "ThreadPoolFactoryConfig file", inert=True),
    Flag("mixed_precision", str, "", "e.g. bfloat16", inert=True),
    Flag("skip_initialize_tpu", _bool, False, "TPU builds only", inert=True),
    Flag("enable_grpc_healthcheck_service", _bool, False, "Register the standard gRPC health service", inert=True),
    Flag("enable_serialization_as_tensor_content", _bool, False,
         "Predict responses use TensorProto.tensor_content"),
    Flag("access_log", _bool, False, "pyserving: log one line when each REST request starts and ends"),
    Flag("log_level", _log_level, "INFO",
         "pyserving: DEBUG, INFO, WARNING, ERROR or CRITICAL; also sets TF_CPP_MIN_LOG_LEVEL unless it is set"),
    Flag("max_in_flight_requests_per_model", _int, 0,
         "pyserving: requests one model may have in flight before new ones get RESOURCE_EXHAUSTED / "
         "HTTP 429 with Retry-After (0: no bound, TF Serving's behaviour)"),
    Flag("max_request_tensor_bytes", _int, 512 << 20,
         "pyserving: bytes one request may make the server hold (gRPC input tensors as their shapes "
         "declare them, a REST body, the outputs); more answers RESOURCE_EXHAUSTED / HTTP 413 (0: no bound)"),
    Flag("max_in_flight_tensor_bytes", _int, 1 << 30,
         "pyserving: the same bytes for all requests in flight together; past it new requests answer "
         "RESOURCE_EXHAUSTED / HTTP 429 (0: no bound)"),
    Flag("shutdown_grace_seconds", float, 30.0,
         "pyserving: how long SIGTERM waits for requests in flight before exiting"),
)

_BY_NAME = {f.name: f for f in FLAGS}

ServerOptions = dataclass(frozen=True)(
    type("ServerOptions", (), {"__annotations__": {f.name: Any for f in FLAGS}, **{f.name: f.default for f in FLAGS}})
)
ServerOptions.__doc__ = "One field per flag; built only by `parse_flags`."


def usage(prog: str = "tensorflow_model_server") -> str:
    lines = [f"usage: {prog}", "Flags:"]
    for f in FLAGS:
        kind = {bool: "bool", int: "int32", float: "float", str: "string"}.get(type(f.default), "string")
        lines.append(f"\t--{f.name}={f.default}\t{kind}\t{f.help}")
    return "\n".join(lines)


def parse_flags(argv: list[str]) -> tuple[Any, list[str], bool]:
    """Parse `argv` (without the program name).

    Returns (options, unknown_arguments, help_requested). Raises FlagError for a
    malformed value.
    """
    values: dict[str, Any] = {}
    unknown: list[str] = []
    help_requested = False
    for arg in argv:
        if arg in ("--help", "-help", "-h", "--helpfull"):
            help_requested = True
            continue
        if not arg.startswith("-"):
            unknown.append(arg)
            continue
        body = arg.lstrip("-")
        name, sep, text = body.partition("=")
        flag = _BY_NAME.get(name)
        if flag is None and not sep and name.startswith("no") and _BY_NAME.get(name[2:]) is not None:
            flag, text, sep = _BY_NAME[name[2:]], "false", "="
        if flag is None:
            unknown.append(arg)
            continue
        if not sep:
            if isinstance(flag.default, bool):
                text = "true"
            else:
                raise FlagError(f"Missing value for flag --{name} (flags are written --{name}=value)")
        try:
            values[flag.name] = flag.type(text)
        except ValueError as exc:
            raise FlagError(f"Illegal value '{text}' specified for flag '{flag.name}': {exc}") from None
    options = ServerOptions(**values)  # type: ignore[call-arg]
    return options, unknown, help_requested


# Names other model servers use for what TF Serving calls otherwise.
_OTHER_SERVERS_NAMES = {
    "grpc_port": "port",
    "http_port": "rest_api_port",
    "rest_port": "rest_api_port",
    "model_path": "model_base_path",
    "model_repository": "model_base_path",
    "model_config": "model_config_file",
}


def unknown_argument_message(arg: str) -> str:
    """One line naming the argument and, for a mistyped flag, the nearest real one."""
    if not arg.startswith("-"):
        return f"unknown argument {arg!r}: flags are written --name=value"
    name = arg.lstrip("-").partition("=")[0]
    guess = _OTHER_SERVERS_NAMES.get(name)
    if guess is None:
        close = difflib.get_close_matches(name, list(_BY_NAME), n=1, cutoff=0.6)
        # A part of a longer name (--batching for --enable_batching); under 4 letters a part
        # matches too much to be a hint.
        if not close and len(name) >= 4:
            close = [n for n in _BY_NAME if name in n]
        guess = close[0] if close else None
    return f"unknown flag --{name}" + (f" (did you mean --{guess}?)" if guess else "")


def set_flags(options: Any) -> list[str]:
    """Names of inert flags the user set to a non-default value."""
    return [f.name for f in FLAGS if f.inert and getattr(options, f.name) != f.default]
