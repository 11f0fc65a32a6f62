"""Test DAG: a deferrable ValidationGateSensor on live metrics; dag.test() runs its trigger inline."""

from __future__ import annotations

import datetime

from airflow.sdk import DAG, Param, task

from airflow_mlops.sensors.validation_gate import ValidationGateSensor

with DAG(
    "test_gate_deferrable",
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

    gate = ValidationGateSensor(
        task_id="gate",
        spec="{{ params.spec }}",
        model_name="{{ params.model_name }}",
        version="{{ params.version }}",
        promote_alias="challenger",
        poke_interval=1,
        timeout=60,
        soft_fail=True,
        deferrable=True,
    )
    deploy(gate.output)
