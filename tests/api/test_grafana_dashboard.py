"""docs/grafana-dashboard.json: valid JSON in Grafana's import shape, and every metric its queries read is one
that a real talkies serves at /metrics (a renamed metric would leave a panel silently empty)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from talkies.api.app import create_app
from tests.api.audio_helpers import weightfree_settings
from tests.conftest import REPO_ROOT
from tests.server import asgi_client

pytestmark = pytest.mark.anyio
parser = pytest.importorskip("prometheus_client.parser")

DASHBOARD = REPO_ROOT / "docs" / "grafana-dashboard.json"
METRIC = re.compile(r"\btalkies_[a-z_]+\b")
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "summary": ("_count", "_sum")}


def _queries(dashboard: dict[str, Any]) -> list[str]:
    queries = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        query = variable.get("query")
        queries.append(query["query"] if isinstance(query, dict) else str(query))
    return queries


def test_the_dashboard_is_importable_json() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["title"] == "talkies"
    assert dashboard["__inputs"][0]["pluginId"] == "prometheus"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    graphs = [panel for panel in dashboard["panels"] if panel["type"] != "row"]
    assert graphs
    for panel in graphs:
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}"
        for key in ("h", "w", "x", "y"):
            assert isinstance(panel["gridPos"][key], int)
    titles = " ".join(panel["title"].lower() for panel in graphs)
    for topic in ("requests", "latency", "queue", "loads", "evictions", "memory"):
        assert topic in titles, topic


async def test_every_queried_metric_exists_in_metrics(tmp_path: Path) -> None:
    queries = _queries(json.loads(DASHBOARD.read_text()))
    queried = {name for query in queries for name in METRIC.findall(query)}
    assert len(queried) >= 10
    served: set[str] = set()
    async with asgi_client(create_app(weightfree_settings(tmp_path))) as client:
        assert (await client.post("/api/ps/espeak-ng")).status_code == 200  # the model series have samples
        text = (await client.get("/metrics")).text
    for family in parser.text_string_to_metric_families(text):
        served.add(family.name)
        served.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ()))
        served.update(sample.name for sample in family.samples)
    missing = sorted(queried - served)
    assert missing == [], f"the dashboard queries metrics /metrics does not serve: {missing}"
