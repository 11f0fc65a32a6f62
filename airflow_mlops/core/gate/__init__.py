"""The validation gate: a threshold spec, evidence sources, and the verdict (no Airflow import)."""

from __future__ import annotations

from airflow_mlops.core.gate.evaluate import (
    ERROR,
    FAILED,
    INCONCLUSIVE,
    PASSED,
    PENDING,
    SKIPPED,
    Row,
    Verdict,
    evaluate,
    is_analysed,
    next_measurement,
    record_verdict,
    run_analysis,
    run_gate,
)
from airflow_mlops.core.gate.spec import GateSpec, Rule, SourceSpec, load_spec

__all__ = [
    "ERROR",
    "FAILED",
    "INCONCLUSIVE",
    "PASSED",
    "PENDING",
    "SKIPPED",
    "GateSpec",
    "Row",
    "Rule",
    "SourceSpec",
    "Verdict",
    "evaluate",
    "is_analysed",
    "load_spec",
    "next_measurement",
    "record_verdict",
    "run_analysis",
    "run_gate",
]
