"""The Grafana dashboard is valid JSON, has the panels operators need, and queries only
metrics the server exports (so renaming a metric breaks this test, not the dashboard)."""

from __future__ import annotations

import json
from pathlib import Path

from support import METRIC, exported_series

DASHBOARD = Path(__file__).resolve().parents[3] / "deploy" / "grafana" / "pyserving-dashboard.json"


def test_dashboard_panels_query_exported_metrics():
    dashboard = json.loads(DASHBOARD.read_text())
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    titles = " | ".join(p["title"] for p in panels).lower()
    for needed in ("request rate", "p50 / p99", "errors by code", "in flight", "version states",
                   "load and unload durations", "batch size", "queue depth",
                   "handles in use", "event loop lag", "oldest request"):
        assert needed in titles, needed
    known = exported_series()
    queried = set()
    for panel in panels:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            queried.update(METRIC.findall(target["expr"]))
    assert queried and queried <= known, queried - known
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
