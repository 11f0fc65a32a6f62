"""ValidationGateSensor.execute_complete, every branch, through Airflow's resume path: a skip means only
"gate failed" or "timed out"; errors fail the task with or without soft_fail.

The verdicts are recorded in a real local MLflow store (SQLite); the task instance is a small recorder of
``xcom_push`` (no Airflow run: the branches read nothing else from it)."""

from __future__ import annotations

import pytest
from airflow.sdk.exceptions import (
    AirflowException,
    AirflowFailException,
    AirflowSensorTimeout,
    AirflowSkipException,
)

from airflow_mlops.core.gate import Verdict
from airflow_mlops.sensors.validation_gate import ValidationGateSensor
from tests.conftest import conn_env

SPEC = {"name": "unit", "rules": [{"metric": "f1", "min": 0.5}]}


class _TI:
    def __init__(self) -> None:
        self.pushed: dict = {}

    def xcom_push(self, key: str, value: object) -> None:
        self.pushed[key] = value


@pytest.fixture
def store(tmp_path, monkeypatch):
    """A local MLflow store with model ``m`` version 1, as ``mlflow_default``."""
    from airflow_mlops.core.tracking import MlflowTarget

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv(*conn_env("mlflow_default", {"conn_type": "mlflow", "host": uri}))
    client = MlflowTarget(uri, artifact_location=str(tmp_path / "art")).client()
    client.create_registered_model("m")
    client.create_model_version("m", str(tmp_path / "model"))
    return client


def _sensor(soft_fail: bool = True) -> ValidationGateSensor:
    return ValidationGateSensor(task_id="gate", spec=SPEC, model_name="m", version="1", soft_fail=soft_fail,
                                deferrable=True, timeout=30)  # fmt: skip


def _verdict(status: str, version: str = "1") -> dict:
    return Verdict("unit", "m", version, "mlflow", "champion", None, status, []).to_dict()


def _resume(sensor, event, ti=None):
    return sensor.resume_execution("execute_complete", {"event": event}, {"ti": ti or _TI()})


@pytest.mark.parametrize(
    ("error_type", "raised"),
    [("input", AirflowFailException), ("service", AirflowException), ("other", AirflowException)],
)
def test_trigger_errors_fail_even_with_soft_fail(error_type, raised):
    with pytest.raises(raised) as info:
        _resume(_sensor(), {"status": "error", "error_type": error_type, "message": "Prometheus is down"})
    assert not isinstance(info.value, AirflowSkipException) and "Prometheus is down" in str(info.value)


@pytest.mark.parametrize(
    "event",
    [None, {"verdict": {}}, {"status": "odd"}, {"status": "decided"}, {"status": "decided", "verdict": _verdict("pending")},
     {"status": "decided", "verdict": _verdict("passed", version="7")}],
)  # fmt: skip
def test_malformed_or_foreign_events_fail(event):
    with pytest.raises(AirflowException) as info:
        _resume(_sensor(), event)
    assert not isinstance(info.value, AirflowSkipException)


def test_timeout_skips_with_soft_fail_and_times_out_without():
    event = {"status": "timeout", "verdict": _verdict("pending")}
    with pytest.raises(AirflowSkipException, match="timed out"):
        _resume(_sensor(), event)
    with pytest.raises(AirflowSensorTimeout):
        _resume(_sensor(soft_fail=False), event)


def test_passed_is_recorded_and_returned(store):
    ti = _TI()
    result = _resume(_sensor(), {"status": "decided", "verdict": _verdict("passed")}, ti)
    assert result["status"] == "passed" and ti.pushed["verdict"]["status"] == "passed"
    assert store.get_model_version("m", "1").tags["mlops.gate.unit"] == "passed"


