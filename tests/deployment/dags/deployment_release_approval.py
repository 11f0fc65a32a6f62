"""The approval step of a release on a real deployment: a real gate (MLflow metrics of the version the
test registered), then ReleaseApprovalOperator asking even when the gate passed, then one of three
branches. The canary deploy is a stand-in task (no gateway: what is tested is the question, the answer
through the REST API, the branch and the ledger; the DeployOperator path has its own tier test)."""

from __future__ import annotations

import datetime

from airflow.sdk import DAG, Param, task

from airflow_mlops.operators.approval import ReleaseApprovalOperator
from airflow_mlops.sensors.validation_gate import ValidationGateSensor

MODEL, VERSION = "{{ params.model }}", "{{ params.version }}"

with DAG(
    "deployment_release_approval",
    schedule=None,
    start_date=datetime.datetime(2024, 1, 1),
    catchup=False,
    params={"model": Param("m", type="string"), "version": Param("1", type="string")},
) as dag:

    @task
    def deploy_canary(*, params=None) -> dict:
        """Stands in for the canary deploy: says which version is held."""
        return {"version": params["version"], "strategy": "canary"}

    gate = ValidationGateSensor(
        task_id="online_gate", model_name=MODEL, version=VERSION, poke_interval=5, timeout=120,
        spec={"name": "online", "source": {"kind": "mlflow"}, "rules": [{"metric": "f1", "min": 0.5}]},
    )  # fmt: skip
    decide = ReleaseApprovalOperator(
        task_id="approve_release", model_name=MODEL, version=VERSION, ask_on=["passed", "inconclusive"]
    )

    @task
    def promote() -> str:
        return "promote"

    @task
    def keep_canary() -> str:
        return "keep_canary"

    @task
    def rollback() -> str:
        return "rollback"

    canary = deploy_canary()
    canary >> gate
    [canary, gate] >> decide >> [promote(), keep_canary(), rollback()]
