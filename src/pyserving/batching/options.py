"""`BatchingParameters` (TF Serving's text proto) -> a validated `BatchingOptions`.

Where batching configuration comes from, all read here and nowhere else:

- `--enable_batching` turns batching on; so does the environment variable
  ``TF_ENABLE_BATCHING=1`` (seed 000's Docker advice; TF Serving itself ignores it, pyserving
  honours it). ``TF_BATCH_TIMEOUT_MICROS=<n>`` sets ``batch_timeout_micros`` when the
  parameters file does not.
- `--batching_parameters_file`: text-format ``tensorflow.serving.BatchingParameters``
  (``max_batch_size { value: 128 }`` wrapper syntax), parsed with the message built in
  `pyserving.protos.config_protos`. Set without batching on: startup error, TF's message.
  Batching on without a file: every default, thread pool ``model_server_batch_threads``.
- `--enable_per_model_batching_parameters`: each version directory's
  ``batching_params.pbtxt`` configures that version's queues; a version without the file is
  not batched (TF Serving's ``GetPerModelBatchingParams``); the global file then only sizes
  and names the shared thread pool.

Defaults when a field is unset (TF Serving's): ``max_batch_size`` 1000,
``batch_timeout_micros`` 0, ``max_enqueued_batches`` 10, ``num_batch_threads`` = the number
of CPUs this process may run on, ``allowed_batch_sizes`` empty, padding and splitting off,
``max_execution_batch_size`` = ``max_batch_size``.

Validation follows TF Serving's order and messages (all INVALID_ARGUMENT):
``num_batch_threads`` is checked when the shared scheduler is built (a startup error,
`check_scheduler_options`); the queue options when a model version is wrapped
(`BatchingOptions.validate`, so a bad per-model file fails only that version).

Pure functions and frozen dataclasses: safe from any thread.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import Any, Mapping

from google.protobuf import text_format

from pyserving.errors import Code, ServingError
from pyserving.protos.config_protos import BatchingParameters, parse_text
from pyserving.sources import stores

__all__ = [
    "BatchingOptions",
    "BatchingConfig",
    "BatchingConfigError",
    "PER_MODEL_FILE_NAME",
    "DEFAULT_THREAD_POOL_NAME",
    "SERVER_THREAD_POOL_NAME",
    "ENV_ENABLE_BATCHING",
    "ENV_BATCH_TIMEOUT_MICROS",
    "schedulable_cpus",
    "options_from_proto",
    "parse_batching_parameters",
    "read_batching_parameters_file",
    "batching_config_from_server_options",
    "check_scheduler_options",
    "BATCHING_MODES",
    "FIXED",
    "ADAPTIVE",
]

PER_MODEL_FILE_NAME = "batching_params.pbtxt"
DEFAULT_THREAD_POOL_NAME = "batch_threads"
SERVER_THREAD_POOL_NAME = "model_server_batch_threads"
ENV_ENABLE_BATCHING = "TF_ENABLE_BATCHING"
ENV_BATCH_TIMEOUT_MICROS = "TF_BATCH_TIMEOUT_MICROS"
_TRUE = ("1", "true", "yes", "on")
FIXED, ADAPTIVE = "fixed", "adaptive"
BATCHING_MODES = (FIXED, ADAPTIVE)


class BatchingConfigError(Exception):
    """The batching flags, environment or file cannot be used; the server does not start."""


def schedulable_cpus() -> int:
    """CPUs this process may run on (TF's ``port::MaxParallelism``), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class BatchingOptions:
    """One model version's queue options plus the shared pool's size and name.

    Field names and units are `BatchingParameters`'. ``max_execution_batch_size`` None
    means "equal to ``max_batch_size``"; it only matters with
    ``enable_large_batch_splitting``.
    """

    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 10
    num_batch_threads: int = field(default_factory=schedulable_cpus)
    thread_pool_name: str = DEFAULT_THREAD_POOL_NAME
    allowed_batch_sizes: tuple[int, ...] = ()
    pad_variable_length_inputs: bool = False
    enable_large_batch_splitting: bool = False
    max_execution_batch_size: int | None = None
    # pyserving's own, from flags (never from the parameters file, which stays TF's format):
    # "fixed" is TF Serving's rule, "adaptive" runs at once when the model is free (see
    # `pyserving.batching.adaptive`); max_latency_ms bounds adaptive waits (0: no bound).
    mode: str = "fixed"
    max_latency_ms: float = 0.0

    @property
    def adaptive(self) -> bool:
        return self.mode == ADAPTIVE

    @property
    def execution_batch_size(self) -> int:
        """Largest batch ever run: ``max_execution_batch_size`` with splitting, else
        ``max_batch_size`` (TF's ``GetMaxExecutionBatchSize``)."""
        if self.enable_large_batch_splitting and self.max_execution_batch_size is not None:
            return self.max_execution_batch_size
        return self.max_batch_size

    @property
    def effective_max_enqueued_batches(self) -> int:
        """TF rewrites 0 to 1 when splitting is off (old models rely on it)."""
        if self.max_enqueued_batches == 0 and not self.enable_large_batch_splitting:
            return 1
        return self.max_enqueued_batches

    def validate(self) -> None:
        """Raise INVALID_ARGUMENT (TF Serving's messages) if these queue options are unusable."""
        if self.mode not in BATCHING_MODES:
            raise _invalid(f"batching_mode must be one of {', '.join(BATCHING_MODES)}; was {self.mode!r}")
        if not (self.max_latency_ms >= 0.0):  # NaN too
            raise _invalid(f"batching_max_latency_ms must be non-negative; was {self.max_latency_ms}")
        if self.max_batch_size <= 0:
            raise _invalid(f"input_batch_size_limit must be positive; was {self.max_batch_size}")
        if self.batch_timeout_micros < 0:
            raise _invalid(
                f"batch_timeout_micros must be non-negative; was {self.batch_timeout_micros}"
            )
        if self.effective_max_enqueued_batches <= 0:
            raise _invalid(
                f"max_enqueued_batches must be positive; was {self.max_enqueued_batches}"
            )
        if self.enable_large_batch_splitting:
            if self.execution_batch_size <= 0:
                raise _invalid(
                    f"max_execution_batch_size must be positive; was {self.execution_batch_size}"
                )
            if self.max_batch_size < self.execution_batch_size:
                raise _invalid(
                    "When enable_large_batch_splitting is true, input_batch_size_limit must be "
                    "greater than or equal to max_execution_batch_size."
                )
        sizes = self.allowed_batch_sizes
        if sizes:
            if any(s <= 0 for s in sizes) or any(b <= a for a, b in zip(sizes, sizes[1:])):
                raise _invalid("allowed_batch_sizes entries must be monotonically increasing")
            if self.enable_large_batch_splitting:
                if sizes[-1] != self.execution_batch_size:
                    raise _invalid(
                        "Last entry in allowed_batch_sizes must be equal to "
                        f"max_execution_batch_size; last entry was {sizes[-1]}; expected "
                        f"{self.execution_batch_size}"
                    )
            elif sizes[-1] != self.max_batch_size:
                raise _invalid(
                    "Last entry in allowed_batch_sizes must match max_batch_size; last entry "
                    f"was {sizes[-1]}; expected {self.max_batch_size}"
                )

    def padded_size(self, batch_size: int) -> int:
        """The smallest allowed batch size >= ``batch_size`` (``batch_size`` itself when
        there is no list or it is larger than every entry)."""
        for allowed in self.allowed_batch_sizes:
            if allowed >= batch_size:
                return allowed
        return batch_size


@dataclass(frozen=True)
class BatchingConfig:
    """The server's batching setup: pool options plus how each version gets its options.

    ``options`` applies to every model unless ``per_model`` is set, in which case each
    version's ``batching_params.pbtxt`` decides (no file: that version is not batched) and
    ``options`` only sizes and names the shared pool.
    """

    options: BatchingOptions
    per_model: bool = False

    def with_server_choices(self, options: BatchingOptions) -> BatchingOptions:
        """A per-model file's options with what only flags set (the batching mode)."""
        return replace(options, mode=self.options.mode, max_latency_ms=self.options.max_latency_ms)


def _invalid(message: str) -> ServingError:
    return ServingError(Code.INVALID_ARGUMENT, message)


def _wrapped(message: Any, name: str) -> Any:
    return getattr(message, name).value if message.HasField(name) else None


def options_from_proto(message: Any, *, thread_pool_name: str = DEFAULT_THREAD_POOL_NAME,
                       default_timeout_micros: int | None = None) -> BatchingOptions:
    """Options from a `BatchingParameters` message: unset fields take the defaults.

    ``default_timeout_micros`` replaces the default ``batch_timeout_micros`` (the
    ``TF_BATCH_TIMEOUT_MICROS`` environment variable); a value in the message wins.
    """
    defaults = BatchingOptions()
    timeout = _wrapped(message, "batch_timeout_micros")
    if timeout is None:
        timeout = defaults.batch_timeout_micros if default_timeout_micros is None else default_timeout_micros
    pool_name = _wrapped(message, "thread_pool_name")
    splitting = _wrapped(message, "enable_large_batch_splitting")
    return BatchingOptions(
        max_batch_size=_pick(_wrapped(message, "max_batch_size"), defaults.max_batch_size),
        batch_timeout_micros=timeout,
        max_enqueued_batches=_pick(
            _wrapped(message, "max_enqueued_batches"), defaults.max_enqueued_batches
        ),
        num_batch_threads=_pick(_wrapped(message, "num_batch_threads"), defaults.num_batch_threads),
        thread_pool_name=pool_name if pool_name is not None else thread_pool_name,
        allowed_batch_sizes=tuple(int(s) for s in message.allowed_batch_sizes),
        pad_variable_length_inputs=bool(message.pad_variable_length_inputs),
        enable_large_batch_splitting=bool(splitting),
        max_execution_batch_size=_wrapped(message, "max_execution_batch_size"),
    )


def _pick(value: int | None, default: int) -> int:
    return default if value is None else int(value)


def parse_batching_parameters(text: str, *, source: str = "batching parameters",
                              default_timeout_micros: int | None = None) -> BatchingOptions:
    """Parse text-format `BatchingParameters`; INVALID_ARGUMENT naming ``source`` if it
    does not parse (the options are not validated here, see `BatchingOptions.validate`)."""
    try:
        message = parse_text(BatchingParameters, text)
    except text_format.ParseError as exc:
        raise _invalid(
            f"Error parsing text-format tensorflow.serving.BatchingParameters ({source}): {exc}"
        ) from None
    return options_from_proto(message, default_timeout_micros=default_timeout_micros)


def read_batching_parameters_file(path: str, *, default_timeout_micros: int | None = None
                                  ) -> BatchingOptions:
    """`parse_batching_parameters` of a file (local or in a model store); INVALID_ARGUMENT if
    it cannot be read."""
    try:
        text = stores.read_text(path)
    except (OSError, UnicodeDecodeError) as exc:
        raise _invalid(f"Cannot read batching parameters file {path}: {exc}") from None
    return parse_batching_parameters(text, source=path,
                                     default_timeout_micros=default_timeout_micros)


def check_scheduler_options(options: BatchingOptions) -> None:
    """What TF checks when it builds the shared scheduler (INVALID_ARGUMENT)."""
    if options.num_batch_threads < 1:
        raise _invalid(f"num_batch_threads must be positive; was {options.num_batch_threads}")


def batching_config_from_server_options(
    server_options: Any, environ: Mapping[str, str] | None = None
) -> BatchingConfig | None:
    """The server's batching setup from its flags and environment; None if batching is off.

    Raises `BatchingConfigError` with TF Serving's startup messages: a parameters file
    without batching on, an unreadable or unparsable file, a bad ``TF_BATCH_TIMEOUT_MICROS``,
    ``num_batch_threads`` < 1.
    """
    env = os.environ if environ is None else environ
    enabled = bool(server_options.enable_batching) or (
        env.get(ENV_ENABLE_BATCHING, "").strip().lower() in _TRUE
    )
    path = server_options.batching_parameters_file
    if path and not enabled:
        raise BatchingConfigError(
            "server_options.batching_parameters_file is set without setting "
            "server_options.enable_batching to true."
        )
    if not enabled:
        return None
    env_timeout: int | None = None
    raw_timeout = env.get(ENV_BATCH_TIMEOUT_MICROS, "").strip()
    if raw_timeout:
        try:
            env_timeout = int(raw_timeout)
        except ValueError:
            raise BatchingConfigError(
                f"{ENV_BATCH_TIMEOUT_MICROS} must be an integer number of microseconds; "
                f"was {raw_timeout!r}"
            ) from None
    try:
        if path:
            options = read_batching_parameters_file(path, default_timeout_micros=env_timeout)
        else:
            options = BatchingOptions(thread_pool_name=SERVER_THREAD_POOL_NAME)
            if env_timeout is not None:
                options = replace(options, batch_timeout_micros=env_timeout)
        check_scheduler_options(options)
        options = replace(options, mode=str(getattr(server_options, "batching_mode", FIXED)),
                          max_latency_ms=float(getattr(server_options, "batching_max_latency_ms", 0.0)))
        if options.mode not in BATCHING_MODES or not (options.max_latency_ms >= 0.0):
            options.validate()
    except ServingError as err:
        raise BatchingConfigError(f"Failed to start server. Error: {err}") from None
    return BatchingConfig(options=options,
                          per_model=bool(server_options.enable_per_model_batching_parameters))
