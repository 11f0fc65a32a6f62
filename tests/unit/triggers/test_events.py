"""The error events every trigger reports to its deferred task."""

from __future__ import annotations

import pytest

from airflow_mlops.core.errors import MlopsInputError, MlopsServiceError
from airflow_mlops.triggers.events import error_event


@pytest.mark.parametrize(
    ("error", "kind", "message"),
    [
        (MlopsInputError("bad spec"), "input", "bad spec"),
        (MlopsServiceError("MLflow down"), "service", "MLflow down"),
        (KeyError("x"), "other", "KeyError: 'x'"),
    ],
)
def test_error_kinds(error, kind, message):
    assert error_event(error).payload == {"status": "error", "error_type": kind, "message": message}


def test_messages_are_redacted():
    event = error_event(MlopsServiceError("MLflow at http://user:hunter2@mlflow:5000 is unreachable"))
    assert "hunter2" not in event.payload["message"] and "mlflow:5000" in event.payload["message"]
