"""Every metric pyserving records, defined once against an injected `CollectorRegistry`.

Two families share one registry (see `exporter.py` for the text format):

* **TF Serving's**, named `/tensorflow/serving/...` and exported as `:tensorflow:serving:...`
  with TF Serving's label names, units (microseconds) and buckets, so dashboards and alerts
  written for `tensorflow_model_server` keep working. Same semantics: `request_count
  {model_name, status}` counts every REST `/v1` request (status and metadata too) and the
  gRPC Predict/Classify/Regress calls; `request_latency {model_name, API, entrypoint}` only
  the successful ones; `runtime_latency {model_name, API, runtime}` the model run itself;
  `request_example_counts` / `request_example_count_total {model}` the examples of
  Classify/Regress; `model_warmup_latency` / `model_warmup_records_read {model_path,
  status}` and the `batching_session/*` metrics are fed by the hooks below.
* **Ours**, `pyserving_*`, Prometheus conventions (seconds, `_total` counters):
  `pyserving_request_latency_seconds {model, version, signature, api, entrypoint}`
  (successful requests), `pyserving_request_errors_total {model, code}`,
  `pyserving_model_version_state {model, version}` (the `ModelVersionStatus.State` number:
  10 START, 20 LOADING, 30 AVAILABLE, 40 UNLOADING, 50 END),
  `pyserving_model_load_duration_seconds {model, outcome}` (LOADING to AVAILABLE/END,
  retries and warmup included), `pyserving_model_unload_duration_seconds {model}`,
  `pyserving_in_flight_requests {model}` (read at scrape time from a callable),
  `pyserving_batch_size {model}` and `pyserving_batch_queue_depth {model}`; per batch
  `pyserving_batch_queue_delay_seconds {model}` (each task's wait in the queue),
  `pyserving_batch_rows_total` / `pyserving_batch_padding_rows_total {model}` (rows/s and the
  padding ratio are their rates); with adaptive batching, gauges of the cost model
  (`pyserving_batch_cost_fixed_seconds`, `pyserving_batch_cost_per_row_seconds {model}`: a
  batch of n rows takes fixed + per_row x n) and `pyserving_batch_wait_seconds {model}`
  (how long the last batch's oldest task waited before it ran).
  Watchdogs: `pyserving_servable_handles_in_use {model, version}` (handles held on each
  loaded or unloading version; an unload waits for them), `pyserving_oldest_request_age_seconds`
  (the request in flight the longest; 0 when none), both read at scrape time, and
  `pyserving_event_loop_lag_seconds` (fed by `watchdog.LoopWatchdog`).
  Object stores (`StoreMetrics`, fed by the source's polls): `pyserving_model_store_lists_total
  {model, result}`, `pyserving_model_store_list_seconds {model}`,
  `pyserving_model_store_downloads_total {model, result}`, `pyserving_model_store_download_bytes_total
  {model}`, `pyserving_model_store_download_files_total {model}`,
  `pyserving_model_store_download_seconds {model}`; `result` is the canonical code (`OK` or the failure's).
  Authentication: `pyserving_auth_denials_total {entrypoint, reason}` (reason: missing,
  invalid, forbidden, limited).

Model labels of request metrics (TF Serving's `model_name` and our `model`, in flight
included) name only models the server knows: configured (`bind_configured`) or ever seen
by the manager. Any other requested name counts under `_unknown`: TF Serving keeps the
requested name, of any length, so requests for random (or 50 MB) names would grow the
page by one series each.

Request path (a few microseconds: label children are cached, no `labels()` per request;
histograms are `BufferedHistogram`s, whose `observe` is a list append bucketed in bulk, and
the batch queue depth is read at scrape time):

    record = metrics.start("rest", "predict", model, tf_api="predict")  # front end, loop
    note_version(v); note_signature(s)            # service, via the `current_request` var
    metrics.observe_runtime(model, "Predict", "TF1", seconds)          # worker thread
    metrics.finish(record, error)                 # front end; error None means OK

Thread-safety: every method may be called from any thread (prometheus-client values carry
their own locks, `BufferedHistogram` is thread-safe; the child caches are dicts whose single
get/set operations are atomic).
"""

