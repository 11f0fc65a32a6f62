"""Two releases of one model, for the releases view's tier test (tests/deployment/test_releases_view.py,
which copies this file into its deployment's DAG folder and runs it with ``dag.test()``): v1 trained,
gated and deployed as ``@champion``; v2 trained, gated against it and held as a 30% canary; then a drift
check of shifted data against the champion, its report logged to MLflow.

Settings from the environment: ``MLOPS_MODEL_NAME``, ``MLOPS_UI_TRAIN`` (training CSV),
``MLOPS_UI_CURRENT`` (the shifted CSV), ``MLOPS_GATEWAY_PORT``, ``MLOPS_PREDICTION_LOG_DIR``.
"""

from __future__ import annotations

import datetime
import os

from airflow.sdk import DAG

from airflow_mlops.operators.deploy import DeployOperator
from airflow_mlops.operators.train import TrainOperator
from airflow_mlops.sensors.drift import DriftSensor
from airflow_mlops.sensors.validation_gate import ValidationGateSensor

MODEL = os.environ.get("MLOPS_MODEL_NAME", "releases_view")
GATE = {
    "name": "offline",
    "source": {"kind": "mlflow"},
    "rules": [
        {"metric": "f1", "min": 0.8, "min_change": -0.05},
        {"metric": "roc_auc", "min": 0.9},
    ],
}
GATEWAY = {
    "backend": "local",
    "port": int(os.environ.get("MLOPS_GATEWAY_PORT", "8766")),
    "log_dir": os.environ.get("MLOPS_PREDICTION_LOG_DIR"),
    "deferrable": False,
}


def _version(task_id: str) -> str:
    return "{{ ti.xcom_pull(task_ids='" + task_id + "')['version'] }}"


def _train(task_id: str, c: float) -> TrainOperator:
    return TrainOperator(
        task_id=task_id, registered_model_name=MODEL, data=os.environ.get("MLOPS_UI_TRAIN"), target="target",
        estimator="sklearn.linear_model.LogisticRegression", estimator_params={"max_iter": 1000, "C": c},
    )  # fmt: skip


def _gate(task_id: str, train: str) -> ValidationGateSensor:
    return ValidationGateSensor(
        task_id=task_id, spec=GATE, model_name=MODEL, version=_version(train), deferrable=False,
        poke_interval=1, timeout=60,
    )  # fmt: skip


with DAG(
    "mlops_releases_view",
    schedule=None,
    start_date=datetime.datetime(2024, 1, 1),
    catchup=False,
    tags=["mlops", "test"],
):
    v1 = _train("train_v1", 1.0)
    deploy_v1 = DeployOperator(
        task_id="deploy_v1", model_name=MODEL, version=_version("train_v1"), strategy="replace", **GATEWAY
    )
    v2 = _train("train_v2", 0.2)
    canary_v2 = DeployOperator(
        task_id="canary_v2", model_name=MODEL, version=_version("train_v2"), strategy="canary",
        canary_steps=[0.3], step_seconds=1, promote=False, **GATEWAY,
    )  # fmt: skip
    drift = DriftSensor(
        task_id="drift", model_name=MODEL, model_alias="champion", current_path=os.environ.get("MLOPS_UI_CURRENT"),
        mlflow_report="always", deferrable=False, poke_interval=1, timeout=60,
    )  # fmt: skip
    (
        v1
        >> _gate("gate_v1", "train_v1")
        >> deploy_v1
        >> v2
        >> _gate("gate_v2", "train_v2")
        >> canary_v2
        >> drift
    )
