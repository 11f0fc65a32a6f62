"""Test DAGs: a ValidationGateSensor in front of a deploy task, driven by run conf (params).

``test_gate_offline`` fails on a failed gate; ``test_gate_soft_fail`` skips the gate and its deploy.
"""

from __future__ import annotations

import datetime

from airflow.sdk import DAG, Param, task

from airflow_mlops.sensors.validation_gate import ValidationGateSensor

PARAMS = {
    "model_name": Param("bc", type="string"),
    "version": Param("1", type="string"),
    "spec": Param({}, type="object"),
}

for dag_id, soft_fail in (("test_gate_offline", False), ("test_gate_soft_fail", True)):
    with DAG(
        dag_id,
        schedule=None,
        start_date=datetime.datetime(2024, 1, 1),
        catchup=False,
        render_template_as_native_obj=True,
        params=PARAMS,
    ):

        @task
        def deploy(verdict: dict) -> str:
            return f"deployed v{verdict['version']}"

        gate = ValidationGateSensor(
            task_id="gate",
            spec="{{ params.spec }}",
            model_name="{{ params.model_name }}",
            version="{{ params.version }}",
            soft_fail=soft_fail,
            poke_interval=1,
            timeout=30,
            deferrable=False,
        )
        deploy(gate.output)
