"""Prometheus config and alert rules: ``promtool check`` passes, and the alerts fire when they should.

``promtool test rules`` evaluates the real alerts.yml over synthetic series (a drift verdict, live F1
per version, scrape health), so each rule's expression, ``for`` duration and labels are exercised.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.stack.stack_files import ALERT_RULES, PROMETHEUS_CONFIG, alert_rules, load_yaml

EXPECTED_ALERTS = {
    "MlopsDriftDetected",
    "MlopsDriftShareHigh",
    "MlopsLiveF1BelowFloor",
    "MlopsLiveF1Drop",
    "MlopsGatewayDown",
    "MlopsGatewayErrors",
}


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.skip("promtool is absent: apt-get install -y prometheus (CI installs it)")
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=60)


def test_promtool_check_config() -> None:
    proc = _promtool("check", "config", str(PROMETHEUS_CONFIG))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 rule files found" in proc.stdout + proc.stderr


def test_promtool_check_rules() -> None:
    proc = _promtool("check", "rules", str(ALERT_RULES))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{len(EXPECTED_ALERTS)} rules found" in proc.stdout + proc.stderr


def test_config_scrapes_gateway_and_pushgateway_with_the_rules() -> None:
    config = load_yaml(PROMETHEUS_CONFIG)
    assert config["rule_files"] == [ALERT_RULES.name]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["mlops-gateway"]["static_configs"][0]["targets"] == ["gateway:8080"]
    # Without honor_labels the pushed `job` label would be overwritten by the scrape's own.
    assert jobs["pushgateway"]["honor_labels"] is True
    assert jobs["pushgateway"]["static_configs"][0]["targets"] == ["pushgateway:9091"]


def test_every_rule_is_an_alert_with_severity_and_summary() -> None:
    rules = alert_rules()
    assert {r["alert"] for r in rules} == EXPECTED_ALERTS
    for rule in rules:
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]


def _alert(
    name: str, at: str, labels: dict[str, str] | None = None, summary: str = "", description: str = ""
):
    """A promtool alert test case: no alert at ``at``, or one with these labels and rendered annotations."""
    expected = []
    if labels is not None:
        expected.append(
            {"exp_labels": labels, "exp_annotations": {"summary": summary, "description": description}}
        )
    return {"eval_time": at, "alertname": name, "exp_alerts": expected}


def _rules_test() -> dict[str, Any]:
    v3 = 'model="bc",version="3"'
    v4 = 'model="bc",version="4"'
    v5 = 'model="bc",version="5"'
    series = [
        # Drift found at the third check.
        ('mlops_drift_detected{job="mlops_drift",model="bc"}', "0 0 1 1 1"),
        ('mlops_drift_share{job="mlops_drift",model="bc"}', "0.1 0.1 0.6 0.6 0.6"),
        # v3 serves everything; its live F1 falls from 0.95 to 0.7 at minute 10.
        (f"mlops_gateway_live_f1{{{v3}}}", "0.95x9 0.7x30"),
        (f"mlops_gateway_live_samples{{{v3}}}", "500x40"),
        (f"mlops_gateway_route_weight{{{v3}}}", "1x40"),
        # v4: a poor version with too few labels to judge; v5: poor, but no longer routed.
        (f"mlops_gateway_live_f1{{{v4}}}", "0.5x40"),
        (f"mlops_gateway_live_samples{{{v4}}}", "10x40"),
        (f"mlops_gateway_route_weight{{{v4}}}", "0.1x40"),
        (f"mlops_gateway_live_f1{{{v5}}}", "0.5x40"),
        (f"mlops_gateway_live_samples{{{v5}}}", "500x40"),
        (f"mlops_gateway_route_weight{{{v5}}}", "0x40"),
        # The gateway stops answering scrapes at minute 20; errors reach 10% of v3's requests at minute 1.
        ('up{job="mlops-gateway",instance="gateway:8080"}', "1x19 0x20"),
        (f'mlops_gateway_requests_total{{{v3},status="200"}}', "0+90x40"),
        (f'mlops_gateway_requests_total{{{v3},status="500"}}', "0+10x40"),
    ]
    f1_v3 = {"model": "bc", "version": "3"}
    return {
        "rule_files": [str(ALERT_RULES)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [{"series": s, "values": v} for s, v in series],
                "alert_rule_test": [
                    _alert("MlopsDriftDetected", "1m"),
                    _alert(
                        "MlopsDriftDetected",
                        "3m",
                        {"severity": "warning", "model": "bc"},
                        "Data drift detected for model bc",
                        "The last drift check of bc found the live inputs differ from the training reference. "
                        "The drift monitor DAG starts retraining; see the drift report in MLflow.",
                    ),
                    _alert("MlopsDriftShareHigh", "1m"),
                    _alert(
                        "MlopsDriftShareHigh",
                        "2m",
                        {"severity": "warning", "model": "bc"},
                        "Half or more of the features of bc drifted",
                        "Drift share 60% at the last check.",
                    ),
                    # Pending for 5 minutes first, and never for v4 (10 samples) nor v5 (weight 0).
                    _alert("MlopsLiveF1BelowFloor", "8m"),
                    _alert("MlopsLiveF1BelowFloor", "12m"),
                    _alert(
                        "MlopsLiveF1BelowFloor",
                        "16m",
                        {"severity": "critical", **f1_v3},
                        "Live F1 of bc v3 is 0.700",
                        "F1 on labelled feedback has been below 0.85 for 5 minutes.",
                    ),
                    _alert("MlopsLiveF1Drop", "12m"),
                    _alert(
                        "MlopsLiveF1Drop",
                        "16m",
                        {"severity": "warning", **f1_v3},
                        "Live F1 of bc v3 dropped",
                        "F1 is 0.250 below its best of the last hour.",
                    ),
                    _alert("MlopsGatewayDown", "19m"),
                    _alert(
                        "MlopsGatewayDown",
                        "23m",
                        {"severity": "critical", "job": "mlops-gateway", "instance": "gateway:8080"},
                        "The model gateway does not answer Prometheus",
                        "gateway:8080 has been unreachable for 2 minutes.",
                    ),
                    _alert("MlopsGatewayErrors", "3m"),
                    _alert(
                        "MlopsGatewayErrors",
                        "12m",
                        {"severity": "warning", **f1_v3},
                        "10% of requests to bc v3 fail",
                        "More than 5% of the gateway's answers were not 2xx over 5 minutes.",
                    ),
                ],
            }
        ],
    }


def test_alerts_fire_on_synthetic_series(tmp_path: Path) -> None:
    """Each alert fires on the series that should trigger it, after its ``for``, and not on the others;
    its annotations render with the values (promtool compares labels and annotations exactly)."""
    spec = _rules_test()
    test_file = tmp_path / "alerts_test.yml"
    test_file.write_text(yaml.safe_dump(spec, sort_keys=False))
    proc = _promtool("test", "rules", str(test_file))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    tested = {case["alertname"] for case in spec["tests"][0]["alert_rule_test"]}
    assert tested == EXPECTED_ALERTS


def test_alert_rule_tests_can_fail(tmp_path: Path) -> None:
    """The synthetic test is a real check: an alert expected where it cannot fire makes promtool fail."""
    spec = _rules_test()
    spec["tests"][0]["alert_rule_test"].append(
        _alert(
            "MlopsLiveF1BelowFloor", "16m", {"severity": "critical", "model": "bc", "version": "4"}, "x", "y"
        )
    )
    test_file = tmp_path / "alerts_test.yml"
    test_file.write_text(yaml.safe_dump(spec, sort_keys=False))
    proc = _promtool("test", "rules", str(test_file))
    assert proc.returncode != 0
    assert "MlopsLiveF1BelowFloor" in proc.stdout + proc.stderr
