"""Train on DVC-tracked data, gate against the champion, deploy as a canary, gate the canary on its
live metrics, then promote it, or roll it back.

Connections: ``mlflow_default``, ``dvc_default`` (and ``prometheus_default`` when
``MLOPS_LIVE_METRICS=prometheus``). Settings: ``dags/mlops_common``.
"""

from __future__ import annotations

import datetime

from airflow.sdk import DAG, Param
from mlops_common import TRAINING, release_chain

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
    release_chain(train)
