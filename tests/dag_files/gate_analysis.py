"""Test DAG: an analysed, deferrable ValidationGateSensor and a branch on its ``outcome`` XCom (the
contract a human-approval step routes on): passed -> promote, inconclusive/timeout -> approve, else
rollback. ``deploy`` (default trigger rule) shows what a skipped, inconclusive gate does downstream."""

from __future__ import annotations

import datetime

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG, Param, task

from airflow_mlops.sensors.validation_gate import ValidationGateSensor

with DAG(
    "test_gate_analysis",
    schedule=None,
    start_date=datetime.datetime(2024, 1, 1),
    catchup=False,
    render_template_as_native_obj=True,
    params={
        "model_name": Param("bc", type="string"),
        "version": Param("2", type="string"),
        "spec": Param({}, type="object"),
    },
):

    @task
    def deploy(verdict: dict) -> str:
        return f"deployed v{verdict['version']}"

    @task.branch(trigger_rule="all_done")
    def route(ti=None) -> str:
        outcome = ti.xcom_pull(task_ids="gate", key="outcome")
        return {"passed": "promote", "inconclusive": "approve", "timeout": "approve"}.get(outcome, "rollback")

    gate = ValidationGateSensor(
        task_id="gate",
        spec="{{ params.spec }}",
        model_name="{{ params.model_name }}",
        version="{{ params.version }}",
        promote_alias="challenger",
        poke_interval=1,
        timeout=90,
        deferrable=True,
    )
    deploy(gate.output)
    gate >> route() >> [EmptyOperator(task_id="promote"), EmptyOperator(task_id="approve"),
                        EmptyOperator(task_id="rollback")]  # fmt: skip