from __future__ import annotations

import contextvars
import logging
import re
import threading
import time
from typing import Any, Callable, Iterable, Mapping, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import GaugeMetricFamily

from pyserving.errors import Code, ServingError
from pyserving.monitoring.buffered import BufferedHistogram

__all__ = [
    "ServingMetrics",
    "StoreMetrics",
    "BatchingMetrics",
    "RequestRecord",
    "current_request",
    "note_version",
    "note_signature",
    "prometheus_name",
    "REQUEST_LATENCY_BUCKETS_US",
]

log = logging.getLogger("pyserving.requests")

# TF Serving's buckets (`monitoring::Buckets::Exponential(scale, growth, count)`).
REQUEST_LATENCY_BUCKETS_US = tuple(10 * 1.8**i for i in range(33))    # 10 µs .. ~20 min
QUEUING_LATENCY_BUCKETS_US = tuple(100 * 1.2**i for i in range(52))   # 100 µs .. ~1 s
BATCH_SIZE_BUCKETS = tuple(float(2**i) for i in range(14))            # 1 .. 8192
EXAMPLE_COUNT_BUCKETS = tuple(float(2**i) for i in range(15))         # 1 .. 16384
# Ours (seconds).
QUEUE_DELAY_SECONDS_BUCKETS = (0.00005, 0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02,
                               0.05, 0.1, 0.2, 0.5, 1.0, 2.0)
REQUEST_SECONDS_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2,
                           0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
LOOP_LAG_SECONDS_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                            2.5, 5.0, 10.0, 30.0)
LIFECYCLE_SECONDS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
                             300.0, 600.0, 1800.0)

UNKNOWN_MODEL = "_unknown"
# Request errors logged at WARNING (the server's side of the story); the others at DEBUG.
_SERVER_SIDE = frozenset({Code.UNKNOWN, Code.INTERNAL, Code.DATA_LOSS, Code.DEADLINE_EXCEEDED,
                          Code.RESOURCE_EXHAUSTED, Code.UNAVAILABLE, Code.UNIMPLEMENTED})
_LOG_INTERVAL_SECONDS = 1.0  # per (model, code): at most one WARNING line per interval

_STATE_LOADING, _STATE_AVAILABLE, _STATE_UNLOADING, _STATE_END = 20, 30, 40, 50

_NOT_PROMETHEUS = re.compile(r"[^a-zA-Z0-9_]")


def prometheus_name(tf_name: str) -> str:
    """TF metric name → exported name, as TF Serving's exporter: every character outside
    `[a-zA-Z0-9_]` becomes `:`, and a leading digit gets a `_` in front."""
    name = _NOT_PROMETHEUS.sub(":", tf_name)
    return "_" + name if name[:1].isdigit() else name


class RequestRecord:
    """One request as the metrics see it; created by `ServingMetrics.start`.

    The front end owns it; the service fills `version` and `signature` once resolved
    (through `note_version` / `note_signature`). `tf_api` is TF Serving's `API` label, or
    None when TF Serving does not count this kind of request.
    """

    __slots__ = ("entrypoint", "api", "model", "tf_api", "version", "signature", "start")

    def __init__(self, entrypoint: str, api: str, model: str, tf_api: str | None) -> None:
        self.entrypoint = entrypoint
        self.api = api
        self.model = model
        self.tf_api = tf_api
        self.version = ""
        self.signature = ""
        self.start = time.perf_counter()

    def __str__(self) -> str:  # names the request in lifecycle logs
        return f"{self.entrypoint} {self.api or 'request'} for model {self.model or '-'}"


current_request: contextvars.ContextVar[RequestRecord | None] = contextvars.ContextVar(
    "pyserving_current_request", default=None
)


def note_version(version: int) -> None:
    """Attach the resolved version to the current request's record (no-op without one)."""
    record = current_request.get()
    if record is not None:
        record.version = str(version)


def note_signature(signature: str) -> None:
    """Attach the resolved signature name to the current request's record."""
    record = current_request.get()
    if record is not None:
        record.signature = signature


