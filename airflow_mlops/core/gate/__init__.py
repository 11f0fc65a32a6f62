"""The validation gate: a threshold spec, evidence sources, and the verdict (no Airflow import)."""

from __future__ import annotations

from airflow_mlops.core.gate.evaluate import (
    FAILED,
    PASSED,
    PENDING,
    SKIPPED,
    Row,
    Verdict,
    evaluate,
    record_verdict,
    run_gate,
)
from airflow_mlops.core.gate.spec import GateSpec, Rule, SourceSpec, load_spec

__all__ = [
    "FAILED",
    "PASSED",
    "PENDING",
    "SKIPPED",
    "GateSpec",
    "Row",
    "Rule",
    "SourceSpec",
    "Verdict",
    "evaluate",
    "load_spec",
    "record_verdict",
    "run_gate",
]
