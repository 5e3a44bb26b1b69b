"""One metrics page for every worker: the supervisor sums what the workers count.

Each worker answers `dump(registry)`: its families as plain tuples. `merge` sums counters,
histograms and gauges over the workers, sample by sample (same name, same labels), so TF
Serving's metrics and ours keep their names and mean the same as with one process. A few
gauges only make sense per process (requests in flight, handles held, the oldest request,
event-loop lag): they get a `worker` label instead. The version state gauge is the
supervisor's own (the merged state), not a sum.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from prometheus_client import Metric

__all__ = ["PER_WORKER", "FROM_SUPERVISOR", "Family", "dump", "merge"]

# (name, type, documentation, [(sample name, labels, value)])
Family = tuple[str, str, str, list[tuple[str, dict[str, str], float]]]

PER_WORKER = frozenset({
    "pyserving_in_flight_requests",
    "pyserving_servable_handles_in_use",
    "pyserving_oldest_request_age_seconds",
    "pyserving_event_loop_lag_seconds",
})
FROM_SUPERVISOR = frozenset({"pyserving_model_version_state"})
_CUMULATIVE = ("counter", "histogram", "summary")


def dump(registry: Any) -> list[Family]:
    """A registry's families as plain data (what crosses the worker channel)."""
    families: list[Family] = []
    for family in registry.collect():
        samples = [(s.name, dict(s.labels), float(s.value)) for s in family.samples
                   if not s.name.endswith("_created")]
        families.append((family.name, family.type, family.documentation, samples))
    return families


def merge(dumps: Mapping[int, list[Family]], own: Iterable[Family] = (),
          retired: Iterable[list[Family]] = ()) -> list[Metric]:
    """Every worker's families (worker index -> dump) as one set of families, plus the
    supervisor's `own` (which replace the workers' families of the same name) and the
    counters and histograms of `retired` workers (a replaced worker's requests still count)."""
    own = list(own)
    owned = {f[0] for f in own} | FROM_SUPERVISOR
    merged: dict[str, Metric] = {}
    sums: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    every = [(index, dumps[index]) for index in sorted(dumps)]
    every += [(-1, [f for f in families if f[1] in _CUMULATIVE and f[0] not in PER_WORKER])
              for families in retired]
    for index, families in every:
        for name, kind, doc, samples in families:
            if name in owned:
                continue
            if name not in merged:
                merged[name] = Metric(name, doc, kind)
                sums[name] = {}
            table = sums[name]
            for sample_name, labels, value in samples:
                if name in PER_WORKER:
                    labels = {**labels, "worker": str(index)}
                key = (sample_name, tuple(labels.items()))
                table[key] = table.get(key, 0.0) + value
    for name, table in sums.items():
        for (sample_name, label_items), value in table.items():
            merged[name].add_sample(sample_name, dict(label_items), value)
    for name, kind, doc, samples in own:
        metric = Metric(name, doc, kind)
        for sample_name, labels, value in samples:
            metric.add_sample(sample_name, labels, value)
        merged[name] = metric
    return list(merged.values())