class _InFlightCollector:
    """`pyserving_in_flight_requests`, read from a callable at scrape time (zero cost on
    the request path). The callable returns requested model name -> requests in flight;
    `label` folds unknown names into one series."""

    def __init__(self, label: Callable[[str], str]) -> None:
        self.source: Callable[[], Mapping[str, int]] | None = None
        self._label = label

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "pyserving_in_flight_requests", "Requests accepted and not yet answered, by model.",
            labels=["model"],
        )
        source = self.source
        counts: dict[str, int] = {}
        for model, count in (source() if source is not None else {}).items():
            label = self._label(model)
            counts[label] = counts.get(label, 0) + count
        for label, count in sorted(counts.items()):
            family.add_metric([label], count)
        yield family


class _WatchdogCollector:
    """Handles in use per version and the oldest request's age, read at scrape time."""

    def __init__(self, open_requests: set[RequestRecord]) -> None:
        self.handles: Callable[[], Mapping[Any, int]] | None = None
        self._open = open_requests

    def collect(self) -> Iterable[GaugeMetricFamily]:
        handles = GaugeMetricFamily(
            "pyserving_servable_handles_in_use",
            "Handles held on a loaded or unloading version (an unload waits for them).",
            labels=["model", "version"],
        )
        source = self.handles
        if source is not None:
            for sid, count in sorted(source().items(), key=lambda e: (e[0].name, e[0].version)):
                handles.add_metric([sid.name, str(sid.version)], count)
        yield handles
        starts = [r.start for r in list(self._open)]  # a copy: the loop adds and removes
        oldest = time.perf_counter() - min(starts) if starts else 0.0
        yield GaugeMetricFamily(
            "pyserving_oldest_request_age_seconds",
            "Seconds the oldest request in flight has been running (0: none).", value=oldest,
        )


class BatchingMetrics:
    """Hooks for one model's batch scheduler. Thread-safe; each call is a few µs.

    - `task_enqueued(size)`: a request (task) of `size` rows entered the queue
      (TF `input_batch_size`, `wrapped_run_count`).
    - `batch_started(batch_size, padding_size, queue_seconds)`: a batch is about to run
      (TF `processed_batch_size`, `padding_size{execution_batch_size}`, `queuing_latency`
      once per task with the seconds it waited; our `pyserving_batch_size`).
    - `set_queue_depth(tasks)`: tasks waiting now (our `pyserving_batch_queue_depth`).
    - `batch_rows(rows, padding_rows)`: rows run (ours, counters).
    - `adaptive_state(a, b, wait)`: the adaptive cost model and the last batch's wait
      (seconds; gauges read at scrape time).
    """

    __slots__ = ("_m", "_model", "_queuing", "_depth", "_size", "_delay", "_rows", "_padding",
                 "_cost")

    def __init__(self, metrics: ServingMetrics, model: str, thread_pool_name: str) -> None:
        self._m = metrics
        self._model = model
        self._queuing = metrics.batching_queuing_latency.labels(thread_pool_name)
        self._size = metrics.batch_size.labels(model)
        # The depth is kept here and read by the gauge at scrape time (an attribute store
        # per request instead of a locked `Gauge.set`).
        self._depth = 0
        metrics.batch_queue_depth.labels(model).set_function(lambda: self._depth)
        self._delay = metrics.batch_queue_delay.labels(model)
        self._rows = metrics.batch_rows.labels(model)
        self._padding = metrics.batch_padding_rows.labels(model)
        self._cost = (0.0, 0.0, 0.0)  # a, b, wait: one tuple store per batch, read at scrape time
        metrics.batch_cost_fixed.labels(model).set_function(lambda: self._cost[0])
        metrics.batch_cost_per_row.labels(model).set_function(lambda: self._cost[1])
        metrics.batch_wait.labels(model).set_function(lambda: self._cost[2])

    def task_enqueued(self, size: int) -> None:
        self._m.batching_input_batch_size.observe(size)
        self._m.batching_wrapped_run_count.inc()

    def batch_started(self, batch_size: int, padding_size: int, queue_seconds: Iterable[float] = ()) -> None:
        self._m.batching_processed_batch_size.observe(batch_size)
        self._m.batching_padding_size.labels(str(batch_size)).observe(padding_size)
        self._size.observe(batch_size)
        for seconds in queue_seconds:
            self._queuing.observe(seconds * 1e6)
            self._delay.observe(seconds)

    def batch_rows(self, rows: int, padding_rows: int) -> None:
        self._rows.inc(rows)
        if padding_rows:
            self._padding.inc(padding_rows)

    def adaptive_state(self, fixed_seconds: float, per_row_seconds: float, wait_seconds: float) -> None:
        self._cost = (fixed_seconds, per_row_seconds, wait_seconds)

    def set_queue_depth(self, tasks: int) -> None:
        self._depth = tasks


