"""Grafana provisioning and the dashboard: wired to the stack's Prometheus, valid PromQL, complete.

Whether every metric the dashboard names is really exported is checked against a live gateway in
test_metrics_live.py; here the queries are checked offline (``promtool check rules`` parses each one).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.stack.stack_files import (
    DASHBOARD,
    DRIFT_METRICS,
    GATEWAY_METRICS,
    GRAFANA_PROVISIONING,
    PER_REPLICA_GAUGES,
    PROMETHEUS_BUILTIN,
    as_promql,
    compose,
    dashboard,
    dashboard_queries,
    load_yaml,
    metric_names,
    selector_labels,
)


def _panels(dash: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for p in dash["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))
    return out


def _datasource() -> dict[str, Any]:
    (source,) = load_yaml(GRAFANA_PROVISIONING / "datasources" / "prometheus.yml")["datasources"]
    return source


def test_datasource_is_the_stacks_prometheus() -> None:
    source = _datasource()
    assert source["type"] == "prometheus" and source["isDefault"] is True
    assert source["url"] == "http://prometheus:9090"
    assert "prometheus" in compose()["services"]


def test_dashboard_provider_reads_the_mounted_folder() -> None:
    (provider,) = load_yaml(GRAFANA_PROVISIONING / "dashboards" / "mlops.yml")["providers"]
    grafana = compose()["services"]["grafana"]
    mounts = dict(m.split(":")[:2] for m in grafana["volumes"])
    assert mounts["./docker/grafana/dashboards"] == provider["options"]["path"]
    assert mounts["./docker/grafana/provisioning"] == "/etc/grafana/provisioning"
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{provider['options']['path']}/{DASHBOARD.name}"


def test_dashboard_is_valid_json_with_unique_panels() -> None:
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] and dash["title"] and dash["schemaVersion"] >= 36
    panels = _panels(dash)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    cells: dict[tuple[int, int], str] = {}
    for p in panels:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"panels {cells[(x, y)]!r} and {p['title']!r} overlap"
                cells[(x, y)] = p["title"]
        if p["type"] != "row":
            assert p.get("targets") and all(t.get("expr") for t in p["targets"]), p["title"]


def test_every_query_uses_the_provisioned_datasource() -> None:
    uid = _datasource()["uid"]
    dash = dashboard()
    refs = [p["datasource"] for p in _panels(dash) if p["type"] != "row"]
    refs += [t["datasource"] for p in _panels(dash) for t in p.get("targets", [])]
    refs += [a["datasource"] for a in dash["annotations"]["list"]]
    refs += [v["datasource"] for v in dash["templating"]["list"]]
    assert refs and all(r == {"type": "prometheus", "uid": uid} for r in refs), refs


def test_dashboard_shows_what_the_issue_asks() -> None:
    by_title = {p["title"]: p for p in _panels(dashboard())}
    exprs = {title: " ".join(t["expr"] for t in p.get("targets", [])) for title, p in by_title.items()}
    assert "rate(mlops_gateway_requests_total" in exprs["Request rate"]
    assert "histogram_quantile(0.95" in exprs["Latency"]
    assert "mlops_gateway_request_latency_seconds_bucket" in exprs["Latency"]
    # Live quality from the counters of every replica added up, as the gate computes it (live_queries),
    # over the last 15 minutes; one series per model version.
    from airflow_mlops.core.live_queries import counter_query, samples_query, with_selector

    for metric, title in (("accuracy", "Live accuracy"), ("precision", "Live precision"),
                          ("recall", "Live recall"), ("f1", "Live F1")):  # fmt: skip
        (target,) = by_title[title]["targets"]
        assert target["expr"] == with_selector(counter_query(metric, "15m"), 'model=~"$model"'), title
        assert "{{version}}" in target["legendFormat"], title
    samples = next(p for t, p in by_title.items() if t.startswith("Labelled rows"))
    assert samples["targets"][0]["expr"] == with_selector(
        samples_query("15m", fallback=False), 'model=~"$model"'
    )
    # No per-replica window: on two replicas each gauge is half the story.
    for query in dashboard_queries():
        assert not metric_names(query) & PER_REPLICA_GAUGES, query
    # Gauges that every replica reports alike: one series per version, not one per replica.
    assert exprs["Route weights"].startswith("max by (model, version) (mlops_gateway_route_weight")
    assert exprs["Champion version"].startswith("max by (model) (mlops_gateway_champion_version")
    assert "{{feature}}" in by_title["Drift score per feature"]["targets"][0]["legendFormat"]
    assert "mlops_drift_score" in exprs["Drift score per feature"]
    assert "mlops_gateway_champion_version" in exprs["Champion version"]


def test_queries_are_valid_promql(tmp_path: Path) -> None:
    """Each query, with Grafana's variables resolved, parses as PromQL (as a recording rule)."""
    binary = shutil.which("promtool")
    if binary is None:
        pytest.skip("promtool is absent: apt-get install -y prometheus (CI installs it)")
    queries = dashboard_queries()
    rules = [{"record": f"dashboard:query_{i}", "expr": as_promql(q)} for i, q in enumerate(queries)]
    path = tmp_path / "dashboard_queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    proc = subprocess.run([binary, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{len(queries)} rules found" in proc.stdout


def test_queries_name_only_contract_metrics() -> None:
    names = set().union(*(metric_names(q) for q in dashboard_queries()))
    unknown = names - GATEWAY_METRICS - DRIFT_METRICS - PROMETHEUS_BUILTIN
    assert not unknown, f"the dashboard queries metrics nobody exports: {unknown}"
    # Everything the contract offers for people to watch is on the dashboard (the per-replica windows
    # through the counters that add up).
    assert names >= GATEWAY_METRICS - PER_REPLICA_GAUGES - {
        "mlops_gateway_request_latency_seconds_count",
        "mlops_gateway_request_latency_seconds_sum",
    }
    assert names >= DRIFT_METRICS


def test_metric_name_extraction() -> None:
    """The parser the metric checks rely on: names kept, functions, labels and durations left out."""
    q = (
        'histogram_quantile(0.95, sum by (le, model) (rate(a_seconds_bucket{model=~"$model", x="y z"}'
        "[$__rate_interval]))) / on (model) group_left (version) b_total offset 5m"
        " and max_over_time(c:ratio[1h:1m]) > bool 0.5"
    )
    assert metric_names(q) == {"a_seconds_bucket", "b_total", "c:ratio"}
    assert metric_names("label_values(mlops_gateway_requests_total, model)") == {
        "mlops_gateway_requests_total"
    }
    assert selector_labels('x{model=~"$model", version!="3"} + y') == {"x": {"model", "version"}}
