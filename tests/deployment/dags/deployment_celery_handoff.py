"""Deployment tier, CeleryExecutor: a canary deployed by a task on one worker (``queue_a``) is rolled back
by a task on another (``queue_b``) that shares no disk with it. The gateway is external (a service
every worker reaches), so only the deployment state decides whether the rollback knows what to undo.
"""

from __future__ import annotations

import datetime

from airflow.sdk import DAG, Param

from airflow_mlops.operators.deploy import DeployOperator

with DAG(
    "deployment_celery_handoff",
    schedule=None,
    start_date=datetime.datetime(2024, 1, 1),
    catchup=False,
    tags=["deployment-tier"],
    params={"model": Param("", type="string"), "gateway_url": Param("", type="string")},
) as dag:
    common = {
        "model_name": "{{ params.model }}",
        "backend": "external",
        "gateway_url": "{{ params.gateway_url }}",
    }
    serve_v1 = DeployOperator(
        task_id="serve_v1", version="1", strategy="replace", validate=False, queue="queue_a", **common
    )
    canary = DeployOperator(
        task_id="canary_v2", version="2", strategy="canary", canary_steps=[0.3], step_seconds=2,
        promote=False, validate=False, queue="queue_a", **common,
    )  # fmt: skip
    rollback = DeployOperator(task_id="rollback", action="rollback", queue="queue_b", **common)
    serve_v1 >> canary >> rollback
