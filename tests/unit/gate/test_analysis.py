"""Analysis semantics (Argo Rollouts' AnalysisTemplate) on scripted evidence: every setting, NaN and empty
results, source errors, and the order in which outcomes win.

Each case scripts what the source answers at each measurement (evidence, or a source error) and drives the
real :func:`airflow_mlops.core.gate.evaluate.analysis_step` on a virtual clock; the real Prometheus and
MLflow versions of the source errors are in tests/integration/gate/test_gate_analysis.py."""

from __future__ import annotations

import json
import math

import pytest

from airflow_mlops.core.errors import MlopsInputError, MlopsServiceError
from airflow_mlops.core.gate import (
    ERROR,
    FAILED,
    INCONCLUSIVE,
    PASSED,
    PENDING,
    Verdict,
    evaluate,
    load_spec,
)
from airflow_mlops.core.gate.analysis import Analysis
from airflow_mlops.core.gate.evaluate import analysis_step, next_measurement, verdict_tags
from airflow_mlops.core.gate.evidence import Evidence
from airflow_mlops.core.promql import PromQLQueryError

DOWN = MlopsServiceError("Prometheus at http://127.0.0.1:9 cannot be reached (connection refused)")
BAD_QUERY = PromQLQueryError("Prometheus rejected the query 'x{': parse error (bad_data). Fix the PromQL.")


def gate(rule: dict, source: str = "prometheus", *more: dict) -> object:
    return load_spec({"name": "a", "source": source, "baseline": "none", "rules": [rule, *more]})


def ev(f1: float | None, samples: int | None = 100, **other: float | None) -> Evidence:
    values = {"f1": f1, **other}
    return Evidence(values=values, samples={k: samples for k in values})


def drive(spec, script: list, start: float = 1000.0, max_steps: int = 50) -> tuple[Verdict, list[float]]:
    """Run the analysis to its end: at each step jump the clock to the next due measurement and answer
    with the next scripted item (Evidence, or an exception the source raises). Returns the last verdict and
    the times measurements were taken."""
    answers = list(script)
    taken: list[float] = []

    def measure(due):
        taken.append(now)
        item = answers.pop(0)
        if isinstance(item, Exception):
            raise item
        return evaluate(due, "m", "2", item, None, None)

    state, now = None, start
    verdict = analysis_step(spec, "m", "2", measure, state=state, now=now)
    for _ in range(max_steps):
        if verdict.decided:
            return verdict, taken
        due = next_measurement(spec, verdict)
        assert due is not None, verdict.table()
        now = due
        verdict = analysis_step(spec, "m", "2", measure, state=verdict.analysis, now=now)
    raise AssertionError(f"no decision after {max_steps} steps:\n{verdict.table()}")


def tally(verdict: Verdict, metric: str = "f1") -> dict:
    return verdict.analysis["rules"][metric]


GOOD, BAD = ev(0.95), ev(0.5)


# (id, rule settings, script, outcome, measurements taken): the analysis test table of the report.
CASES = [
    ("count: all good passes after count", {"count": 3, "interval": 60}, [GOOD] * 3, PASSED, 3),
    ("failure_limit 0 (default): first failure fails", {"count": 3, "interval": 60}, [GOOD, BAD], FAILED, 2),
    ("failure_limit 1: one failure tolerated", {"count": 3, "interval": 60, "failure_limit": 1},
     [BAD, GOOD, GOOD], PASSED, 3),
    ("failure_limit 1: second failure fails", {"count": 4, "interval": 60, "failure_limit": 1},
     [BAD, GOOD, BAD], FAILED, 3),
    ("consecutive_success_limit: passes early", {"count": 10, "interval": 60, "consecutive_success_limit": 2,
     "failure_limit": 3}, [BAD, GOOD, GOOD], PASSED, 3),
    ("consecutive_success_limit never reached: inconclusive", {"count": 3, "interval": 60,
     "consecutive_success_limit": 2, "failure_limit": 3}, [GOOD, BAD, GOOD], INCONCLUSIVE, 3),
    ("failure_limit -1 + success limit never reached: failed", {"count": 3, "interval": 60,
     "consecutive_success_limit": 2, "failure_limit": -1}, [GOOD, BAD, GOOD], FAILED, 3),
    ("interval only + success limit: ends on the streak", {"interval": 30, "consecutive_success_limit": 3,
     "failure_limit": -1}, [BAD, GOOD, BAD, GOOD, GOOD, GOOD], PASSED, 6),
    ("between success and failure condition: inconclusive", {"fail_below": 0.8}, [ev(0.85)],
     INCONCLUSIVE, 1),
    ("failure condition holds: failed", {"fail_below": 0.8}, [ev(0.7)], FAILED, 1),
    ("inconclusive_limit 1 tolerates one", {"fail_below": 0.8, "count": 3, "interval": 60,
     "inconclusive_limit": 1}, [ev(0.85), GOOD, GOOD], PASSED, 3),
    ("inconclusive_limit 1: second inconclusive pauses", {"fail_below": 0.8, "count": 3, "interval": 60,
     "inconclusive_limit": 1}, [ev(0.85), GOOD, ev(0.82)], INCONCLUSIVE, 3),
    ("NaN result: inconclusive", {"count": 2, "interval": 60}, [ev(math.nan)], INCONCLUSIVE, 1),
    ("empty result (no series): inconclusive", {"count": 2, "interval": 60}, [ev(None)], INCONCLUSIVE, 1),
    ("too few samples: inconclusive, never failed", {"count": 2, "interval": 60, "min_samples": 50},
     [ev(0.1, samples=5)], INCONCLUSIVE, 1),
    ("empty result tolerated by inconclusive_limit", {"count": 2, "interval": 60, "inconclusive_limit": 1},
     [ev(None), GOOD], PASSED, 2),
    ("Prometheus down 4 times (default limit 4) then good", {"count": 2, "interval": 60},
     [DOWN] * 4 + [GOOD, GOOD], PASSED, 6),
    ("Prometheus down 5 times in a row: error", {"count": 2, "interval": 60}, [DOWN] * 5, ERROR, 5),
    ("consecutive errors reset by a good measurement", {"count": 3, "interval": 60,
     "consecutive_error_limit": 1}, [DOWN, GOOD, DOWN, GOOD, GOOD], PASSED, 5),
    ("consecutive_error_limit 0: first query error is an error", {"count": 2, "interval": 60,
     "consecutive_error_limit": 0}, [BAD_QUERY], ERROR, 1),
    ("query error counts like a dead source", {"count": 1, "consecutive_error_limit": 1},
     [BAD_QUERY, BAD_QUERY], ERROR, 2),
    ("errors do not count toward count", {"count": 2, "interval": 60}, [GOOD, DOWN, GOOD], PASSED, 3),
    ("precedence: failed before inconclusive", {"fail_below": 0.8, "count": 3, "interval": 60,
     "failure_limit": 0, "inconclusive_limit": 0}, [ev(0.7)], FAILED, 1),
    ("precedence: inconclusive before error", {"count": 3, "interval": 60, "consecutive_error_limit": 0},
     [ev(None)], INCONCLUSIVE, 1),
]  # fmt: skip


