"""Deployment tier, one triggerer: three deferrable gates wait at the same time, each with the MLflow
credentials of its own connection (``mlflow_a``: user A, who may edit model A; ``mlflow_b``: user B,
who may edit model B and, until the test revokes it, read model A). Live evidence comes from a page
the test serves, so the gates stay pending (deferred) until the test lets them decide.
"""

from __future__ import annotations

import datetime

from airflow.sdk import DAG, Param

from airflow_mlops.sensors.validation_gate import ValidationGateSensor

SPEC = {
    "name": "live",
    "source": {"kind": "metrics_url", "url": "{{ params.metrics_url }}"},
    "rules": [{"metric": "f1", "min": 0.8, "min_samples": 10}],
}

with DAG(
    "deployment_two_credentials",
    schedule=None,
    start_date=datetime.datetime(2024, 1, 1),
    catchup=False,
    tags=["deployment-tier"],
    params={
        "model_a": Param("", type="string"),
        "model_b": Param("", type="string"),
        "metrics_url": Param("", type="string"),
    },
) as dag:
    wait = {"spec": SPEC, "version": "1", "poke_interval": 2, "timeout": 180}
    ValidationGateSensor(
        task_id="gate_a",
        model_name="{{ params.model_a }}",
        mlflow_conn_id="mlflow_a",
        queue="queue_a",
        **wait,
    )
    ValidationGateSensor(
        task_id="gate_b",
        model_name="{{ params.model_b }}",
        mlflow_conn_id="mlflow_b",
        queue="queue_b",
        **wait,
    )
    ValidationGateSensor(
        task_id="gate_b_reads_a", model_name="{{ params.model_a }}", mlflow_conn_id="mlflow_b",
        queue="queue_b", **wait,
    )  # fmt: skip
