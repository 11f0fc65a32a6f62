"""DriftSensor end to end with dag.test(): a real MLflow server (reference profile of a real trained
model), a real Pushgateway, a real git+DVC repo, files and a prediction log on disk. Nothing is mocked."""

from __future__ import annotations

import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import conn_env, run_dag


def _ti(dr, task_id: str):
    return next(t for t in dr.get_task_instances() if t.task_id == task_id)


@pytest.fixture(scope="module")
def bc() -> pd.DataFrame:
    from sklearn.datasets import load_breast_cancer

    return load_breast_cancer(as_frame=True).frame


def _shifted(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.copy()
    for c in [c for c in frame.columns if c != "target"][:20]:
        out[c] = frame[c] * 1.6 + frame[c].std()
    return out


@pytest.fixture
def trained(mlflow_server: str, model_name: str, bc: pd.DataFrame) -> str:
    """A real model version (logged with its reference profile) of ``model_name``; returns the version."""
    from airflow_mlops.core.model_logging import DatasetInfo, ensure_experiment, log_model_run
    from airflow_mlops.core.tracking import MlflowTarget
    from airflow_mlops.core.training import Candidate, train_model

    outcome = train_model(
        bc, "target", [Candidate("sklearn.linear_model.LogisticRegression", {"max_iter": 300})]
    )
    with MlflowTarget(mlflow_server).activate():
        eid = ensure_experiment("drift-tests")
        info = log_model_run(
            outcome, model_name=model_name, experiment_id=eid, dataset=DatasetInfo(bc, "sklearn")
        )
    return info["version"]


def test_drift_from_mlflow_profile_pushes_gauges_logs_report_and_emits_asset(
    airflow_db, mlflow_conn, mlflow_client, trained, model_name, bc, tmp_path, pushgateway, monkeypatch
):
    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session

    # The training run carries the profile.
    mv = mlflow_client.get_model_version(model_name, trained)
    arts = [a.path for a in mlflow_client.list_artifacts(mv.run_id, "drift")]
    assert "drift/reference_profile.json" in arts
    monkeypatch.setenv(*conn_env("pushgateway_test", {"conn_type": "pushgateway", "host": pushgateway}))
    current = tmp_path / "current.parquet"
    _shifted(bc).drop(columns="target").to_parquet(current)
    dr = run_dag(
        "test_drift_sensor", model_name=model_name, model_version=trained, current_path=str(current),
        pushgateway_conn_id="pushgateway_test",
    )  # fmt: skip
    assert dr.state == "success"
    summary = _ti(dr, "drift").xcom_pull(task_ids="drift")
    assert summary["drift_detected"] and summary["n_columns"] == 30 and summary["n_drifted"] >= 15
    assert summary["reference"] == f"models:/{model_name}/{trained}"
    # 455 training rows: a profile that small is stored whole, so the exact KS test applies.
    assert summary["columns"]["mean radius"]["test"] == "ks"
    assert _ti(dr, "retrain").state == "success"
    # Gauges on the real Pushgateway.
    with urllib.request.urlopen(f"{pushgateway}/metrics", timeout=5) as r:
        text = r.read().decode()
    assert f'mlops_drift_detected{{instance="",job="mlops_drift",model="{model_name}"}} 1' in text
    assert f'feature="mean radius",instance="",job="mlops_drift",model="{model_name}",test=' in text
    # The report (JSON + HTML) is logged to MLflow.
    run = mlflow_client.get_run(summary["report_run_id"])
    assert run.data.tags["mlops.model_name"] == model_name and run.data.tags["mlops.drift_detected"] == "true"
    names = {a.path for a in mlflow_client.list_artifacts(run.info.run_id, "drift")}
    assert names == {"drift/report.json", "drift/report.html"}
    # The Asset event carries the summary.
    with create_session() as session:
        events = [
            e
            for e in session.query(AssetEvent).all()
            if (e.extra or {}).get("reference") == summary["reference"]
        ]
    assert len(events) == 1 and events[0].extra["drift_detected"] is True


def test_no_drift_times_out_and_skips_retraining(airflow_db, bc, tmp_path):
    ref, cur = tmp_path / "ref.csv", tmp_path / "cur.csv"
    bc.drop(columns="target").to_csv(ref, index=False)
    bc.drop(columns="target").sample(frac=1.0, random_state=1).to_csv(cur, index=False)
    dr = run_dag("test_drift_sensor", reference_path=str(ref), current_path=str(cur))
    assert _ti(dr, "drift").state == "skipped"
    assert _ti(dr, "retrain").state == "skipped"


def test_deferrable_drift_by_alias_and_timeout(
    airflow_db, mlflow_conn, mlflow_client, trained, model_name, bc, tmp_path
):
    mlflow_client.set_registered_model_alias(model_name, "champion", trained)
    current = tmp_path / "current.csv"
    _shifted(bc).drop(columns="target").to_csv(current, index=False)
    dr = run_dag(
        "test_drift_sensor_deferrable",
        model_name=model_name,
        current_path=str(current),
        mlflow_report="never",
    )
    assert dr.state == "success"
    summary = _ti(dr, "drift").xcom_pull(task_ids="drift")
    assert (
        summary["drift_detected"] and summary["model_version"] == trained and "report_run_id" not in summary
    )
    calm = tmp_path / "calm.csv"
    bc.drop(columns="target").to_csv(calm, index=False)
    dr = run_dag("test_drift_sensor_deferrable", model_name=model_name, current_path=str(calm))
    assert _ti(dr, "drift").state == "skipped" and _ti(dr, "retrain").state == "skipped"


def _write_log(log_dir: Path, model: str, frame: pd.DataFrame, end: datetime) -> None:
    from airflow_mlops.core import prediction_log as plog

    ts = pd.date_range(end=end - timedelta(seconds=1), periods=len(frame), freq="s", tz="UTC")
    table = frame.assign(**{plog.PREDICTION: 0, plog.MODEL_NAME: model, plog.MODEL_VERSION: "1",
                            plog.REQUEST_ID: [f"r{i}" for i in range(len(frame))]})  # fmt: skip
    table[plog.TIMESTAMP] = ts.astype("datetime64[us, UTC]")
    for day, part in table.groupby(table[plog.TIMESTAMP].dt.date):
        folder = log_dir / model / f"date={day.isoformat()}"
        folder.mkdir(parents=True, exist_ok=True)
        part.to_parquet(folder / "part-1-abcdef12.parquet", index=False)


def test_prediction_log_window(airflow_db, bc, tmp_path):
    ref = tmp_path / "ref.parquet"
    bc.drop(columns="target").to_parquet(ref)
    end = datetime(2026, 5, 1, 12, 0, tzinfo=timezone.utc)
    _write_log(tmp_path / "log", "bc-log", _shifted(bc).drop(columns="target"), end)
    dr = run_dag("test_drift_sensor", model_name="bc-log", reference_path=str(ref),
                 prediction_log_dir=str(tmp_path / "log"), window=3600, window_end=end.isoformat(), mlflow_report="never")  # fmt: skip
    assert dr.state == "success"
    summary = _ti(dr, "drift").xcom_pull(task_ids="drift")
    assert summary["n_current"] == len(bc) and summary["drift_detected"]
    assert summary["schema"]["extra"] == []  # meta columns dropped
    # A window with nothing logged keeps the sensor waiting, then skips.
    dr = run_dag("test_drift_sensor", model_name="bc-log", reference_path=str(ref),
                 prediction_log_dir=str(tmp_path / "log"), window=60, window_end=(end - timedelta(days=3)).isoformat())  # fmt: skip
    assert _ti(dr, "drift").state == "skipped"


def test_current_from_dvc(airflow_db, dvc_repo, bc, tmp_path):
    ref = tmp_path / "ref.csv"
    _shifted(bc).to_csv(ref, index=False)
    dr = run_dag(
        "test_drift_sensor",
        reference_path=str(ref),
        current_dvc_path=dvc_repo["data_path"],
        mlflow_report="never",
    )
    assert dr.state == "success"
    summary = _ti(dr, "drift").xcom_pull(task_ids="drift")
    assert summary["drift_detected"] and summary["current"].startswith(f"dvc:{dvc_repo['data_path']}@")


def test_bad_input_fails_with_a_clear_message(airflow_db, bc, tmp_path):
    from airflow_mlops.core.drift.evaluate import evaluate_drift
    from airflow_mlops.core.errors import MlopsInputError

    ref, cur = tmp_path / "ref.csv", tmp_path / "cur.csv"
    bc.to_csv(ref, index=False)
    bc.drop(columns=["target", "mean radius"]).to_csv(cur, index=False)
    dr = run_dag("test_drift_sensor", reference_path=str(ref), current_path=str(cur))
    assert _ti(dr, "drift").state == "failed"
    spec = {"reference": {"path": str(ref)}, "current": {"path": str(cur)}, "mlflow_report": "never"}
    with pytest.raises(MlopsInputError, match=r"missing columns: \['mean radius', 'target'\]"):
        evaluate_drift(spec)


@pytest.mark.parametrize("dag_id", ["test_drift_sensor", "test_drift_sensor_deferrable"])
def test_errors_fail_the_task_even_with_soft_fail(airflow_db, bc, tmp_path, monkeypatch, dag_id):
    """soft_fail=True: a skip means "no drift"; a bad profile or an unreachable MLflow fails the task."""
    import time

    bad, cur = tmp_path / "profile.json", tmp_path / "cur.csv"
    bad.write_text('{"columns": "not a profile"')
    bc.drop(columns="target").to_csv(cur, index=False)
    dr = run_dag(dag_id, reference_path=str(bad), current_path=str(cur))
    assert _ti(dr, "drift").state == "failed" and _ti(dr, "retrain").state == "upstream_failed"
    monkeypatch.setenv(*conn_env("mlflow_default", {"conn_type": "mlflow", "host": "http://127.0.0.1:9"}))
    started = time.monotonic()
    dr = run_dag(dag_id, model_name="bc", current_path=str(cur))
    assert _ti(dr, "drift").state == "failed" and _ti(dr, "retrain").state == "upstream_failed"
    assert time.monotonic() - started < 60