@pytest.mark.parametrize(("settings", "script", "outcome", "taken"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])  # fmt: skip
def test_analysis_outcomes(settings, script, outcome, taken):
    spec = gate({"metric": "f1", "min": 0.9, **settings})
    verdict, times = drive(spec, script)
    assert verdict.status == outcome, verdict.table()
    assert len(times) == taken, verdict.table()
    t = tally(verdict)
    assert t["count"] + t["error"] == taken


def test_interval_and_initial_delay_schedule_the_measurements():
    spec = gate({"metric": "f1", "min": 0.9, "count": 3, "interval": "2m", "initial_delay": "30s"})
    verdict, times = drive(spec, [GOOD] * 3, start=1000.0)
    assert verdict.status == PASSED
    assert times == [1030.0, 1150.0, 1270.0]
    # An error without an interval is retried after Argo's 10 s.
    spec = gate({"metric": "f1", "min": 0.9})
    verdict, times = drive(spec, [DOWN, GOOD], start=0.0)
    assert verdict.status == PASSED and times == [0.0, 10.0]


def test_nothing_is_measured_before_the_initial_delay():
    spec = gate({"metric": "f1", "min": 0.9, "initial_delay": 120})

    def measure(due):
        raise AssertionError("measured during the initial delay")

    verdict = analysis_step(spec, "m", "2", measure, now=0.0)
    assert verdict.status == PENDING and next_measurement(spec, verdict) == 120.0


def test_a_failing_rule_ends_the_gate_and_stops_the_others():
    """Argo terminates the run when one metric fails: the worst completed phase is the gate's."""
    spec = gate({"metric": "f1", "min": 0.9, "count": 5, "interval": 60},
                "prometheus", {"metric": "accuracy", "min": 0.9, "count": 5, "interval": 60, "fail_below": 0.5})  # fmt: skip
    verdict, times = drive(spec, [ev(0.95, accuracy=0.7), ev(0.95, accuracy=0.95), ev(0.5, accuracy=0.95)])
    assert verdict.status == INCONCLUSIVE  # accuracy was inconclusive at the first measurement
    assert tally(verdict, "accuracy")["phase"] == INCONCLUSIVE and len(times) == 1
    verdict, _ = drive(spec, [ev(0.5, accuracy=0.7)])
    assert verdict.status == FAILED  # failed is worse than inconclusive
    assert tally(verdict)["phase"] == FAILED and tally(verdict, "accuracy")["phase"] == INCONCLUSIVE


def test_rules_without_analysis_keep_their_meaning_in_an_analysed_gate():
    """A plain rule waits for thin live evidence (not counted) and fails on its first failure."""
    spec = gate({"metric": "f1", "min": 0.9, "count": 2, "interval": 60},
                "prometheus", {"metric": "accuracy", "min": 0.8, "min_samples": 50})  # fmt: skip
    script = [ev(0.95, accuracy=0.9, samples=5), ev(0.95, accuracy=0.9, samples=80), ev(0.95, accuracy=0.9)]
    verdict, times = drive(spec, script, start=0.0)
    assert verdict.status == PASSED and tally(verdict, "accuracy")["count"] == 1
    assert times == [
        0.0,
        10.0,
        60.0,
    ]  # the waiting rule is looked at again 10 s later, the other on its interval
    verdict, _ = drive(spec, [ev(0.95, accuracy=0.5, samples=80)])
    assert verdict.status == FAILED


