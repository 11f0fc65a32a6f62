"""DriftSensor.execute_complete, every branch, through Airflow's own resume path (``resume_execution``):
a skip means only "no drift before the timeout"; errors fail the task, with or without soft_fail.

Real files and the real drift engine; no Airflow run (the context is a plain dict: these branches read
nothing from it)."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
from airflow.sdk.exceptions import (
    AirflowException,
    AirflowFailException,
    AirflowSensorTimeout,
    AirflowSkipException,
    TaskDeferred,
)

from airflow_mlops.sensors.drift import DriftSensor
from airflow_mlops.triggers.drift import DriftTrigger


@pytest.fixture
def data(tmp_path):
    rng = np.random.default_rng(0)
    ref = pd.DataFrame({"a": rng.normal(size=400), "b": rng.normal(size=400)})
    paths = {
        "ref": tmp_path / "ref.parquet",
        "same": tmp_path / "same.parquet",
        "shifted": tmp_path / "s.parquet",
    }
    ref.to_parquet(paths["ref"])
    ref.sample(frac=1.0, random_state=1).to_parquet(paths["same"])
    (ref * 2 + 3).to_parquet(paths["shifted"])
    return {k: str(v) for k, v in paths.items()}


def _sensor(data, current: str = "same", soft_fail: bool = True) -> DriftSensor:
    return DriftSensor(
        task_id="drift", reference_path=data["ref"], current_path=data[current], mlflow_report="never",
        soft_fail=soft_fail, deferrable=True, poke_interval=1, timeout=30,
    )  # fmt: skip


def _resume(sensor: DriftSensor, event, **kwargs):
    return sensor.resume_execution("execute_complete", {"event": event, **kwargs}, {})


@pytest.mark.parametrize(
    ("error_type", "raised"),
    [("input", AirflowFailException), ("service", AirflowException), ("other", AirflowException)],
)
@pytest.mark.parametrize("soft_fail", [True, False])
def test_trigger_errors_fail_even_with_soft_fail(data, error_type, raised, soft_fail):
    event = {"status": "error", "error_type": error_type, "message": "MLflow at http://u:pw@m:5000 is down"}
    with pytest.raises(raised) as info:
        _resume(_sensor(data, soft_fail=soft_fail), event)
    assert not isinstance(info.value, AirflowSkipException)
    assert "pw" not in str(info.value)  # redacted


@pytest.mark.parametrize("event", [None, {"no": "status"}, {"status": "strange"}])
def test_malformed_events_fail(data, event):
    with pytest.raises(AirflowException) as info:
        _resume(_sensor(data), event)
    assert not isinstance(info.value, AirflowSkipException)


def test_timeout_skips_with_soft_fail_and_times_out_without(data):
    event = {"status": "timeout", "state": {}}
    with pytest.raises(AirflowSkipException, match="No drift within"):
        _resume(_sensor(data), event, last_status="no_drift")
    with pytest.raises(AirflowSensorTimeout):
        _resume(_sensor(data, soft_fail=False), event)


def test_new_data_with_drift_succeeds_with_the_summary(data):
    summary = _resume(
        _sensor(data, "shifted"), {"status": "new_data", "state": {}}, end_time=time.time() + 30
    )
    assert summary["drift_detected"] and summary["n_drifted"] == 2


def test_new_data_without_drift_waits_again_with_the_new_state(data):
    with pytest.raises(TaskDeferred) as info:
        _resume(_sensor(data), {"status": "new_data", "state": {}}, end_time=time.time() + 30)
    trigger = info.value.trigger
    assert isinstance(trigger, DriftTrigger)
    assert trigger.last_state and trigger.last_state["rows"] == 400
    assert info.value.kwargs["last_status"] == "no_drift"


def test_new_data_without_drift_after_the_end_skips(data):
    with pytest.raises(AirflowSkipException, match="No drift within"):
        _resume(_sensor(data), {"status": "new_data", "state": {}}, end_time=time.time() - 1)


def test_a_bad_input_found_on_resume_fails_even_with_soft_fail(data, tmp_path):
    sensor = _sensor(data)
    sensor.reference_path = str(tmp_path / "missing.json")
    with pytest.raises(AirflowFailException, match="does not exist") as info:
        _resume(sensor, {"status": "new_data", "state": {}}, end_time=time.time() + 30)
    assert not isinstance(info.value, AirflowSkipException)


def test_trigger_crash_fails_and_deferral_timeout_skips(data):
    from airflow.sdk.bases.operator import TRIGGER_FAIL_REPR, TriggerFailureReason

    sensor = _sensor(data)
    with pytest.raises(AirflowException) as info:
        sensor.resume_execution(TRIGGER_FAIL_REPR, {"error": TriggerFailureReason.TRIGGER_FAILURE}, {})
    assert not isinstance(info.value, AirflowSkipException)
    with pytest.raises(AirflowSkipException):
        sensor.resume_execution(TRIGGER_FAIL_REPR, {"error": TriggerFailureReason.TRIGGER_TIMEOUT}, {})


def test_poke_errors_fail_even_with_soft_fail(data, tmp_path):
    sensor = DriftSensor(task_id="drift", reference_path=str(tmp_path / "missing.json"),
                         current_path=data["same"], soft_fail=True, deferrable=False, poke_interval=1, timeout=5)  # fmt: skip
    with pytest.raises(AirflowFailException, match="does not exist") as info:
        sensor.execute({})
    assert not isinstance(info.value, AirflowSkipException)


def test_an_unknown_report_setting_fails_before_any_deferral(data):
    sensor = _sensor(data)
    sensor.mlflow_report = "sometimes"
    with pytest.raises(AirflowFailException, match="mlflow_report='sometimes' is unknown"):
        sensor.execute({})
