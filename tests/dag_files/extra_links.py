"""Test DAG: a task that pushes the URLs of the provider's extra links (as the operators do while they
run), for tests/unit/links: Airflow evaluates each link when the task ends and stores it as XCom."""

from __future__ import annotations

import datetime

from airflow.sdk import DAG, BaseOperator

from airflow_mlops.links.base import push_link
from airflow_mlops.links.drift import XCOM_DRIFT_REPORT_URL, DriftReportLink, report_url
from airflow_mlops.links.gateway import XCOM_GATEWAY_METRICS_URL, GatewayMetricsLink, metrics_url
from airflow_mlops.links.mlflow import XCOM_MODEL_VERSION_URL, MlflowModelVersionLink, MlflowRunLink


class PushesLinks(BaseOperator):
    """Pushes three of the four links' URLs (one with credentials in it); the MLflow run link gets none."""

    operator_extra_links = (
        MlflowRunLink(),
        MlflowModelVersionLink(),
        DriftReportLink(),
        GatewayMetricsLink(),
    )

    def execute(self, context):
        push_link(XCOM_MODEL_VERSION_URL, "http://ci:s3cret@mlflow:5000/#/models/bc/versions/3", context)
        push_link(XCOM_DRIFT_REPORT_URL, report_url("http://mlflow:5000/#/experiments/7/runs/abc"))
        push_link(XCOM_GATEWAY_METRICS_URL, metrics_url("http://gateway:8080/"), context)


with DAG("test_extra_links", schedule=None, start_date=datetime.datetime(2024, 1, 1), catchup=False):
    PushesLinks(task_id="pushes")
