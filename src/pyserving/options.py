"""`ServerOptions`: every `tensorflow_model_server` flag as one typed, frozen field.

This is the flag table: each field's default and help text are TF Serving's (pyserving's
own flags say "pyserving:"), `inert` marks flags accepted for compatibility that change
nothing here. `cli/flags.py` parses a command line into it; `Server` takes it, so a server
can also be built in code: `ServerOptions(port=0, rest_api_port=8501, model_name="m", ...)`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from typing import Any, Callable, TypeVar

__all__ = ["ServerOptions", "LOG_LEVELS", "parse_log_level", "option_help", "is_inert", "option_parser"]

_CPUS = os.cpu_count() or 1
T = TypeVar("T")

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def parse_log_level(text: str) -> str:
    """A log level's name; a typo is an error, not silently INFO."""
    level = text.strip().upper()
    level = {"WARN": "WARNING", "FATAL": "CRITICAL"}.get(level, level)
    if level not in LOG_LEVELS:
        raise ValueError(f"expected one of {', '.join(LOG_LEVELS)}")
    return level


def parse_batching_mode(text: str) -> str:
    """``fixed`` or ``adaptive``; a typo is an error, not silently TF Serving's mode."""
    mode = text.strip().lower()
    if mode not in ("fixed", "adaptive"):
        raise ValueError("expected fixed or adaptive")
    return mode


