"""Server-side batching, as TF Serving configures it (`--enable_batching`,
`--batching_parameters_file`): one shared scheduler, a bounded queue per model version x
signature x output set, and a `BatchingServable` wrapper per loaded version.

The server calls `batching_config_from_server_options(options)` while it checks its flags
(None: batching off), then `start_batching(config)` before it builds its core, and
`Batching.stop()` after the models were unloaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from pyserving.batching.batching_servable import BatchingLoader, BatchingServable, loader_wrapper
from pyserving.batching.options import (
    BatchingConfig,
    BatchingConfigError,
    BatchingOptions,
    batching_config_from_server_options,
    parse_batching_parameters,
)
from pyserving.batching.scheduler import BatchObserver, BatchScheduler, BatchStats

__all__ = [
    "Batching",
    "start_batching",
    "batching_config_from_server_options",
    "BatchingConfig",
    "BatchingConfigError",
    "BatchingOptions",
    "BatchingServable",
    "BatchingLoader",
    "BatchObserver",
    "BatchScheduler",
    "BatchStats",
    "parse_batching_parameters",
    "MetricsObserver",
]


@dataclass(frozen=True)
class Batching:
    """The server's batching: its scheduler and the loader wrapper `ServerCore` applies."""

    config: BatchingConfig
    scheduler: BatchScheduler
    wrap_loader: Callable[[Any, Any, str], BatchingLoader]

    def stop(self, timeout: float | None = None) -> None:
        """Stop the batch threads (after the models were unloaded)."""
        self.scheduler.stop(timeout)


def start_batching(config: BatchingConfig) -> Batching:
    """Start the shared scheduler's threads for ``config``."""
    scheduler = BatchScheduler(config.options.num_batch_threads, config.options.thread_pool_name)
    return Batching(config, scheduler, loader_wrapper(scheduler, config))


class MetricsObserver:
    """A `BatchObserver` feeding per-model metric hooks.

    ``hooks_for(model_name)`` returns an object with ``task_enqueued(size)``,
    ``set_queue_depth(tasks)``, ``batch_started(batch_size, padding_size, queue_seconds)``,
    ``batch_rows(rows, padding_rows)`` and ``adaptive_state(a, b, wait)``
    (`pyserving.monitoring.metrics.BatchingMetrics`); it is called once per model. Thread-safe (the cache tolerates a duplicate first lookup).
    """

    def __init__(self, hooks_for: Callable[[str], Any]) -> None:
        self._hooks_for = hooks_for
        self._hooks: dict[str, Any] = {}

    def _get(self, model_name: str) -> Any:
        hooks = self._hooks.get(model_name)
        if hooks is None:
            hooks = self._hooks[model_name] = self._hooks_for(model_name)
        return hooks

    def on_enqueue(self, model_name: str, queue_name: str, task_size: int, queue_depth: int) -> None:
        hooks = self._get(model_name)
        hooks.task_enqueued(task_size)
        hooks.set_queue_depth(queue_depth)

    def on_batch(self, stats: BatchStats) -> None:
        hooks = self._get(stats.model_name)
        hooks.batch_started(stats.padded_size, stats.padded_size - stats.batch_size,
                            [m / 1e6 for m in stats.queuing_micros])
        hooks.set_queue_depth(stats.queue_depth)
        hooks.batch_rows(stats.batch_size, stats.padded_size - stats.batch_size)
        if stats.adaptive:
            hooks.adaptive_state(stats.cost_a_seconds, stats.cost_b_seconds, stats.chosen_wait_seconds)
