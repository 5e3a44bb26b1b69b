"""The Prometheus page looks like TF Serving's, and the monitoring config reads like its."""

from __future__ import annotations

import asyncio
import re

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.parser import text_string_to_metric_families

from pyserving.monitoring.exporter import (
    DEFAULT_PATH,
    MonitoringConfigError,
    PrometheusExporter,
    read_monitoring_config,
    render,
)
from pyserving.monitoring.metrics import ServingMetrics


def test_reads_tf_servings_own_monitoring_config(testdata):
    settings = read_monitoring_config(str(testdata / "monitoring_config.txt"))
    assert settings.enable and settings.path == "/monitoring/prometheus/metrics"


@pytest.mark.parametrize("text, enable, path", [
    ("prometheus_config { enable: true }", True, DEFAULT_PATH),
    ('prometheus_config { enable: true path: "/metrics" }', True, "/metrics"),
    ('prometheus_config { path: "/metrics" }', False, "/metrics"),
    ("", False, DEFAULT_PATH),
])
def test_config_defaults(tmp_path, text, enable, path):
    f = tmp_path / "monitoring.config"
    f.write_text(text)
    settings = read_monitoring_config(str(f))
    assert (settings.enable, settings.path) == (enable, path)


def test_malformed_or_missing_config_is_an_error(tmp_path):
    f = tmp_path / "monitoring.config"
    f.write_text("prometheus_config { enable: maybe }")
    with pytest.raises(MonitoringConfigError, match="MonitoringConfig"):
        read_monitoring_config(str(f))
    with pytest.raises(MonitoringConfigError, match="Cannot read"):
        read_monitoring_config(str(tmp_path / "missing"))


def test_format_has_type_lines_only_and_counters_without_total():
    metrics = ServingMetrics()
    metrics.bind_configured(lambda name: name == "m")
    metrics.finish(metrics.start("rest", "predict", "m", tf_api="predict"), None)
    text = render(metrics.registry, metrics.exposition_names).decode()
    assert "# HELP" not in text
    assert "_created" not in text
    assert ":tensorflow:serving:request_count_total" not in text
    assert '\n:tensorflow:serving:request_count{model_name="m",status="OK"} 1\n' in text
    assert "# TYPE :tensorflow:serving:request_count counter" in text
    # A counter declared with `_total` keeps it (TF's request_example_count_total, ours).
    assert "# TYPE :tensorflow:serving:request_example_count_total counter" in text
    assert "# TYPE pyserving_request_errors_total counter" in text
    for line in text.splitlines():
        assert line.startswith("# TYPE ") or re.match(r"^[a-zA-Z_:][a-zA-Z0-9_:]*(\{.*\})? \S+$", line), line


def test_histogram_lines_are_cumulative_buckets_then_sum_and_count():
    registry = CollectorRegistry(auto_describe=False)
    h = Histogram(":x:latency", "h", ["model_name", "API"], buckets=[10, 18, 32.400000000000006],
                  registry=registry)
    h.labels("m", "predict").observe(12)
    h.labels("m", "predict").observe(100)
    lines = render(registry).decode().splitlines()
    assert lines == [
        "# TYPE :x:latency histogram",
        ':x:latency_bucket{model_name="m",API="predict",le="10"} 0',
        ':x:latency_bucket{model_name="m",API="predict",le="18"} 1',
        ':x:latency_bucket{model_name="m",API="predict",le="32.4"} 1',
        ':x:latency_bucket{model_name="m",API="predict",le="+Inf"} 2',
        ':x:latency_sum{model_name="m",API="predict"} 112',
        ':x:latency_count{model_name="m",API="predict"} 2',
    ]


def test_label_values_are_escaped_and_families_sorted():
    registry = CollectorRegistry(auto_describe=False)
    Gauge("b_gauge", "g", ["path"], registry=registry).labels('a"b\\c\nd').set(1.5)
    Counter("a_count", "c", registry=registry).inc()
    text = render(registry).decode()
    assert text.index("# TYPE a_count counter") < text.index("# TYPE b_gauge gauge")
    assert 'b_gauge{path="a\\"b\\\\c\\nd"} 1.5' in text
    (gauge,) = [f for f in text_string_to_metric_families(text) if f.name == "b_gauge"]
    assert gauge.samples[0].labels["path"] == 'a"b\\c\nd'


def test_endpoint_handler_answers_text_plain():
    metrics = ServingMetrics()
    status, headers, body = asyncio.run(PrometheusExporter(metrics.registry, metrics.exposition_names)())
    assert status == 200
    assert dict(headers)[b"content-type"].startswith(b"text/plain")
    assert b"# TYPE :tensorflow:serving:request_count counter" in body