def test_a_gate_without_analysis_is_unchanged():
    spec = gate({"metric": "f1", "min": 0.9})
    assert evaluate(spec, "m", "2", ev(0.95), None, None).status == PASSED
    with pytest.raises(MlopsInputError, match="NaN"):
        evaluate(load_spec({"name": "a", "rules": [{"metric": "f1", "min": 0.9}]}), "m", "2", ev(math.nan),
                 None, None)  # fmt: skip


def test_history_is_kept_bounded_printed_and_tagged():
    spec = gate({"metric": "f1", "min": 0.9, "count": 15, "interval": 60, "failure_limit": 20})
    verdict, _ = drive(spec, [GOOD, BAD] * 7 + [GOOD])
    assert verdict.status == PASSED
    t = tally(verdict)
    assert (t["count"], t["successful"], t["failed"]) == (15, 8, 7)
    assert len(t["measurements"]) == 10  # the last 10 are kept; the counters keep counting
    table = verdict.table()
    assert "Analysis -> SUCCESSFUL" in table and table.count("+") >= 10
    history = verdict.history_table().splitlines()
    assert history[4].split()[:2] == ["f1", "6"]  # numbered from the first kept measurement
    details = json.loads(verdict_tags(verdict)["mlops.gate.a.details"])
    assert details["analysis"]["rules"]["f1"]["failed"] == 7
    assert len(verdict_tags(verdict)["mlops.gate.a.details"]) <= 5000
    # The verdict (with its history) round-trips through JSON, as XCom and trigger events carry it.
    again = Verdict.from_dict(json.loads(json.dumps(verdict.to_dict(), allow_nan=False)))
    assert again.analysis == verdict.analysis and again.status == PASSED


def test_many_rules_still_fit_the_details_tag():
    rules = [{"metric": f"custom_{i:03d}", "greater_is_better": True, "min": 0.5, "count": 10, "interval": 60,
              "failure_limit": 10} for i in range(40)]  # fmt: skip
    spec = load_spec({"name": "a", "source": "mlflow", "baseline": "none", "rules": rules})
    good = Evidence(values={r["metric"]: 0.9 for r in rules}, samples={})
    verdict, _ = drive(spec, [good] * 10)
    text = verdict_tags(verdict)["mlops.gate.a.details"]
    assert len(text) <= 5000 and json.loads(text)["status"] == PASSED


def test_analysis_state_round_trips_and_ignores_rules_the_spec_lost():
    spec = gate({"metric": "f1", "min": 0.9, "count": 3, "interval": 60})
    verdict, _ = drive(spec, [GOOD] * 3)
    again = Analysis.from_dict(json.loads(json.dumps(verdict.analysis)), spec)
    assert again.to_dict() == verdict.analysis


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"count": 3}, "needs an interval"),
        ({"interval": 60}, "could never pass"),
        ({"count": 0}, ">= 1"),
        ({"failure_limit": -2, "count": 1}, ">= -1"),
        ({"failure_limit": -1}, "only consecutive_success_limit"),
        ({"interval": "5 minutes", "count": 2}, "not a duration"),
        ({"interval": 0, "count": 2}, "above 0"),
        ({"interval": "2d", "count": 2}, "not a duration"),
        ({"consecutive_error_limit": 1.5}, "whole number"),
        ({"fail_below": 0.95}, "both pass and fail"),
        ({"count": 2, "interval": 1, "consecutive_success_limit": 3}, "never be reached"),
    ],
)
def test_bad_analysis_settings_name_the_fix(settings, message):
    with pytest.raises(MlopsInputError, match=message):
        gate({"metric": "f1", "min": 0.9, **settings})


def test_analysis_on_a_holdout_is_refused_with_the_fix():
    """A holdout measures the same file every time, and an analysed gate waits in the triggerer, where a
    holdout's model loads (process-wide MLflow settings) must never run."""
    from airflow_mlops.core.gate import load_spec

    source = {"kind": "holdout", "path": "holdout.csv", "target": "y"}
    rules = {"f1": {"min": 0.9, "count": 3, "interval": 60}}
    with pytest.raises(MlopsInputError, match="same value at every measurement.*live source"):
        load_spec({"name": "g", "source": source, "rules": rules})
    assert load_spec({"name": "g", "source": source, "rules": {"f1": {"min": 0.9}}}).rules[0].metric == "f1"


def test_durations_and_round_trip():
    spec = gate({"metric": "f1", "min": 0.9, "interval": "1m30s", "count": 2, "initial_delay": "500ms"})
    rule = spec.rules[0]
    assert (rule.interval, rule.initial_delay) == (90.0, 0.5)
    assert load_spec(spec.to_dict()) == spec
