"""Test DAG: DeployOperator driven entirely by run conf (params): deploy or roll back, any strategy."""

from __future__ import annotations

import datetime

from airflow.sdk import DAG, Param

from airflow_mlops.operators.deploy import DeployOperator

with DAG(
    "test_deploy_model",
    schedule=None,
    start_date=datetime.datetime(2024, 1, 1),
    catchup=False,
    render_template_as_native_obj=True,
    params={
        "model_name": Param("bc", type="string"),
        "version": Param(None, type=["null", "string", "integer"]),
        "alias": Param(None, type=["null", "string"]),
        "action": Param("deploy", type="string"),
        "strategy": Param("replace", type="string"),
        "backend": Param("local", type="string"),
        "canary_steps": Param([0.5], type="array"),
        "state_dir": Param(None, type=["null", "string"]),
        "gateway_url": Param(None, type=["null", "string"]),
    },
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
        step_seconds=1,
        validate=True,
    )
