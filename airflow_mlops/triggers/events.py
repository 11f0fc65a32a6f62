"""Trigger events shared by the provider's triggers."""

from __future__ import annotations

from airflow.triggers.base import TriggerEvent

from airflow_mlops.core.errors import MlopsInputError, MlopsServiceError
from airflow_mlops.core.redact import redact


def error_event(error: Exception) -> TriggerEvent:
    """The event that reports a failed evaluation to the deferred task, which fails with its message.

    The message is redacted here: events are stored in Airflow's database.
    ``error_type`` tells the task's ``execute_complete`` whether the input was bad (``input``), a
    service could not be used (``service``), or something else went wrong (``other``).
    """
    if isinstance(error, MlopsInputError):
        return TriggerEvent({"status": "error", "error_type": "input", "message": redact(error)})
    if isinstance(error, MlopsServiceError):
        return TriggerEvent({"status": "error", "error_type": "service", "message": redact(error)})
    return TriggerEvent(
        {"status": "error", "error_type": "other", "message": f"{type(error).__name__}: {redact(error)}"}
    )
