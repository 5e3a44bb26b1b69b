"""ServingMetrics on its own registry: TF Serving's names and semantics, ours, the hooks."""

from __future__ import annotations

import logging

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from pyserving.core.servable_id import ServableId
from pyserving.core.servable_state import ManagerState, ServableState
from pyserving.errors import Code, ServingError
from pyserving.monitoring.exporter import render
from pyserving.monitoring.metrics import (
    REQUEST_LATENCY_BUCKETS_US,
    ServingMetrics,
    current_request,
    note_signature,
    note_version,
    prometheus_name,
)


@pytest.fixture
def metrics() -> ServingMetrics:
    m = ServingMetrics(CollectorRegistry(auto_describe=False))
    m.on_servable_state(ServableState(ServableId("m", 1), ManagerState.START))  # "m" is known
    return m


def samples(metrics: ServingMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """(sample name, sorted labels) -> value, parsed back from the exposition."""
    text = render(metrics.registry, metrics.exposition_names).decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(metrics: ServingMetrics, name: str, **labels: str) -> float:
    """A sample by its exported name (the parser reports counter samples as `<name>_total`)."""
    got = samples(metrics)
    key = tuple(sorted(labels.items()))
    return got.get((name, key), got.get((name + "_total", key), 0.0))


def test_tf_serving_names_are_sanitized_like_its_exporter():
    assert prometheus_name("/tensorflow/serving/request_count") == ":tensorflow:serving:request_count"
    assert prometheus_name("/tensorflow/serving/batching_session/queuing_latency") == \
        ":tensorflow:serving:batching_session:queuing_latency"
    assert prometheus_name("9lives/x") == "_9lives:x"


def test_request_latency_buckets_are_tf_servings():
    assert len(REQUEST_LATENCY_BUCKETS_US) == 33
    assert REQUEST_LATENCY_BUCKETS_US[0] == 10 and REQUEST_LATENCY_BUCKETS_US[3] == pytest.approx(58.32)


def test_successful_request_counts_times_and_carries_version_and_signature(metrics):
    record = metrics.start("rest", "predict", "m", tf_api="predict")
    token = current_request.set(record)
    try:
        note_version(1)
        note_signature("serving_default")
    finally:
        current_request.reset(token)
    metrics.finish(record, None)
    assert value(metrics, ":tensorflow:serving:request_count", model_name="m", status="OK") == 1
    assert value(metrics, ":tensorflow:serving:request_latency_count",
                 model_name="m", API="predict", entrypoint="REST") == 1
    assert value(metrics, "pyserving_request_latency_seconds_count", model="m", version="1",
                 signature="serving_default", api="predict", entrypoint="rest") == 1


def test_failed_request_counts_its_code_but_no_latency(metrics):
    record = metrics.start("grpc", "predict", "m", tf_api="Predict")
    metrics.finish(record, ServingError(Code.INVALID_ARGUMENT, "bad input"))
    assert value(metrics, ":tensorflow:serving:request_count", model_name="m", status="INVALID_ARGUMENT") == 1
    assert value(metrics, "pyserving_request_errors_total", model="m", code="INVALID_ARGUMENT") == 1
    assert value(metrics, ":tensorflow:serving:request_latency_count",
                 model_name="m", API="Predict", entrypoint="GRPC") == 0


def test_requests_tf_serving_does_not_count_still_get_ours(metrics):
    record = metrics.start("grpc", "status", "m", tf_api=None)
    metrics.finish(record, None)
    assert not any(name.startswith(":tensorflow:serving:request_count") for name, _ in samples(metrics))
    assert value(metrics, "pyserving_request_latency_seconds_count", model="m", version="",
                 signature="", api="status", entrypoint="grpc") == 1


def test_unknown_model_names_do_not_grow_any_series(metrics):
    for name in ("nope1", "nope2", "x" * 100_000):
        metrics.finish(metrics.start("rest", "predict", name, tf_api="predict"),
                       ServingError(Code.NOT_FOUND, "Servable not found"))
    assert value(metrics, "pyserving_request_errors_total", model="_unknown", code="NOT_FOUND") == 3
    assert value(metrics, ":tensorflow:serving:request_count", model_name="_unknown", status="NOT_FOUND") == 3
    assert {dict(labels).get("model_name", dict(labels).get("model")) for _, labels in samples(metrics)} <= \
        {None, "m", "_unknown"}


def test_configured_models_keep_their_name_before_the_manager_sees_them(metrics):
    metrics.bind_configured(lambda name: name == "configured")
    for name in ("configured", "nope"):
        metrics.finish(metrics.start("grpc", "predict", name, tf_api="Predict"), None)
    assert value(metrics, ":tensorflow:serving:request_count", model_name="configured", status="OK") == 1
    assert value(metrics, ":tensorflow:serving:request_count", model_name="_unknown", status="OK") == 1
    assert value(metrics, ":tensorflow:serving:request_latency_count",
                 model_name="configured", API="Predict", entrypoint="GRPC") == 1


def test_in_flight_requests_for_unknown_names_share_one_series(metrics):
    metrics.bind_in_flight(lambda: {"m": 1, "nope1": 2, "nope2": 3})
    assert value(metrics, "pyserving_in_flight_requests", model="m") == 1
    assert value(metrics, "pyserving_in_flight_requests", model="_unknown") == 5


def test_version_states_and_load_unload_durations(metrics):
    sid = ServableId("m", 1)
    for state in (ManagerState.LOADING, ManagerState.AVAILABLE):
        metrics.on_servable_state(ServableState(sid, state))
    assert value(metrics, "pyserving_model_version_state", model="m", version="1") == 30
    assert value(metrics, "pyserving_model_load_duration_seconds_count", model="m", outcome="success") == 1
    for state in (ManagerState.UNLOADING, ManagerState.END):
        metrics.on_servable_state(ServableState(sid, state))
    assert value(metrics, "pyserving_model_version_state", model="m", version="1") == 50
    assert value(metrics, "pyserving_model_unload_duration_seconds_count", model="m") == 1

    broken = ServableId("m", 2)
    metrics.on_servable_state(ServableState(broken, ManagerState.LOADING))
    metrics.on_servable_state(ServableState(broken, ManagerState.END, ServingError(Code.DATA_LOSS, "x")))
    assert value(metrics, "pyserving_model_load_duration_seconds_count", model="m", outcome="failure") == 1
    assert value(metrics, "pyserving_model_unload_duration_seconds_count", model="m") == 1


def test_runtime_examples_warmup_and_batching_hooks(metrics):
    metrics.observe_runtime("m", "Classify", "TF1", 0.002)
    metrics.observe_examples("m", 3)
    metrics.record_warmup("/models/m/1", "OK", 0.5, 7)
    hooks = metrics.batching("m")
    hooks.task_enqueued(3)
    hooks.set_queue_depth(4)
    hooks.batch_started(8, 5, [0.001, 0.002])
    got = samples(metrics)
    assert got[(":tensorflow:serving:runtime_latency_sum", (("API", "Classify"), ("model_name", "m"),
                                                             ("runtime", "TF1")))] == pytest.approx(2000)
    assert value(metrics, ":tensorflow:serving:request_example_count_total", model="m") == 3
    assert value(metrics, ":tensorflow:serving:request_example_counts_count", model="m") == 1
    assert value(metrics, ":tensorflow:serving:model_warmup_records_read", model_path="/models/m/1", status="OK") == 7
    assert value(metrics, ":tensorflow:serving:model_warmup_latency_count", model_path="/models/m/1", status="OK") == 1
    assert value(metrics, ":tensorflow:serving:batching_session:wrapped_run_count") == 1
    assert value(metrics, ":tensorflow:serving:batching_session:input_batch_size_sum") == 3
    assert value(metrics, ":tensorflow:serving:batching_session:processed_batch_size_sum") == 8
    assert value(metrics, ":tensorflow:serving:batching_session:padding_size_sum", execution_batch_size="8") == 5
    assert value(metrics, ":tensorflow:serving:batching_session:queuing_latency_count",
                 thread_pool_name="model_server_batch_threads") == 2
    assert value(metrics, "pyserving_batch_size_count", model="m") == 1
    assert value(metrics, "pyserving_batch_queue_depth", model="m") == 4
    assert value(metrics, "pyserving_batch_queue_delay_seconds_count", model="m") == 2


def test_batch_rows_padding_and_the_adaptive_cost_model_are_exported(metrics):
    hooks = metrics.batching("m")
    hooks.batch_rows(6, 2)
    hooks.batch_rows(8, 0)
    hooks.adaptive_state(0.0004, 0.00005, 0.001)
    got = samples(metrics)
    assert value(metrics, "pyserving_batch_rows_total", model="m") == 14
    assert value(metrics, "pyserving_batch_padding_rows_total", model="m") == 2
    assert got[("pyserving_batch_cost_fixed_seconds", (("model", "m"),))] == pytest.approx(0.0004)
    assert got[("pyserving_batch_cost_per_row_seconds", (("model", "m"),))] == pytest.approx(0.00005)
    assert got[("pyserving_batch_wait_seconds", (("model", "m"),))] == pytest.approx(0.001)


def test_in_flight_is_read_at_scrape_time(metrics):
    current = {"m": 2}
    metrics.bind_in_flight(lambda: current)
    assert value(metrics, "pyserving_in_flight_requests", model="m") == 2
    current["m"] = 0
    assert value(metrics, "pyserving_in_flight_requests", model="m") == 0


def test_value_reads_counters_by_tf_name_for_reload_config(metrics):
    for code in (None, ServingError(Code.NOT_FOUND, "x")):
        metrics.finish(metrics.start("rest", "predict", "m", tf_api="predict"), code)
    assert metrics.value("/tensorflow/serving/request_count") == 2
    assert metrics.value(":tensorflow:serving:request_count") == 2
    metrics.observe_examples("m", 5)
    assert metrics.value("/tensorflow/serving/request_example_count_total") == 5
    assert metrics.value("/tensorflow/serving/no_such_metric") == 0


def test_server_side_errors_are_logged_once_per_second_per_model_and_code(metrics, caplog):
    caplog.set_level(logging.DEBUG, logger="pyserving.requests")
    for _ in range(5):
        record = metrics.start("rest", "predict", "m", tf_api="predict")
        record.version = "1"
        metrics.finish(record, ServingError(Code.RESOURCE_EXHAUSTED, "Too many requests in flight"))
    metrics.finish(metrics.start("rest", "predict", "m", tf_api="predict"),
                   ServingError(Code.INVALID_ARGUMENT, "bad"))
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "model=m" in warnings[0].getMessage() and "version=1" in warnings[0].getMessage()
    assert "RESOURCE_EXHAUSTED" in warnings[0].getMessage()
    debug = [r for r in caplog.records if r.levelno == logging.DEBUG]
    assert len(debug) == 1 and "INVALID_ARGUMENT" in debug[0].getMessage()


def test_watchdog_gauges_read_handles_and_the_oldest_request_at_scrape_time():
    from pyserving.core.servable_id import ServableId

    metrics = ServingMetrics(CollectorRegistry(auto_describe=False))
    handles = {ServableId("m", 2): 3, ServableId("m", 1): 0}
    metrics.bind_handles(lambda: handles)
    get = metrics.registry.get_sample_value
    assert get("pyserving_servable_handles_in_use", {"model": "m", "version": "2"}) == 3
    assert get("pyserving_servable_handles_in_use", {"model": "m", "version": "1"}) == 0
    assert get("pyserving_oldest_request_age_seconds") == 0.0
    record = metrics.start("rest", "predict", "m", tf_api="predict")
    record.start -= 5.0  # started five seconds ago
    metrics.start("grpc", "predict", "m", tf_api="Predict")
    assert get("pyserving_oldest_request_age_seconds") >= 5.0
    metrics.finish(record, None)
    assert get("pyserving_oldest_request_age_seconds") < 5.0
    metrics.event_loop_lag.observe(0.002)
    assert get("pyserving_event_loop_lag_seconds_count") == 1
