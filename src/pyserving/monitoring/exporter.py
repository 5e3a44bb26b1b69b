"""The Prometheus endpoint: `--monitoring_config_file` and TF Serving's text exposition.

Configuration is TF Serving's text-format `MonitoringConfig`:
`prometheus_config { enable: true path: "/monitoring/prometheus/metrics" }` (empty path →
that default). Served on the REST port only, exact path match, any HTTP method; without
`enable: true` there is no endpoint (the path is a 404 like any other non-`/v1` path).

Format: prometheus-client holds the metrics (objects, locks, registry), but its own text
writer (`generate_latest`) differs from TF Serving's `util/prometheus_exporter.cc`: it
prints `# HELP` lines, adds `_total` to counters and `_created` series, and writes bucket
bounds as `32.400000000000006`. No prometheus-client option turns all of that off, so
`render` is a small adapter over `registry.collect()` that writes what TF Serving writes:
only `# TYPE` lines; counters under their declared name (no `_total` added, no `_created`);
labels in declaration order; integer values as integers; histograms as cumulative
`_bucket{...,le="..."}` lines (bounds with six significant digits, like absl's `StrCat`,
last `+Inf`), then `_sum` and `_count`; families sorted by name. It is still standard
Prometheus text (`prometheus_client.parser` reads it).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from google.protobuf import text_format

from pyserving.protos.config_protos import MonitoringConfig, parse_text
from pyserving.sources import stores

__all__ = ["DEFAULT_PATH", "PrometheusSettings", "MonitoringConfigError", "read_monitoring_config",
           "render", "PrometheusExporter", "CONTENT_TYPE"]

DEFAULT_PATH = "/monitoring/prometheus/metrics"
CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"


class MonitoringConfigError(Exception):
    """The monitoring config file cannot be read or parsed (a startup error)."""


@dataclass(frozen=True)
class PrometheusSettings:
    enable: bool = False
    path: str = DEFAULT_PATH


def read_monitoring_config(path: str) -> PrometheusSettings:
    """Parse a text-format `MonitoringConfig` file (local or in a model store); raises
    `MonitoringConfigError`."""
    try:
        config = parse_text(MonitoringConfig, stores.read_text(path))
    except (OSError, UnicodeDecodeError) as exc:
        raise MonitoringConfigError(f"Cannot read monitoring config file {path}: {exc}") from None
    except text_format.ParseError as exc:
        raise MonitoringConfigError(
            f"Error parsing text-format tensorflow.serving.MonitoringConfig from {path}: {exc}"
        ) from None
    prometheus = config.prometheus_config
    return PrometheusSettings(enable=prometheus.enable, path=prometheus.path or DEFAULT_PATH)


def _number(value: float) -> str:
    if value != value:
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 2**63:
        return str(int(value))
    return repr(value)


def _bound(value: float) -> str:
    return "+Inf" if math.isinf(value) else format(value, ".6g")


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(labels: Mapping[str, str], le: str | None = None) -> str:
    parts = [f'{k}="{_escape(v)}"' for k, v in labels.items() if k != "le"]
    if le is not None:
        parts.append(f'le="{le}"')
    return "{" + ",".join(parts) + "}" if parts else ""


def _histogram(name: str, samples: Iterable[Any], out: list[str]) -> None:
    # Group the child series (label set without `le`), keeping prometheus-client's order.
    series: dict[tuple[tuple[str, str], ...], dict[str, Any]] = {}
    for s in samples:
        key = tuple((k, v) for k, v in s.labels.items() if k != "le")
        entry = series.setdefault(key, {"buckets": [], "sum": 0.0, "count": 0.0})
        if s.name.endswith("_bucket"):
            entry["buckets"].append((float(s.labels["le"]), s.value))
        elif s.name.endswith("_sum"):
            entry["sum"] = s.value
        elif s.name.endswith("_count"):
            entry["count"] = s.value
    for key, entry in series.items():
        labels = dict(key)
        for bound, count in entry["buckets"]:
            out.append(f"{name}_bucket{_labels(labels, _bound(bound))} {_number(count)}")
        out.append(f"{name}_sum{_labels(labels)} {_number(entry['sum'])}")
        out.append(f"{name}_count{_labels(labels)} {_number(entry['count'])}")


def render(registry: Any, names: Mapping[str, str] | None = None) -> bytes:
    """The registry in TF Serving's text format. `names` maps a prometheus-client family
    name to the exported one (counters declared with `_total`)."""
    names = names or {}
    families = sorted(registry.collect(), key=lambda f: names.get(f.name, f.name))
    out: list[str] = []
    for family in families:
        name = names.get(family.name, family.name)
        kind = family.type
        if kind == "histogram":
            out.append(f"# TYPE {name} histogram")
            _histogram(name, family.samples, out)
        elif kind == "counter":
            out.append(f"# TYPE {name} counter")
            for s in family.samples:
                if s.name == family.name + "_total" or s.name == family.name:
                    out.append(f"{name}{_labels(s.labels)} {_number(s.value)}")
        else:
            out.append(f"# TYPE {name} {kind if kind == 'gauge' else 'untyped'}")
            for s in family.samples:
                if not s.name.endswith("_created"):
                    out.append(f"{s.name}{_labels(s.labels)} {_number(s.value)}")
    out.append("")
    return "\n".join(out).encode()


class PrometheusExporter:
    """The endpoint handler for `RestApp.extra_routes`. Renders on its own thread: a large
    page never holds up the event loop, and a scrape never waits behind model runs in the
    shared worker pool (a saturated server is when its metrics matter most)."""

    def __init__(self, registry: Any, names: Mapping[str, str] | None = None) -> None:
        self._registry = registry
        self._names = dict(names or {})
        self._thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="metrics")

    async def __call__(self) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        loop = asyncio.get_running_loop()
        body = await loop.run_in_executor(self._thread, render, self._registry, self._names)
        return 200, [(b"content-type", CONTENT_TYPE)], body