def flag(default: T, help: str, *, inert: bool = False, parse: Callable[[str], T] | None = None) -> T:
    """A field of the table (typed as its value, for the type checker)."""
    metadata = {"help": help, "inert": inert, "parse": parse}
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class ServerOptions:
    port: int = flag(8500, "Port to listen on for gRPC API (0 disables TCP gRPC)")
    grpc_socket_path: str = flag("", "If non-empty, listen to a UNIX socket for gRPC API on the given path")
    rest_api_port: int = flag(0, "Port to listen on for HTTP/REST API (0 disables REST)")
    rest_api_num_threads: int = flag(4 * _CPUS, "Number of threads for HTTP/REST API processing", inert=True)
    rest_api_timeout_in_ms: int = flag(30000, "Timeout for HTTP/REST API calls")
    rest_api_enable_cors_support: bool = flag(False, "Enable CORS headers in response")
    rest_api_max_body_bytes: int = flag(
        1 << 30, "pyserving: largest accepted REST request body in bytes (larger ones answer 413)")
    rest_api_max_header_bytes: int = flag(
        64 * 1024, "pyserving: largest REST request head (request line and headers) in bytes; larger answers 431")
    rest_api_max_headers: int = flag(100, "pyserving: most header fields in a REST request; more answers 431")
    rest_api_read_timeout_seconds: float = flag(
        30.0, "pyserving: a REST request head must arrive, and a body must send something, within this; else 408")
    enable_batching: bool = flag(False, "enable batching")
    allow_version_labels_for_unavailable_models: bool = flag(
        False, "If true, allows assigning unused version labels to models that are not available yet")
    batching_parameters_file: str = flag("", "If non-empty, read an ascii BatchingParameters protobuf")
    enable_per_model_batching_parameters: bool = flag(
        False, "Enables model specific batching params like batch sizes, timeouts, batching feature flags")
    batching_mode: str = flag(
        "fixed", "pyserving: fixed (TF Serving's: a batch waits until full or batch_timeout_micros) or "
        "adaptive (a batch runs as soon as the model is free; waits only when a cost model says it pays, "
        "batch_timeout_micros at most)", parse=parse_batching_mode)
    batching_max_latency_ms: float = flag(
        0.0, "pyserving: with --batching_mode=adaptive, no batch waits for more rows if its oldest request "
        "would then take longer than this (0: batch_timeout_micros is the only bound)")
    model_config_file: str = flag("", "If non-empty, read an ascii ModelServerConfig protobuf")
    model_config_file_poll_wait_seconds: int = flag(
        0, "Interval in seconds between each poll of the model config file (0: read once)")
    model_name: str = flag("default", "name of model (ignored if --model_config_file is set)")
    model_base_path: str = flag("", "path to export (ignored if --model_config_file is set)")
    num_load_threads: int = flag(0, "Number of threads used to load models (0: 4)")
    num_unload_threads: int = flag(0, "Number of threads used to unload models (0: 2)")
    unload_drain_seconds: float = flag(
        300.0, "pyserving: how long unloading a version waits for a request without a deadline that still "
        "uses it (requests with a deadline are waited for until it has passed)")
    load_timeout_seconds: float = flag(
        600.0, "pyserving: a version still loading after this long (retries and warmup included) is reported "
        "as failed and never served (0: no limit)")
    max_num_load_retries: int = flag(
        5, "maximum number of times it retries loading a model after the first failure")
    load_retry_interval_micros: int = flag(
        60 * 1000 * 1000, "The interval, in microseconds, between each servable load retry")
    file_system_poll_wait_seconds: int = flag(
        1, "Interval in seconds between each poll of the filesystem for new model version (0: once)")
    model_cache_dir: str = flag(
        "", "pyserving: where versions on object stores (s3://, gs://, az://) are copied and loaded from; one "
        "server per directory (empty: a private folder under the system temp dir, removed at exit)")
    flush_filesystem_caches: bool = flag(True, "flush filesystem caches after loads", inert=True)
    tensorflow_session_parallelism: int = flag(0, "Number of threads to use for running a TensorFlow session")
    tensorflow_session_config_file: str = flag(
        "", "If non-empty, read an ascii TensorFlow Session ConfigProto")
    tensorflow_intra_op_parallelism: int = flag(
        0, "Number of threads to use to parallelize the execution of an individual op")
    tensorflow_inter_op_parallelism: int = flag(
        0, "Controls the number of operators that can be executed simultaneously")
    use_alts_credentials: bool = flag(False, "Use Google ALTS credentials", inert=True)
    ssl_config_file: str = flag("", "If non-empty, read an ascii SSLConfig protobuf for gRPC TLS")
    rest_api_ssl_config_file: str = flag(
        "", "pyserving: if non-empty, read an ascii SSLConfig protobuf (the format of --ssl_config_file) for REST "
        "TLS (TLS 1.2+, mutual TLS when client_verify)")
    auth_config_file: str = flag(
        "", "pyserving: if non-empty, a YAML or JSON file of API keys (SHA-256 digests), JWT settings and client "
        "certificate names with their scopes (infer, read, admin); every request but health probes then needs "
        "credentials (empty: no authentication, TF Serving's behaviour)")
    security_files_poll_wait_seconds: float = flag(
        10.0, "pyserving: interval in seconds between reads of --auth_config_file, --ssl_config_file and "
        "--rest_api_ssl_config_file; a changed file applies to new requests and connections (0: read once)")
    model_base_path_allowlist: str = flag(
        "", "pyserving: comma-separated roots (directories or store URLs) that base paths of a config reload "
        "request must stay under, symlinks and .. resolved (empty: no restriction, TF Serving's behaviour)")
    platform_config_file: str = flag("", "If non-empty, read an ascii PlatformConfigMap protobuf", inert=True)
    per_process_gpu_memory_fraction: float = flag(0.0, "Fraction of GPU memory each process may use")
    saved_model_tags: str = flag("serve", "Comma-separated set of tags of the MetaGraphDef to load")
    grpc_channel_arguments: str = flag(
        "", "A comma separated list of arguments to be passed to the grpc server")
    grpc_max_threads: int = flag(4 * _CPUS, "Max gRPC server threads", inert=True)
    enable_model_warmup: bool = flag(
        True, "Enables model warmup from assets.extra/tf_serving_warmup_requests")
    num_request_iterations_for_warmup: int = flag(0, "Number of times each warmup request is replayed")
    version: bool = flag(False, "Display version")
    monitoring_config_file: str = flag("", "If non-empty, read an ascii MonitoringConfig protobuf")
    remove_unused_fields_from_bundle_metagraph: bool = flag(
        True, "Drop unused MetaGraphDef fields", inert=True)
    prefer_tflite_model: bool = flag(False, "Prefer model.tflite over saved_model.pb when both exist")
    num_tflite_pools: int = flag(_CPUS, "Number of TFLite interpreter pools")
    num_tflite_interpreters_per_pool: int = flag(1, "Number of TFLite interpreters per pool")
    enable_signature_method_name_check: bool = flag(
        False, "Check SignatureDef method_name for Predict/Classify/Regress")
    xla_cpu_compilation_enabled: bool = flag(False, "Allow XLA:CPU JIT", inert=True)
    xla_gpu_compilation_enabled: bool = flag(False, "Allow XLA:GPU JIT", inert=True)
    enable_profiler: bool = flag(True, "Enable the TF profiler gRPC service")
    profiler_dir: str = flag(
        "", "pyserving: directory the profiler writes traces to (<dir>/<session_id>/<host>.xplane.pb; a client's "
        "repository_root is ignored); empty: a private temporary directory (mode 0700) made at the first profile")
    profiler_max_duration_seconds: float = flag(
        300.0, "pyserving: longest trace a ProfilerService/Profile request may ask for (longer: INVALID_ARGUMENT)")
    thread_pool_factory_config_file: str = flag("", "ThreadPoolFactoryConfig file", inert=True)
    mixed_precision: str = flag("", "e.g. bfloat16", inert=True)
    skip_initialize_tpu: bool = flag(False, "TPU builds only", inert=True)
    enable_grpc_healthcheck_service: bool = flag(
        False, "Register the standard gRPC health service", inert=True)
    enable_serialization_as_tensor_content: bool = flag(
        False, "Predict responses use TensorProto.tensor_content")
    access_log: bool = flag(False, "pyserving: log one line when each REST request starts and ends")
    log_level: str = flag(
        "INFO", "pyserving: DEBUG, INFO, WARNING, ERROR or CRITICAL; also sets TF_CPP_MIN_LOG_LEVEL unless it is set",
        parse=parse_log_level)
    max_in_flight_requests_per_model: int = flag(
        0, "pyserving: requests one model may have in flight before new ones get RESOURCE_EXHAUSTED / "
        "HTTP 429 with Retry-After (0: no bound, TF Serving's behaviour)")
    max_request_tensor_bytes: int = flag(
        512 << 20, "pyserving: bytes one request may make the server hold (gRPC input tensors as their shapes "
        "declare them, a REST body, the outputs); more answers RESOURCE_EXHAUSTED / HTTP 413 (0: no bound)")
    max_in_flight_tensor_bytes: int = flag(
        1 << 30, "pyserving: the same bytes for all requests in flight together; past it new requests answer "
        "RESOURCE_EXHAUSTED / HTTP 429 (0: no bound)")
    shutdown_grace_seconds: float = flag(
        30.0, "pyserving: how long SIGTERM waits for requests in flight before exiting")
    workers: int = flag(
        1, "pyserving: processes serving the same ports; more than 1 runs them under a supervisor that owns the "
        "model lifecycle (0: one per available core)")
    worker_max_rss_mb: int = flag(
        0, "pyserving: with several workers, a worker whose resident memory passes this is drained and replaced "
        "(0: off)")
    recycle_workers_on_unload: bool = flag(
        False, "pyserving: with several workers, replace a worker (one at a time) after it unloads a version, "
        "so that the version's memory goes back to the system")


def option_help(name: str) -> str:
    return _FIELDS[name].metadata["help"]


def is_inert(name: str) -> bool:
    return bool(_FIELDS[name].metadata["inert"])


def option_parser(name: str) -> Callable[[str], Any] | None:
    """The field's own text parser, when its type's is not enough (log levels)."""
    parse: Callable[[str], Any] | None = _FIELDS[name].metadata["parse"]
    return parse


_FIELDS = {f.name: f for f in fields(ServerOptions)}
