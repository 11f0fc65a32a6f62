"""Gate evaluation on given evidence: bounds, directions, change rules, caps, samples, the table."""

from __future__ import annotations

import json
import math

import pytest

from airflow_mlops.core.errors import MlopsInputError
from airflow_mlops.core.gate import FAILED, PASSED, PENDING, SKIPPED, Verdict, evaluate, load_spec
from airflow_mlops.core.gate.evaluate import improvement, verdict_tags
from airflow_mlops.core.gate.evidence import Evidence
from airflow_mlops.core.gate.spec import Rule


def ev(samples: int | None = None, **values: float | None) -> Evidence:
    return Evidence(values=dict(values), samples={k: samples for k in values})


def gate(rules, source="mlflow", **kw):
    return load_spec({"name": "g", "rules": rules, "source": source, **kw})


def status_of(verdict: Verdict, check: str) -> str:
    return next(r.status for r in verdict.rows if r.check == check)


def test_bounds_pass_and_fail():
    spec = gate([{"metric": "f1", "min": 0.9, "max": 0.99}])
    assert evaluate(spec, "m", "2", ev(f1=0.95), None, None).status == PASSED
    low = evaluate(spec, "m", "2", ev(f1=0.85), None, None)
    assert low.status == FAILED and status_of(low, "min") == FAILED and status_of(low, "max") == PASSED


def test_lower_is_better_metric_uses_the_right_direction():
    spec = gate([{"metric": "rmse", "max": 10, "min_change": 0.5}])
    better = evaluate(spec, "m", "2", ev(rmse=3.0), ev(rmse=4.0), "1")
    assert better.status == PASSED
    row = next(r for r in better.rows if r.check == "min_change")
    assert row.observed == pytest.approx(1.0) and "lower is better" in row.reason
    worse = evaluate(spec, "m", "2", ev(rmse=4.2), ev(rmse=4.0), "1")
    assert worse.status == FAILED


def test_tolerated_regression():
    spec = gate([{"metric": "f1", "min_change": -0.01}])
    assert evaluate(spec, "m", "2", ev(f1=0.945), ev(f1=0.95), "1").status == PASSED
    # Exactly at the tolerance passes despite float noise.
    assert evaluate(spec, "m", "2", ev(f1=0.94), ev(f1=0.95), "1").status == PASSED
    failed = evaluate(spec, "m", "2", ev(f1=0.93), ev(f1=0.95), "1")
    assert failed.status == FAILED
    assert "at most 0.01 regression allowed" in failed.failures()[0].reason


def test_suspicious_gain_cap_fails():
    spec = gate([{"metric": "accuracy", "min_change": 0, "max_change": 0.1, "max_relative_change": 0.8}])
    verdict = evaluate(spec, "m", "2", ev(accuracy=0.99), ev(accuracy=0.6), "1")
    assert verdict.status == FAILED
    assert {r.check for r in verdict.failures()} == {"max_change"}
    assert "suspiciously large" in verdict.failures()[0].reason


def test_relative_change_uses_the_magnitude_of_the_baseline():
    rule = Rule("r2", min_relative_change=0.1)
    assert improvement(rule, -0.45, -0.5) == pytest.approx((0.05, 0.1))
    assert improvement(Rule("rmse", min_change=0), 2.0, 4.0) == pytest.approx((2.0, 0.5))
    assert improvement(rule, 0.1, 0.0) == (0.1, math.inf)
    spec = gate([{"metric": "r2", "min_relative_change": 0.05}])
    assert evaluate(spec, "m", "2", ev(r2=-0.45), ev(r2=-0.5), "1").status == PASSED


def test_first_model_skips_change_rules_but_keeps_bounds():
    spec = gate([{"metric": "f1", "min": 0.9, "min_change": 0.0}])
    verdict = evaluate(spec, "m", "1", ev(f1=0.95), None, None)
    assert verdict.status == PASSED
    assert status_of(verdict, "change") == SKIPPED
    assert "no baseline" in next(r.reason for r in verdict.rows if r.check == "change")
    assert evaluate(spec, "m", "1", ev(f1=0.5), None, None).status == FAILED


def test_offline_min_samples_is_a_decided_failure_and_live_waits():
    offline = gate([{"metric": "f1", "min": 0.5, "min_samples": 100}])
    assert evaluate(offline, "m", "2", ev(50, f1=0.9), None, None).status == FAILED
    assert evaluate(offline, "m", "2", ev(None, f1=0.9), None, None).status == FAILED
    assert evaluate(offline, "m", "2", ev(150, f1=0.9), None, None).status == PASSED
    live = gate(
        [{"metric": "f1", "min": 0.5, "min_samples": 100}], source={"kind": "metrics_url", "url": "http://x"}
    )
    # Too few samples is never a pass, even with a good value, and never a final failure with a bad one.
    assert evaluate(live, "m", "2", ev(50, f1=0.9), None, None).status == PENDING
    assert evaluate(live, "m", "2", ev(50, f1=0.1), None, None).status == PENDING
    assert evaluate(live, "m", "2", ev(150, f1=0.1), None, None).status == FAILED


