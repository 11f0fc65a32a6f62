"""Test DAG: ReleaseApprovalOperator's own routing when nobody needs to be asked. The gate and the canary
are stand-ins that push what a real gate and deploy push (``outcome``, ``verdict``; the canary's record),
as set by the run conf; the question a human answers is tested on a real deployment
(tests/deployment/test_release_events.py)."""

from __future__ import annotations

import datetime

from airflow.sdk import DAG, Param, task

from airflow_mlops.operators.approval import ReleaseApprovalOperator

with DAG(
    "test_release_approval_auto",
    schedule=None,
    start_date=datetime.datetime(2024, 1, 1),
    catchup=False,
    params={"outcome": Param("passed", type="string"), "deployed": Param(True, type="boolean")},
) as dag:

    @task
    def deploy_canary(*, params=None) -> dict | None:
        return {"version": "2"} if params["deployed"] else None

    @task
    def online_gate(*, params=None, ti=None) -> None:
        ti.xcom_push(key="outcome", value=params["outcome"])
        ti.xcom_push(key="verdict", value={"gate": "online", "status": params["outcome"], "rows": []})

    decide = ReleaseApprovalOperator(task_id="approve_release", model_name="m", version="2")

    @task
    def promote() -> str:
        return "promote"

    @task
    def keep_canary() -> str:
        return "keep_canary"

    @task
    def rollback() -> str:
        return "rollback"

    canary, gate = deploy_canary(), online_gate()
    canary >> gate
    [canary, gate] >> decide >> [promote(), keep_canary(), rollback()]