class StoreMetrics:
    """Listings and copies of versions on object stores (a `StoreObserver`)."""

    def __init__(self, registry: CollectorRegistry, exposition_names: dict[str, str] | None = None) -> None:
        names = exposition_names if exposition_names is not None else {}

        def counter(name: str, doc: str, labels: list[str]) -> Counter:
            names[name[: -len("_total")]] = name
            return Counter(name[: -len("_total")], doc, labels, registry=registry)

        self.lists = counter("pyserving_model_store_lists_total", "Listings of remote base paths.",
                             ["model", "result"])
        self.list_seconds = BufferedHistogram(
            "pyserving_model_store_list_seconds", "Time to list a remote base path.", ["model"],
            LIFECYCLE_SECONDS_BUCKETS, registry)
        self.downloads = counter("pyserving_model_store_downloads_total", "Copies of remote versions into the "
                                 "model cache.", ["model", "result"])
        self.download_bytes = counter("pyserving_model_store_download_bytes_total", "Bytes copied from object "
                                      "stores.", ["model"])
        self.download_files = counter("pyserving_model_store_download_files_total", "Files copied from object "
                                      "stores.", ["model"])
        self.download_seconds = BufferedHistogram(
            "pyserving_model_store_download_seconds", "Time to copy a remote version.", ["model"],
            LIFECYCLE_SECONDS_BUCKETS, registry)

    @staticmethod
    def _result(error: ServingError | None) -> str:
        return "OK" if error is None else error.code.name

    def store_listed(self, model: str, seconds: float, error: ServingError | None) -> None:
        self.lists.labels(model, self._result(error)).inc()
        self.list_seconds.labels(model).observe(seconds)

    def store_downloaded(self, model: str, files: int, nbytes: int, seconds: float,
                         error: ServingError | None) -> None:
        self.downloads.labels(model, self._result(error)).inc()
        self.download_bytes.labels(model).inc(nbytes)
        if error is None:
            self.download_files.labels(model).inc(files)
            self.download_seconds.labels(model).observe(seconds)


