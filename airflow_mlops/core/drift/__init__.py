"""Drift detection: Evidently 0.7's statistics and verdicts, computed fast from reference profiles."""

from __future__ import annotations

from airflow_mlops.core.drift.engine import (
    ColumnResult,
    DriftConfig,
    DriftReport,
    EmptyCurrentDataError,
    detect_drift,
)
from airflow_mlops.core.drift.profile import PROFILE_ARTIFACT, build_profile, dump_profile, load_profile

__all__ = [
    "PROFILE_ARTIFACT",
    "ColumnResult",
    "DriftConfig",
    "DriftReport",
    "EmptyCurrentDataError",
    "build_profile",
    "detect_drift",
    "dump_profile",
    "load_profile",
]
