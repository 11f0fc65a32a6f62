"""Extra links from a task to its MLflow run and to the model version it made, gated or deployed."""

from __future__ import annotations

from airflow_mlops.links.base import XComLink

XCOM_RUN_URL = "mlflow_run_url"
XCOM_MODEL_VERSION_URL = "mlflow_model_version_url"


class MlflowRunLink(XComLink):
    """Opens the MLflow run that the task logged (its URL is pushed to XCom by the task)."""

    name = "MLflow run"
    url_key = XCOM_RUN_URL


class MlflowModelVersionLink(XComLink):
    """Opens the model version in the MLflow UI (TrainOperator, ValidationGateSensor, DeployOperator,
    DriftSensor's reference version)."""

    name = "MLflow model version"
    url_key = XCOM_MODEL_VERSION_URL
