"""BufferedHistogram: the same samples as prometheus-client's Histogram, observations
bucketed in bulk, nothing lost across threads or flushes."""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Histogram

from pyserving.monitoring import buffered
from pyserving.monitoring.buffered import BufferedHistogram
from pyserving.monitoring.metrics import REQUEST_LATENCY_BUCKETS_US


def samples(registry: CollectorRegistry, name: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in registry.collect():
        if family.name != name:
            continue
        assert family.type == "histogram"
        for s in family.samples:
            if not s.name.endswith("_created"):
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def observations() -> list[float]:
    rng = np.random.default_rng(3)
    values = list(10.0 ** rng.uniform(0, 9, 5000))
    values += list(REQUEST_LATENCY_BUCKETS_US)  # exactly on a bound: that bucket (le)
    values += [math.nextafter(b, math.inf) for b in REQUEST_LATENCY_BUCKETS_US]  # just above
    values += [0.0, -5.0, 1e300, 7]
    return values


@pytest.mark.parametrize("labelled", [True, False])
def test_samples_equal_prometheus_clients_histogram(labelled):
    ours, theirs = CollectorRegistry(auto_describe=False), CollectorRegistry(auto_describe=False)
    labels = ["model", "api"] if labelled else []
    a = BufferedHistogram("lat", "Latency.", labels, REQUEST_LATENCY_BUCKETS_US, ours)
    b = Histogram("lat", "Latency.", labels, registry=theirs, buckets=REQUEST_LATENCY_BUCKETS_US)
    assert samples(ours, "lat") == samples(theirs, "lat")  # before any observation too
    for i, v in enumerate(observations()):
        if labelled:
            key = ("m", "predict") if i % 3 else ("other", "classify")
            a.labels(*key).observe(v)
            b.labels(*key).observe(v)
        else:
            a.observe(v)
            b.observe(v)
    got, want = samples(ours, "lat"), samples(theirs, "lat")
    assert got.keys() == want.keys()
    for key, value in want.items():
        if key[0] == "lat_sum":
            assert got[key] == pytest.approx(value, rel=1e-12)
        else:
            assert got[key] == value, key
    assert len(got) == (2 if labelled else 1) * (len(REQUEST_LATENCY_BUCKETS_US) + 3)


def test_pending_values_are_seen_by_every_reader_and_memory_stays_bounded(monkeypatch):
    monkeypatch.setattr(buffered, "FLUSH_AT", 100)
    registry = CollectorRegistry(auto_describe=False)
    child = BufferedHistogram("h", "h", ["m"], [1.0, 2.0], registry).labels("x")
    child.observe(1.5)
    assert registry.get_sample_value("h_count", {"m": "x"}) == 1  # no flush needed by the reader
    assert registry.get_sample_value("h_bucket", {"m": "x", "le": "2.0"}) == 1
    assert registry.get_sample_value("h_bucket", {"m": "x", "le": "1.0"}) == 0
    for _ in range(1000):
        child.observe(0.5)
        assert len(child._pending) < 100  # noqa: SLF001 - the bound itself is under test
    assert registry.get_sample_value("h_count", {"m": "x"}) == 1001
    assert registry.get_sample_value("h_sum", {"m": "x"}) == 501.5


def test_nan_lands_in_no_bucket_as_in_prometheus_client():
    ours, theirs = CollectorRegistry(auto_describe=False), CollectorRegistry(auto_describe=False)
    BufferedHistogram("n", "n", [], [1.0], ours).observe(math.nan)
    Histogram("n", "n", registry=theirs, buckets=[1.0]).observe(math.nan)
    got, want = samples(ours, "n"), samples(theirs, "n")
    assert got[("n_count", ())] == want[("n_count", ())] == 0
    assert math.isnan(got[("n_sum", ())]) and math.isnan(want[("n_sum", ())])


def test_a_bad_value_fails_where_it_is_observed():
    registry = CollectorRegistry(auto_describe=False)
    h = BufferedHistogram("b", "b", ["m"], [1.0], registry)
    with pytest.raises((TypeError, ValueError)):
        h.labels("x").observe("fast")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        h.labels("x", "y")
    with pytest.raises(ValueError):
        h.observe(1.0)  # labelled: needs labels()
    assert registry.get_sample_value("b_count", {"m": "x"}) == 0


def test_a_name_cannot_be_registered_twice():
    registry = CollectorRegistry(auto_describe=False)
    BufferedHistogram("dup", "d", [], [1.0], registry)
    with pytest.raises(ValueError):
        BufferedHistogram("dup", "d", [], [1.0], registry)


def test_no_observation_is_lost_between_threads_and_concurrent_scrapes(monkeypatch):
    monkeypatch.setattr(buffered, "FLUSH_AT", 64)  # many flushes race with the appends
    registry = CollectorRegistry(auto_describe=False)
    hist = BufferedHistogram("c", "c", ["m"], [10.0, 100.0], registry)
    threads, per_thread = 4, 20_000
    done = threading.Event()

    def observe(k: int) -> None:
        child = hist.labels("x")
        for i in range(per_thread):
            child.observe(float(i % 200))

    def scrape() -> None:
        while not done.is_set():
            registry.get_sample_value("c_count", {"m": "x"})

    scraper = threading.Thread(target=scrape)
    scraper.start()
    workers = [threading.Thread(target=observe, args=(k,)) for k in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    done.set()
    scraper.join()
    assert registry.get_sample_value("c_count", {"m": "x"}) == threads * per_thread
    # i % 200: 0..10 -> le 10 (11 values), 11..100 -> le 100 (90), the rest above
    assert registry.get_sample_value("c_bucket", {"m": "x", "le": "10.0"}) == threads * per_thread * 11 / 200
    assert registry.get_sample_value("c_bucket", {"m": "x", "le": "100.0"}) == threads * per_thread * 101 / 200
    assert registry.get_sample_value("c_sum", {"m": "x"}) == threads * per_thread / 200 * sum(range(200))


def test_a_value_appended_while_a_flush_runs_is_kept_for_the_next(monkeypatch):
    registry = CollectorRegistry(auto_describe=False)
    child = BufferedHistogram("r", "r", ["m"], [1.0], registry).labels("x")
    child.observe(0.5)
    real_array = np.array

    def array_and_another_thread_appends(values, **kwargs):  # what a racing observe does
        monkeypatch.setattr(buffered.np, "array", real_array)
        child.observe(2.0)
        return real_array(values, **kwargs)

    monkeypatch.setattr(buffered.np, "array", array_and_another_thread_appends)
    child.flush()
    assert child._pending == [2.0]  # noqa: SLF001
    assert registry.get_sample_value("r_count", {"m": "x"}) == 2
    assert registry.get_sample_value("r_sum", {"m": "x"}) == 2.5
