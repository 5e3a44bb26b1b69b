"""The metrics page of several workers: sums, per-worker gauges, the supervisor's own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from pyserving.monitoring.exporter import render
from pyserving.workers.metrics import dump, merge


def worker_registry(requests: int, in_flight: int, latency: float) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    Counter("request_count", "Requests.", ["model"], registry=registry).labels("m").inc(requests)
    Gauge("pyserving_in_flight_requests", "In flight.", ["model"], registry=registry).labels("m").set(in_flight)
    Gauge("pyserving_model_version_state", "State.", ["model"], registry=registry).labels("m").set(20)
    Histogram("latency", "Latency.", buckets=(1.0, 2.0), registry=registry).observe(latency)
    return registry


def samples(families) -> dict:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples}


def test_counters_and_histograms_are_summed_and_per_worker_gauges_labelled():
    merged = samples(merge({0: dump(worker_registry(3, 1, 0.5)), 1: dump(worker_registry(4, 2, 1.5))}))
    assert merged[("request_count_total", (("model", "m"),))] == 7
    assert merged[("latency_bucket", (("le", "1.0"),))] == 1
    assert merged[("latency_bucket", (("le", "2.0"),))] == 2
    assert merged[("latency_count", ())] == 2 and merged[("latency_sum", ())] == 2.0
    assert merged[("pyserving_in_flight_requests", (("model", "m"), ("worker", "0")))] == 1
    assert merged[("pyserving_in_flight_requests", (("model", "m"), ("worker", "1")))] == 2
    assert not any(name.endswith("_created") for name, _ in merged)


def test_the_version_state_is_the_supervisors_and_its_own_families_are_added():
    own = [("pyserving_model_version_state", "gauge", "State.", [("pyserving_model_version_state", {"model": "m"}, 30.0)]),
           ("pyserving_worker_restarts", "counter", "Restarts.", [("pyserving_worker_restarts_total", {"reason": "exit"}, 1.0)])]
    merged = samples(merge({0: dump(worker_registry(1, 0, 0.5)), 1: dump(worker_registry(1, 0, 0.5))}, own))
    assert merged[("pyserving_model_version_state", (("model", "m"),))] == 30
    assert merged[("pyserving_worker_restarts_total", (("reason", "exit"),))] == 1


def test_a_retired_workers_counts_stay_in_the_sums():
    retired = [dump(worker_registry(5, 9, 0.5))]
    merged = samples(merge({1: dump(worker_registry(2, 0, 0.5))}, retired=retired))
    assert merged[("request_count_total", (("model", "m"),))] == 7
    assert merged[("latency_count", ())] == 2
    # its gauges are gone with it
    assert ("pyserving_in_flight_requests", (("model", "m"), ("worker", "-1"))) not in merged


def test_the_merged_families_render_in_tf_servings_format():
    families = merge({0: dump(worker_registry(3, 1, 0.5)), 1: dump(worker_registry(4, 2, 1.5))})

    class Merged:
        def collect(self):
            return families

    text = render(Merged(), {"request_count": "request_count"}).decode()
    assert 'request_count{model="m"} 7' in text
    assert 'pyserving_in_flight_requests{model="m",worker="1"} 2' in text
    assert 'latency_bucket{le="2"} 2' in text
