"""Reports: JSON, HTML with a histogram per feature, readable table, Prometheus gauges."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from airflow_mlops.core.drift import detect_drift
from airflow_mlops.core.drift.export import drift_registry
from airflow_mlops.core.drift.report import report_html, report_json, summary_table


def _report():
    rng = np.random.default_rng(0)
    ref = pd.DataFrame({"x": rng.normal(size=3000), "c": rng.choice(list("ab"), 3000)})
    cur = pd.DataFrame({"x": rng.normal(2, 1, 2000), "c": rng.choice(list("abz"), 2000)})
    return detect_drift(ref, cur)


def test_json_and_html_reports() -> None:
    report = _report()
    data = json.loads(report_json(report, {"model": "bc"}))
    assert data["context"] == {"model": "bc"} and data["drift_detected"] is True
    x = data["columns"][0]
    assert len(x["hist"]["edges"]) == 31 and len(x["hist"]["current"]) == 30
    page = report_html(report, "Drift <bc>")
    assert page.count("<svg") == 2 and "Drift &lt;bc&gt;" in page and "Dataset drift detected" in page


def test_summary_table_is_readable() -> None:
    table = summary_table(_report().summary())
    lines = table.splitlines()
    assert lines[0].split() == ["column", "test", "score", "threshold", "drifted"]
    assert "x" in lines[2] and "wasserstein" in lines[2] and "YES" in lines[2]
    assert lines[-1].endswith("DATASET DRIFT")


def test_gauges() -> None:
    from prometheus_client import generate_latest

    text = generate_latest(drift_registry(_report().summary(), "bc")).decode()
    assert 'mlops_drift_score{feature="x",model="bc",test="wasserstein"}' in text
    assert 'mlops_drift_share{model="bc"} 1.0' in text
    assert 'mlops_drift_detected{model="bc"} 1.0' in text
