"""ReleaseApprovalOperator's pure parts: the gate outcome it routes on, the question's body, its form
and options. The question answered through the REST API of a real deployment, and the ledger entry, are in
tests/deployment/test_release_events.py."""

from __future__ import annotations

import pytest

from airflow_mlops.operators.approval import (
    KEEP,
    PROMOTE,
    ROLL_BACK,
    ReleaseApprovalOperator,
    gate_outcome,
    live_metrics_lines,
    render_body,
)

VERDICT = {
    "gate": "online", "model_name": "m", "version": "2", "source": "metrics_url", "baseline_alias": "champion",
    "baseline_version": "1", "status": "inconclusive",
    "rows": [{"metric": "f1", "check": "min", "candidate": 0.91234, "baseline": 0.9, "observed": 0.91234,
              "threshold": 0.85, "status": "passed", "reason": "0.912 >= 0.85"},
             {"metric": "accuracy", "check": "min_samples", "candidate": None, "baseline": None, "observed": 12.0,
              "threshold": 40.0, "status": "inconclusive", "reason": "12 | 40 labelled rows"}],
    "analysis": {"phase": "inconclusive", "rules": {"f1": {"measurements": [
        {"at": "00:01", "phase": "successful", "value": 0.91, "baseline": 0.9, "samples": 50, "message": ""}]}}},
}  # fmt: skip


@pytest.mark.parametrize(
    ("outcome", "verdict", "expected"),
    [
        ("passed", None, "passed"),
        ("inconclusive", None, "inconclusive"),
        ("timeout", {"status": "pending"}, "inconclusive"),  # not enough evidence either way: ask
        ("failed", None, "failed"),
        ("error", None, "failed"),
        (None, {"status": "passed"}, "passed"),  # a gate without the outcome key
        (None, None, "failed"),  # no verdict at all: the gate errored before one
    ],
)
def test_gate_outcome(outcome, verdict, expected):
    assert gate_outcome(outcome, verdict) == expected


def test_the_body_shows_why_the_gate_tables_the_analysis_live_metrics_and_drift():
    page = "\n".join([
        "# HELP mlops_gateway_live_f1 Live f1.",
        'mlops_gateway_live_f1{model="m",version="2"} 0.91',
        'mlops_gateway_live_f1{model="other",version="1"} 0.5',
        'mlops_gateway_route_weight{model="m",version="2"} 0.3',
        'mlops_gateway_requests_total{model="m",version="2",status="ok"} 10.0',
    ])  # fmt: skip
    live = live_metrics_lines(page, "m")
    assert live == [
        'mlops_gateway_live_f1{model="m",version="2"} 0.91',
        'mlops_gateway_route_weight{model="m",version="2"} 0.3',
    ]
    drift = {
        "drift_share": 0.6,
        "n_drifted": 18.0,
        "drift_detected": True,
        "run_id": "abc",
        "at": "2026-12-02T00:00:00+00:00",
    }
    body = render_body("m", "2", "inconclusive", [VERDICT], live, drift)
    assert "**inconclusive**" in body and "v2 vs champion = v1" in body
    assert "| f1 | min | 0.9123 | 0.9 | 0.9123 | 0.85 | PASSED | 0.912 >= 0.85 |" in body
    assert "12 \\| 40 labelled rows" in body  # a pipe in a reason does not break the table
    assert "| f1 | 00:01 | successful | 0.91 | 0.9 | 50 |" in body  # the measurement history
    assert 'mlops_gateway_live_f1{model="m",version="2"} 0.91' in body and "other" not in body
    assert "drift detected: share of drifted columns 0.6, 18 columns" in body and "`abc`" in body
    missing = render_body(
        "m", "2", "passed", [], "live metrics unavailable (refused)", "no drift check recorded yet"
    )
    assert "_No gate verdict in XCom._" in missing and "_live metrics unavailable (refused)_" in missing


def test_options_branches_and_form():
    op = ReleaseApprovalOperator(task_id="approve", model_name="m", version="2", params={"x": 1})
    assert op.options == [PROMOTE, KEEP, ROLL_BACK]
    assert op.options_mapping == {PROMOTE: "promote", KEEP: "keep_canary", ROLL_BACK: "rollback"}
    assert op.defaults == [ROLL_BACK] and op.trigger_rule == "all_done" and op.multiple is False
    assert "comment" in op.serialized_params
    with pytest.raises(ValueError, match="ask_on"):
        ReleaseApprovalOperator(task_id="a", model_name="m", version="2", ask_on=["maybe"])


@pytest.mark.parametrize(
    ("conf", "ran"),
    [
        ({"outcome": "passed"}, "promote"),
        ({"outcome": "failed"}, "rollback"),
        ({"outcome": "passed", "deployed": False}, None),  # nothing deployed: every branch skipped
    ],
)
def test_a_decided_gate_branches_without_asking(airflow_db, conf, ran):
    from tests.conftest import run_dag

    dr = run_dag("test_release_approval_auto", **conf)
    states = {ti.task_id: ti.state for ti in dr.get_task_instances()}
    branches = {t: states[t] for t in ("promote", "keep_canary", "rollback")}
    assert branches == {t: "success" if t == ran else "skipped" for t in branches}, states
    assert states["approve_release"] == ("skipped" if ran is None else "success")
