"""Test DAGs: DriftSensor (poke and deferrable) driven by run conf, then a retraining stand-in."""

from __future__ import annotations

import datetime

from airflow.sdk import DAG, Asset, Param, task

from airflow_mlops.sensors.drift import DriftSensor

DRIFT_ASSET = Asset("mlops://drift/test-drift")

PARAMS = {
    "model_name": Param(None, type=["null", "string"]),
    "model_version": Param(None, type=["null", "string"]),
    "reference_path": Param(None, type=["null", "string"]),
    "current_path": Param(None, type=["null", "string"]),
    "current_dvc_path": Param(None, type=["null", "string"]),
    "prediction_log_dir": Param(None, type=["null", "string"]),
    "window": Param(3600, type="number"),
    "window_end": Param(None, type=["null", "string"]),
    "columns": Param(None, type=["null", "array"]),
    "pushgateway_conn_id": Param(None, type=["null", "string"]),
    "mlflow_report": Param("on_drift", type="string"),
}

for dag_id, deferrable in (("test_drift_sensor", False), ("test_drift_sensor_deferrable", True)):
    with DAG(
        dag_id,
        schedule=None,
        start_date=datetime.datetime(2024, 1, 1),
        catchup=False,
        render_template_as_native_obj=True,
        params=PARAMS,
    ) as dag:
        sensor = DriftSensor(
            task_id="drift",
            model_name="{{ params.model_name }}",
            model_version="{{ params.model_version }}",
            reference_path="{{ params.reference_path }}",
            current_path="{{ params.current_path }}",
            current_dvc_path="{{ params.current_dvc_path }}",
            prediction_log_dir="{{ params.prediction_log_dir }}",
            window="{{ params.window }}",
            window_end="{{ params.window_end }}",
            columns="{{ params.columns }}",
            pushgateway_conn_id="{{ params.pushgateway_conn_id }}",
            mlflow_report="{{ params.mlflow_report }}",
            poke_interval=1,
            timeout=4,
            soft_fail=True,
            mode="poke",
            deferrable=deferrable,
            outlets=[DRIFT_ASSET],
        )

        @task
        def retrain(summary: dict) -> float:
            """Stands in for retraining: runs only when drift was detected."""
            return summary["share_drifted"]

        retrain(sensor.output)
    globals()[dag_id.replace("-", "_")] = dag
