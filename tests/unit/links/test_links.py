"""The extra links of the operators and sensors: each reads the URL its task pushed to XCom. Run through
``dag.test()``, where Airflow evaluates every link when the task ends and stores the result under the
link's ``_link_<class>`` XCom key, which the api-server's extra-links endpoint returns."""

from __future__ import annotations

import pytest

from airflow_mlops.links.drift import DriftReportLink
from airflow_mlops.links.gateway import GatewayMetricsLink
from airflow_mlops.links.mlflow import MlflowModelVersionLink, MlflowRunLink
from tests.conftest import run_dag


def _stored_links(dag_run) -> dict[str, str]:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.query(XComModel).filter(
            XComModel.dag_id == dag_run.dag_id,
            XComModel.run_id == dag_run.run_id,
            XComModel.key.like("_link_%"),
        )
        return {r.key: XComModel.deserialize_value(r) for r in rows}


def test_each_link_reads_the_url_its_task_pushed(airflow_db):
    dag_run = run_dag("test_extra_links")
    assert dag_run.state == "success"
    links = _stored_links(dag_run)
    assert links == {
        # Credentials in a URL are masked before it is pushed.
        "_link_MlflowModelVersionLink": "http://***@mlflow:5000/#/models/bc/versions/3",
        "_link_DriftReportLink": "http://mlflow:5000/#/experiments/7/runs/abc/artifactPath/drift/report.html",
        "_link_GatewayMetricsLink": "http://gateway:8080/metrics",
        "_link_MlflowRunLink": "",  # nothing pushed: no button
    }


@pytest.mark.parametrize(
    ("module", "cls", "links"),
    [
        ("airflow_mlops.operators.train", "TrainOperator", {MlflowRunLink, MlflowModelVersionLink}),
        ("airflow_mlops.operators.deploy", "DeployOperator", {MlflowModelVersionLink, GatewayMetricsLink}),
        (
            "airflow_mlops.sensors.validation_gate",
            "ValidationGateSensor",
            {MlflowModelVersionLink, GatewayMetricsLink},
        ),
        ("airflow_mlops.sensors.drift", "DriftSensor", {DriftReportLink, MlflowModelVersionLink}),
    ],
)
def test_the_operators_and_sensors_declare_their_links(module, cls, links):
    import importlib

    op = getattr(importlib.import_module(module), cls)
    assert {type(link) for link in op.operator_extra_links} == links


def test_the_provider_info_registers_every_link():
    from airflow_mlops.get_provider_info import get_provider_info

    names = {
        f"{c.__module__}.{c.__name__}"
        for c in (MlflowRunLink, MlflowModelVersionLink, DriftReportLink, GatewayMetricsLink)
    }
    assert names <= set(get_provider_info()["extra-links"])


def test_model_version_and_run_urls_come_from_the_ui_url():
    from airflow_mlops.core.tracking import MlflowTarget

    target = MlflowTarget("sqlite:////tmp/x.db", ui_url="https://mlflow.example.com/")
    assert (
        target.model_version_url("my model", 4) == "https://mlflow.example.com/#/models/my%20model/versions/4"
    )
    assert target.run_url("1", "r") == "https://mlflow.example.com/#/experiments/1/runs/r"
    assert MlflowTarget("sqlite:////tmp/x.db").model_version_url("m", 1) is None  # no UI known: no link
