"""Test DAGs: DeployOperator driven entirely by run conf (params): deploy or roll back, any strategy;
``test_deploy_model`` watches held stages in the worker, ``test_deploy_deferrable`` in a trigger."""

from __future__ import annotations

import datetime

from airflow.sdk import DAG, Param

from airflow_mlops.operators.deploy import DeployOperator


def _params() -> dict:
    return {
        "model_name": Param("bc", type="string"),
        "version": Param(None, type=["null", "string", "integer"]),
        "alias": Param(None, type=["null", "string"]),
        "action": Param("deploy", type="string"),
        "strategy": Param("replace", type="string"),
        "backend": Param("local", type="string"),
        "canary_steps": Param([0.5], type="array"),
        "step_seconds": Param(1, type="number"),
        "promote": Param(True, type="boolean"),
        "validate": Param(True, type="boolean"),
        "state_dir": Param(None, type=["null", "string"]),
        "gateway_url": Param(None, type=["null", "string"]),
    }


for dag_id, deferrable in (("test_deploy_model", False), ("test_deploy_deferrable", True)):
    with DAG(
        dag_id,
        schedule=None,
        start_date=datetime.datetime(2024, 1, 1),
        catchup=False,
        render_template_as_native_obj=True,
        params=_params(),
    ) as dag:
        DeployOperator(
            task_id="deploy",
            model_name="{{ params.model_name }}",
            version="{{ params.version }}",
            alias="{{ params.alias }}",
            action="{{ params.action }}",
            strategy="{{ params.strategy }}",
            backend="{{ params.backend }}",
            canary_steps="{{ params.canary_steps }}",
            state_dir="{{ params.state_dir }}",
            gateway_url="{{ params.gateway_url }}",
            step_seconds="{{ params.step_seconds }}",
            promote="{{ params.promote }}",
            validate="{{ params.validate }}",
            poll_interval=0.5,
            min_defer_seconds=0,  # dag.test() runs the trigger inline: no executor to race
            deferrable=deferrable,
        )
    globals()[dag_id] = dag