def test_live_missing_value_or_baseline_samples_is_pending():
    live = gate([{"metric": "f1", "min_change": -0.05, "min_samples": 10}], source="prometheus")
    assert evaluate(live, "m", "2", ev(20, f1=None), ev(20, f1=0.9), "1").status == PENDING
    assert evaluate(live, "m", "2", ev(20, f1=0.9), ev(5, f1=0.9), "1").status == PENDING
    assert evaluate(live, "m", "2", ev(20, f1=0.9), ev(20, f1=None), "1").status == PENDING
    assert evaluate(live, "m", "2", ev(20, f1=0.88), ev(20, f1=0.9), "1").status == PASSED
    # A live gauge is NaN until it has data.
    assert evaluate(live, "m", "2", ev(0, f1=math.nan), ev(20, f1=0.9), "1").status == PENDING


def test_a_failure_wins_over_pending_rules():
    live = gate(
        [
            {"metric": "f1", "min": 0.8, "min_samples": 10},
            {"metric": "accuracy", "min": 0.8, "min_samples": 10},
        ],
        source="prometheus",
    )
    candidate = Evidence(values={"f1": 0.5, "accuracy": 0.9}, samples={"f1": 20, "accuracy": 3})
    assert evaluate(live, "m", "2", candidate, None, None).status == FAILED


def test_nan_evidence_is_an_input_error():
    spec = gate([{"metric": "f1", "min": 0.5, "min_change": 0}])
    with pytest.raises(MlopsInputError, match="candidate's f1 is NaN"):
        evaluate(spec, "m", "2", ev(f1=math.nan), None, None)
    with pytest.raises(MlopsInputError, match="baseline's"):
        evaluate(spec, "m", "2", ev(f1=0.9), ev(f1=math.nan), "1")
    live = gate([{"metric": "f1", "min": 0.5, "min_samples": 5}], source="prometheus")
    with pytest.raises(MlopsInputError, match="NaN"):
        evaluate(live, "m", "2", ev(50, f1=math.nan), None, None)


def test_table_dict_round_trip_and_tags():
    spec = gate(
        [
            {"metric": "f1", "min": 0.9, "min_change": -0.01, "max_relative_change": 0.5},
            {"metric": "rmse", "max": 3},
        ]
    )
    verdict = evaluate(spec, "bc", "4", ev(f1=0.95, rmse=2.5), ev(f1=0.0, rmse=2.0), "3")
    table = verdict.table()
    assert "Gate 'g': bc v4 vs champion = v3" in table
    assert "max_relative_change" in table and "FAILED" in table
    for header in ("metric", "check", "candidate", "baseline", "threshold", "status", "reason"):
        assert header in table.splitlines()[2]
    data = json.loads(json.dumps(verdict.to_dict(), allow_nan=False))
    again = Verdict.from_dict(data)
    assert again.status == verdict.status and len(again.rows) == len(verdict.rows)
    tags = verdict_tags(verdict)
    assert tags["mlops.gate.g"] == FAILED
    details = json.loads(tags["mlops.gate.g.details"])
    assert details["baseline"] == {"alias": "champion", "version": "3"}
    assert len(tags["mlops.gate.g.details"]) <= 5000


@pytest.mark.parametrize("n_rules", [1, 40, 400])
def test_details_tag_stays_valid_json_under_the_limit(n_rules):
    from airflow_mlops.core.gate.evaluate import details_json

    rules = [
        {"metric": f"custom_metric_with_a_long_name_{i:04d}", "greater_is_better": True, "min": 0.5,
         "min_change": -0.1, "max_change": 0.3}
        for i in range(n_rules)
    ]  # fmt: skip
    spec = gate(rules)
    cand = ev(**{r["metric"]: 0.4 if i % 7 == 0 else 0.9 for i, r in enumerate(rules)})
    base = ev(**{r["metric"]: 0.8 for r in rules})
    verdict = evaluate(spec, "m", "2", cand, base, "1")
    text = verdict_tags(verdict)["mlops.gate.g.details"]
    assert len(text) <= 5000
    details = json.loads(text)  # never cut mid-string
    assert details["status"] == FAILED == verdict.status
    if n_rules == 1:
        assert "truncated" not in details and details["rows"][0]["reason"]
    else:
        assert details["truncated"] and details["n_rows"] == len(verdict.rows)
        assert details["counts"][FAILED] == len(verdict.failures())
    # A tiny limit still gives valid JSON with the status.
    assert json.loads(details_json(verdict, limit=120))["status"] == FAILED


def test_no_baseline_title_says_why():
    spec = gate([{"metric": "f1", "min": 0.5}], baseline="none")
    verdict = evaluate(spec, "m", "2", ev(f1=0.9), None, None)
    verdict.baseline_note = "no baseline (baseline: none)"
    assert "first model" not in verdict.table() and "baseline: none" in verdict.table()
