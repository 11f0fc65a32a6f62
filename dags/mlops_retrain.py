"""Retrain on what production taught us: snapshot the training data plus the labelled production traffic
with DVC, then train, gate and roll out exactly as the first model was.

Scheduled on the retraining Asset (the drift monitor's requests) or nightly, whichever comes first.
With no champion yet it does nothing (the first model comes from ``mlops_train_gate_deploy``), so it is
safe to unpause.
"""

from __future__ import annotations

import datetime

from airflow.sdk import DAG, task
from airflow.timetables.assets import AssetOrTimeSchedule
from airflow.timetables.trigger import CronTriggerTimetable
from mlops_common import (
    DATA_PATH,
    MODEL,
    PREDICTION_LOG_DIR,
    RETRAIN_REQUEST,
    TARGET,
    TRAINING,
    canary_to_roll_back,
    deploy_canary,
    offline_gate,
    online_gate,
    promote,
    require_champion,
    rollback,
)

from airflow_mlops.operators.train import TrainOperator

with DAG(
    "mlops_retrain",
    max_active_runs=1,
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable("0 3 * * *", timezone="UTC"), assets=RETRAIN_REQUEST
    ),
    start_date=datetime.datetime(2024, 1, 1),
    catchup=False,
    tags=["mlops", "example"],
) as dag:

    @task
    def champion() -> str:
        """The model in production; skipped (saying why) when there is none: nothing to retrain."""
        return require_champion()

    @task
    def snapshot_training_data(*, triggering_asset_events=None, dag_run=None) -> str:
        """Append the production requests whose ground truth came back to the training data, and
        version the result with DVC; return the new git revision."""
        import tempfile

        import pandas as pd

        from airflow_mlops.core.prediction_log import read_labelled
        from airflow_mlops.hooks.dvc import DvcHook

        reasons = [
            r
            for ev in (triggering_asset_events or {}).get(RETRAIN_REQUEST, [])
            for r in ev.extra.get("reasons", [])
        ]
        reasons = reasons or (dag_run.conf or {}).get("reasons") or ["scheduled"]
        hook = DvcHook()
        current, lineage = hook.read_dataframe(DATA_PATH)
        labelled = read_labelled(PREDICTION_LOG_DIR, MODEL, target=TARGET)
        print(f"Retraining because: {'; '.join(reasons)}. {len(labelled)} labelled production rows.")
        if labelled.empty:
            return lineage["commit"]  # nothing new: retrain on the data as it is
        # The same request repeated must not outweigh the rest: keep each distinct labelled row once.
        merged = pd.concat([current, labelled[current.columns]], ignore_index=True).drop_duplicates()
        with tempfile.TemporaryDirectory() as tmp:
            path = f"{tmp}/training.csv"
            merged.to_csv(path, index=False)
            message = f"{len(labelled)} labelled production rows ({'; '.join(reasons)})"
            return hook.snapshot(path, DATA_PATH, message)

    # Trained like the first model, on the revision the snapshot just made.
    train = TrainOperator(
        task_id="train", dvc_rev="{{ ti.xcom_pull(task_ids='snapshot_training_data') }}", **TRAINING
    )

    # [START howto_retrain_chain]
    # champion? -> snapshot -> train -> offline gate -> canary -> online gate -> promote / roll back
    canary, live_gate = deploy_canary(), online_gate()
    champion() >> snapshot_training_data() >> train >> offline_gate() >> canary >> live_gate >> promote()

    @task.short_circuit(trigger_rule="all_done")
    def needs_rollback(*, ti=None) -> bool:
        """Roll back only a canary that was deployed and not passed; otherwise nothing to do."""
        return canary_to_roll_back(ti)

    [canary, live_gate] >> needs_rollback() >> rollback()
    # [END howto_retrain_chain]
