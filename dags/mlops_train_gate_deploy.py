"""Train on DVC-tracked data, gate against the champion, deploy as a canary, gate the canary on its
live metrics, then promote it, or roll it back.

Connections: ``mlflow_default``, ``dvc_default`` (and ``prometheus_default`` when
``MLOPS_LIVE_METRICS=prometheus``). Settings: ``dags/mlops_common``.
"""

from __future__ import annotations

import datetime

from airflow.sdk import DAG, Param, task
from mlops_common import (
    TRAINING,
    canary_to_roll_back,
    deploy_canary,
    offline_gate,
    online_gate,
    promote,
    rollback,
)

from airflow_mlops.operators.train import TrainOperator

with DAG(
    "mlops_train_gate_deploy",
    schedule=None,
    start_date=datetime.datetime(2024, 1, 1),
    catchup=False,
    tags=["mlops", "example"],
    render_template_as_native_obj=True,  # so an unset param renders as None, not "None"
    params={
        "data_rev": Param(
            None, type=["null", "string"], description="git revision of the data (default: HEAD)"
        )
    },
) as dag:
    train = TrainOperator(task_id="train", dvc_rev="{{ params.data_rev }}", **TRAINING)

    # [START howto_release_chain]
    # train -> offline gate -> canary (held, @champion unchanged) -> online gate -> promote @champion;
    # the canary is rolled back when the online gate fails, errors or times out.
    canary, live_gate = deploy_canary(), online_gate()
    train >> offline_gate() >> canary >> live_gate >> promote()

    @task.short_circuit(trigger_rule="all_done")
    def needs_rollback(*, ti=None) -> bool:
        """Roll back only a canary that was deployed and not passed; otherwise nothing to do."""
        return canary_to_roll_back(ti)

    [canary, live_gate] >> needs_rollback() >> rollback()
    # [END howto_release_chain]