def test_failed_skips_with_soft_fail_and_fails_without(store):
    with pytest.raises(AirflowSkipException):
        _resume(_sensor(), {"status": "decided", "verdict": _verdict("failed")})
    with pytest.raises(AirflowFailException) as info:
        _resume(_sensor(soft_fail=False), {"status": "decided", "verdict": _verdict("failed")})
    assert not isinstance(info.value, AirflowSkipException)
    assert store.get_model_version("m", "1").tags["mlops.gate.unit"] == "failed"


def test_an_unreachable_mlflow_while_recording_fails_even_with_soft_fail(monkeypatch):
    monkeypatch.setenv(*conn_env("mlflow_default", {"conn_type": "mlflow", "host": "http://127.0.0.1:9"}))
    with pytest.raises(AirflowException) as info:
        _resume(_sensor(), {"status": "decided", "verdict": _verdict("passed")})
    assert not isinstance(info.value, AirflowSkipException)


def _analysed_sensor(**kw) -> ValidationGateSensor:
    return ValidationGateSensor(task_id="gate", spec=SPEC, model_name="m", version="1", deferrable=True,
                                timeout=30, **kw)  # fmt: skip


@pytest.mark.parametrize("soft_fail", [False, True])
def test_inconclusive_skips_by_default_and_pushes_the_outcome(store, soft_fail):
    ti = _TI()
    with pytest.raises(AirflowSkipException, match="Inconclusive"):
        _resume(
            _analysed_sensor(soft_fail=soft_fail),
            {"status": "decided", "verdict": _verdict("inconclusive")},
            ti,
        )
    assert ti.pushed["outcome"] == "inconclusive" and ti.pushed["verdict"]["status"] == "inconclusive"
    assert store.get_model_version("m", "1").tags["mlops.gate.unit"] == "inconclusive"


def test_inconclusive_can_fail_or_succeed(store):
    with pytest.raises(AirflowFailException) as info:
        _resume(
            _analysed_sensor(on_inconclusive="fail"),
            {"status": "decided", "verdict": _verdict("inconclusive")},
        )
    assert not isinstance(info.value, AirflowSkipException)


def test_inconclusive_succeed_returns_the_verdict(store):
    ti = _TI()
    result = _resume(_analysed_sensor(on_inconclusive="succeed"),
                     {"status": "decided", "verdict": _verdict("inconclusive")}, ti)  # fmt: skip
    assert result["status"] == "inconclusive" and ti.pushed["outcome"] == "inconclusive"


def test_an_analysis_error_fails_even_with_soft_fail_and_is_tagged(store):
    ti = _TI()
    with pytest.raises(AirflowException) as info:
        _resume(_analysed_sensor(soft_fail=True), {"status": "decided", "verdict": _verdict("error")}, ti)
    assert not isinstance(info.value, AirflowSkipException) and "kept failing" in str(info.value)
    assert ti.pushed["outcome"] == "error"
    assert store.get_model_version("m", "1").tags["mlops.gate.unit"] == "error"


def test_timeout_pushes_the_outcome_and_bad_on_inconclusive_is_refused():
    ti = _TI()
    with pytest.raises(AirflowSkipException):
        _resume(_sensor(), {"status": "timeout", "verdict": _verdict("pending")}, ti)
    assert ti.pushed["outcome"] == "timeout" and ti.pushed["verdict"]["status"] == "pending"
    from airflow_mlops.core.errors import MlopsInputError

    with pytest.raises(MlopsInputError, match="on_inconclusive"):
        _analysed_sensor(on_inconclusive="pause")


def test_an_analysed_gate_refuses_reschedule_mode(store):
    spec = {"name": "a", "rules": [{"metric": "f1", "min": 0.5, "count": 2, "interval": 60}]}
    sensor = ValidationGateSensor(task_id="gate", spec=spec, model_name="m", version="1", deferrable=False,
                                  mode="reschedule")  # fmt: skip
    from airflow_mlops.core.errors import MlopsInputError

    with pytest.raises(MlopsInputError, match="reschedule"):
        sensor.check({"ti": _TI()})
