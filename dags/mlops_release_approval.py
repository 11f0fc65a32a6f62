"""The release chain with a human in the loop: train, gate, deploy a canary, gate it on live traffic, then
a person decides "promote / keep the canary longer / roll back" when the online analysis is
inconclusive (Airflow 3's human-in-the-loop: the Required actions page, or the REST API).

The question shows the gate tables, the canary's live metrics and the latest drift check; the answer and
who gave it are recorded in the promotion ledger. A passed gate promotes and a failed one rolls back
without asking, unless ``MLOPS_APPROVAL_ASK_ON`` (comma-separated: ``inconclusive``, ``passed``,
``failed``) says otherwise: ``inconclusive,passed`` asks before every promotion.

Connections and settings: as ``mlops_train_gate_deploy`` (``dags/mlops_common``).
"""

from __future__ import annotations

import datetime
import os

from airflow.sdk import DAG, Param, task
from mlops_common import (
    CANDIDATE,
    GATEWAY_URL,
    MODEL,
    TRAINING,
    deploy_canary,
    offline_gate,
    online_gate,
    promote,
    rollback,
)

from airflow_mlops.operators.approval import ReleaseApprovalOperator
from airflow_mlops.operators.train import TrainOperator

ASK_ON = [s.strip() for s in os.environ.get("MLOPS_APPROVAL_ASK_ON", "inconclusive").split(",") if s.strip()]

with DAG(
    "mlops_release_approval",
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

    # [START howto_release_approval]
    # train -> offline gate -> canary (held) -> online gate -> a human, when the analysis is inconclusive:
    # "Promote" -> promote, "Keep the canary longer" -> keep_canary, "Roll back" -> rollback.
    canary, live_gate = deploy_canary(), online_gate()
    train >> offline_gate() >> canary >> live_gate

    decide = ReleaseApprovalOperator(
        task_id="approve_release",
        model_name=MODEL,
        version=CANDIDATE,
        gate_task_id="online_gate",
        canary_task_id="deploy_canary",
        ask_on=ASK_ON,
        live_metrics_url=f"{GATEWAY_URL}/metrics",
        response_timeout=datetime.timedelta(hours=24),  # then the default answer: roll back
    )

    @task
    def keep_canary(*, ti=None) -> dict:
        """The canary keeps its share of the traffic; clear ``approve_release`` to decide again."""
        answer = ti.xcom_pull(task_ids="approve_release", key="approval")
        print(f"Canary kept at its share by {answer['approver']}; clear approve_release to ask again.")
        return answer

    [canary, live_gate] >> decide >> [promote(), keep_canary(), rollback()]
    # [END howto_release_approval]