class ServingMetrics:
    """All metrics, registered on `registry` (give each server its own registry)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=False)
        # prometheus-client drops a `_total` suffix from counter names; the exporter prints
        # each counter under the name it was declared with (family name -> declared name).
        self.exposition_names: dict[str, str] = {}

        # -- TF Serving's -------------------------------------------------------------------
        self.request_count = self._counter(
            "/tensorflow/serving/request_count", "The total number of requests.", ["model_name", "status"]
        )
        self.request_latency = self._histogram(
            "/tensorflow/serving/request_latency", "Distribution of wall time (in microseconds) for Tensorflow "
            "Serving request.", ["model_name", "API", "entrypoint"], REQUEST_LATENCY_BUCKETS_US,
        )
        self.runtime_latency = self._histogram(
            "/tensorflow/serving/runtime_latency", "Distribution of wall time (in microseconds) for Tensorflow "
            "runtime.", ["model_name", "API", "runtime"], REQUEST_LATENCY_BUCKETS_US,
        )
        self.request_example_counts = self._histogram(
            "/tensorflow/serving/request_example_counts", "The number of tensorflow.Examples per request.",
            ["model"], EXAMPLE_COUNT_BUCKETS,
        )
        self.request_example_count_total = self._counter(
            "/tensorflow/serving/request_example_count_total", "The total number of tensorflow.Examples.",
            ["model"],
        )
        self.model_warmup_latency = self._histogram(
            "/tensorflow/serving/model_warmup_latency", "Distribution of wall time (in microseconds) for warming "
            "up the model.", ["model_path", "status"], REQUEST_LATENCY_BUCKETS_US,
        )
        self.model_warmup_records_read = self._counter(
            "/tensorflow/serving/model_warmup_records_read", "Number of warmup records read.",
            ["model_path", "status"],
        )
        self.batching_queuing_latency = self._histogram(
            "/tensorflow/serving/batching_session/queuing_latency", "Distribution of wall time spent (in "
            "microseconds) in queuing", ["thread_pool_name"], QUEUING_LATENCY_BUCKETS_US,
        )
        self.batching_wrapped_run_count = self._counter(
            "/tensorflow/serving/batching_session/wrapped_run_count", "Counts the number of Run() calls on "
            "the wrapped session.", [],
        )
        self.batching_input_batch_size = self._histogram(
            "/tensorflow/serving/batching_session/input_batch_size", "Tracks the batch size distribution on "
            "the inputs by model.", [], BATCH_SIZE_BUCKETS,
        )
        self.batching_processed_batch_size = self._histogram(
            "/tensorflow/serving/batching_session/processed_batch_size", "Tracks the batch size distribution "
            "on processing by model.", [], BATCH_SIZE_BUCKETS,
        )
        self.batching_padding_size = self._histogram(
            "/tensorflow/serving/batching_session/padding_size", "Tracks the padding size distribution on "
            "batches by model.", ["execution_batch_size"], BATCH_SIZE_BUCKETS,
        )

        # -- ours -------------------------------------------------------------------------
        self.latency = self._histogram(
            "pyserving_request_latency_seconds", "Latency of successful requests.",
            ["model", "version", "signature", "api", "entrypoint"], REQUEST_SECONDS_BUCKETS,
        )
        self.errors = self._counter(
            "pyserving_request_errors_total", "Failed requests by canonical status code.", ["model", "code"]
        )
        self.model_version_state = Gauge(
            "pyserving_model_version_state", "ModelVersionStatus.State of each version (10 START, 20 LOADING, "
            "30 AVAILABLE, 40 UNLOADING, 50 END).", ["model", "version"], registry=self.registry,
        )
        self.load_duration = self._histogram(
            "pyserving_model_load_duration_seconds", "Version load time (LOADING to AVAILABLE or failed).",
            ["model", "outcome"], LIFECYCLE_SECONDS_BUCKETS,
        )
        self.unload_duration = self._histogram(
            "pyserving_model_unload_duration_seconds", "Version unload time (UNLOADING to END).",
            ["model"], LIFECYCLE_SECONDS_BUCKETS,
        )
        self.batch_size = self._histogram(
            "pyserving_batch_size", "Rows per executed batch.", ["model"], BATCH_SIZE_BUCKETS,
        )
        self.batch_queue_depth = Gauge(
            "pyserving_batch_queue_depth", "Tasks waiting in the batch queue.", ["model"], registry=self.registry
        )
        self.batch_queue_delay = self._histogram(
            "pyserving_batch_queue_delay_seconds", "Time each batched task waited in its queue.",
            ["model"], QUEUE_DELAY_SECONDS_BUCKETS,
        )
        self.batch_rows = self._counter(
            "pyserving_batch_rows_total", "Rows of the requests run in batches.", ["model"])
        self.batch_padding_rows = self._counter(
            "pyserving_batch_padding_rows_total", "Padding rows added to batches.", ["model"])
        self.batch_cost_fixed = Gauge(
            "pyserving_batch_cost_fixed_seconds", "Adaptive batching's cost model: seconds per batch.",
            ["model"], registry=self.registry)
        self.batch_cost_per_row = Gauge(
            "pyserving_batch_cost_per_row_seconds", "Adaptive batching's cost model: seconds per row.",
            ["model"], registry=self.registry)
        self.batch_wait = Gauge(
            "pyserving_batch_wait_seconds", "Adaptive batching: how long the last batch's oldest task "
            "waited before the batch ran.", ["model"], registry=self.registry)
        self._in_flight = _InFlightCollector(self.model_label)
        self.registry.register(self._in_flight)
        self.event_loop_lag = self._histogram(
            "pyserving_event_loop_lag_seconds", "How late the event loop ran a callback it was handed.",
            [], LOOP_LAG_SECONDS_BUCKETS,
        )
        self.store = StoreMetrics(self.registry, self.exposition_names)
        self.auth_denials = self._counter(
            "pyserving_auth_denials_total", "Requests refused by authentication or authorization, by reason "
            "(missing, invalid, forbidden, limited).", ["entrypoint", "reason"])
        self._open: set[RequestRecord] = set()  # requests started and not finished
        self._watchdog = _WatchdogCollector(self._open)
        self.registry.register(self._watchdog)

        # Label-child caches for the request path (key tuple -> child).
        self._count_children: dict[tuple[str, str], Any] = {}
        self._tf_latency_children: dict[tuple[str, str, str], Any] = {}
        self._runtime_children: dict[tuple[str, str, str], Any] = {}
        self._latency_children: dict[tuple[str, str, str, str, str], Any] = {}
        self._known_models: set[str] = set()  # ever seen by the manager
        self._is_configured: Callable[[str], bool] = lambda name: False
        self._loading_since: dict[tuple[str, int], float] = {}
        self._unloading_since: dict[tuple[str, int], float] = {}
        self._log_lock = threading.Lock()
        self._last_logged: dict[tuple[str, Code], tuple[float, int]] = {}

    # -- declaration helpers ------------------------------------------------------------------
    def _counter(self, name: str, doc: str, labels: Sequence[str]) -> Counter:
        exported = prometheus_name(name)
        family = exported[: -len("_total")] if exported.endswith("_total") else exported
        self.exposition_names[family] = exported
        return Counter(family, doc, list(labels), registry=self.registry)

    def _histogram(self, name: str, doc: str, labels: Sequence[str], buckets: Sequence[float]) -> BufferedHistogram:
        return BufferedHistogram(prometheus_name(name), doc, labels, buckets, self.registry)

    # -- request path ---------------------------------------------------------------------------
    def start(self, entrypoint: str, api: str, model: str, *, tf_api: str | None) -> RequestRecord:
        """A new record (clock started). `entrypoint` is "rest" or "grpc"; `api` our label
        (predict, classify, regress, multi_inference, metadata, status, reload_config)."""
        record = RequestRecord(entrypoint, api, model, tf_api)
        self._open.add(record)
        return record

    def finish(self, record: RequestRecord, error: ServingError | None) -> None:
        """Count and time a finished request; `error` None means it succeeded."""
        elapsed = time.perf_counter() - record.start
        self._open.discard(record)
        model = self.model_label(record.model)
        code = Code.OK if error is None else error.code
        if record.tf_api is not None:
            key = (model, code.name)
            child = self._count_children.get(key)
            if child is None:
                child = self._count_children[key] = self.request_count.labels(*key)
            child.inc()
        if error is None:
            if record.tf_api is not None:
                tf_key = (model, record.tf_api, "REST" if record.entrypoint == "rest" else "GRPC")
                tf_child = self._tf_latency_children.get(tf_key)
                if tf_child is None:
                    tf_child = self._tf_latency_children[tf_key] = self.request_latency.labels(*tf_key)
                tf_child.observe(elapsed * 1e6)
            our_key = (model, record.version, record.signature, record.api, record.entrypoint)
            our_child = self._latency_children.get(our_key)
            if our_child is None:
                our_child = self._latency_children[our_key] = self.latency.labels(*our_key)
            our_child.observe(elapsed)
            return
        self.errors.labels(model, code.name).inc()
        self._log_error(record, error)

    def model_label(self, name: str) -> str:
        """`name` if the server knows the model (configured or ever seen by the manager),
        else `_unknown`."""
        return name if name in self._known_models or self._is_configured(name) else UNKNOWN_MODEL

    def bind_configured(self, is_configured: Callable[[str], bool]) -> None:
        """Count requests for models `is_configured(name)` says are configured (maybe not
        loaded yet) under their own name."""
        self._is_configured = is_configured

    def _log_error(self, record: RequestRecord, error: ServingError) -> None:
        where = (f"{record.entrypoint} {record.api} model={record.model or '-'} "
                 f"version={record.version or '-'}")
        if error.code not in _SERVER_SIDE:
            log.debug("Request failed: %s: %s: %s", where, error.code.name, error.message)
            return
        now = time.monotonic()
        key = (self.model_label(record.model), error.code)  # bounded like the labels
        with self._log_lock:
            last, suppressed = self._last_logged.get(key, (float("-inf"), 0))
            if now - last < _LOG_INTERVAL_SECONDS:
                self._last_logged[key] = (last, suppressed + 1)
                return
            self._last_logged[key] = (now, 0)
        more = f" ({suppressed} more like it in the last {now - last:.1f} s)" if suppressed else ""
        log.warning("Request failed: %s: %s: %s%s", where, error.code.name, error.message, more)

    def observe_runtime(self, model: str, api: str, runtime: str, seconds: float) -> None:
        """TF Serving's `runtime_latency`: the model run (`api` Predict, Classify or Regress)."""
        key = (model, api, runtime)
        child = self._runtime_children.get(key)
        if child is None:
            child = self._runtime_children[key] = self.runtime_latency.labels(*key)
        child.observe(seconds * 1e6)

    def observe_examples(self, model: str, count: int) -> None:
        """Examples in one Classify/Regress request."""
        self.request_example_counts.labels(model).observe(count)
        self.request_example_count_total.labels(model).inc(count)

    def bind_in_flight(self, source: Callable[[], Mapping[str, int]]) -> None:
        """Read `pyserving_in_flight_requests` from `source()` (model -> count) at scrape time."""
        self._in_flight.source = source

    def bind_handles(self, source: Callable[[], Mapping[Any, int]]) -> None:
        """Read `pyserving_servable_handles_in_use` from `source()` (ServableId -> handles
        held) at scrape time."""
        self._watchdog.handles = source

    # -- lifecycle (subscribe to ServerCore.bus) --------------------------------------------------
    def on_servable_state(self, event: Any) -> None:
        """A `ServableState` event: version state gauge, load and unload durations."""
        name, version, state = event.id.name, event.id.version, int(event.state)
        self._known_models.add(name)
        self.model_version_state.labels(name, str(version)).set(state)
        key = (name, version)
        now = time.monotonic()
        if state == _STATE_LOADING:
            self._loading_since[key] = now
        elif state in (_STATE_AVAILABLE, _STATE_END) and key in self._loading_since:
            started = self._loading_since.pop(key)
            outcome = "success" if state == _STATE_AVAILABLE else "failure"
            self.load_duration.labels(name, outcome).observe(now - started)
        elif state == _STATE_UNLOADING:
            self._unloading_since[key] = now
        if state == _STATE_END and key in self._unloading_since:
            self.unload_duration.labels(name).observe(now - self._unloading_since.pop(key))

    # -- hooks for warmup and batching --------------------------------------------------------------
    def auth_denied(self, entrypoint: str, reason: str) -> None:
        self.auth_denials.labels(entrypoint, reason).inc()

    def record_warmup(self, model_path: str, status: str, seconds: float, records_read: int) -> None:
        """One version's warmup finished. `status` is the canonical code name ("OK",
        "INVALID_ARGUMENT", ...); `records_read` the records replayed (TF Serving's
        `model_warmup_latency` and `model_warmup_records_read`)."""
        self.model_warmup_latency.labels(model_path, status).observe(seconds * 1e6)
        self.model_warmup_records_read.labels(model_path, status).inc(records_read)

    def batching(self, model: str, thread_pool_name: str = "model_server_batch_threads") -> BatchingMetrics:
        """The hooks one model's batch scheduler calls (create once per scheduler)."""
        return BatchingMetrics(self, model, thread_pool_name)

    # -- reading ---------------------------------------------------------------------------------
    def value(self, name: str) -> int:
        """Sum of a counter or gauge over its label sets, by TF name
        (`/tensorflow/serving/request_count`) or exported name; 0 when unknown.
        (`ReloadConfigRequest.metric_names` reads metrics this way.)"""
        exported = prometheus_name(name) if name.startswith("/") else name
        total = 0.0
        for family in self.registry.collect():
            if self.exposition_names.get(family.name, family.name) != exported:
                continue
            for sample in family.samples:
                if sample.name in (family.name, family.name + "_total"):
                    total += sample.value
        return int(total)
