"""Watch the champion in production: data drift in the gateway's prediction log, and its live F1.

When either goes wrong, an Asset event on ``mlops://retrain/<model>`` carries the reason, and the
retraining DAG, scheduled on that Asset, starts by itself. With no champion yet there is nothing to
watch: every task skips, saying so (safe to unpause).
"""

from __future__ import annotations

import datetime

from airflow.sdk import DAG, task
from airflow.sdk.exceptions import AirflowSkipException
from mlops_common import (
    DRIFT_WINDOW,
    LIVE_FLOOR,
    MODEL,
    PREDICTION_LOG_DIR,
    PUSHGATEWAY_CONN_ID,
    RETRAIN_REQUEST,
    require_champion,
)

from airflow_mlops.sensors.drift import DriftSensor

with DAG(
    "mlops_drift_monitor",
    schedule=datetime.timedelta(hours=1),
    start_date=datetime.datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["mlops", "example"],
) as dag:

    @task
    def champion() -> str:
        """The version in production; skipped (saying why) when there is none yet."""
        return require_champion()

    serving = champion()

    # [START howto_drift_monitor]
    # Succeeds when the last window of production inputs drifted from the champion's training data
    # (its reference profile is logged with the model); skipped when nothing drifted before the timeout.
    drift = DriftSensor(
        task_id="detect_drift",
        model_name=MODEL,
        model_version=serving,
        prediction_log_dir=PREDICTION_LOG_DIR,
        window=DRIFT_WINDOW,
        pushgateway_conn_id=PUSHGATEWAY_CONN_ID,
        poke_interval=20,
        timeout=60,
        soft_fail=True,
    )

    @task
    def live_quality(version: str) -> dict:
        """The champion's live F1 against the floor (pending while too little ground truth came back)."""
        from airflow_mlops.sensors.validation_gate import evaluate_gate

        verdict = evaluate_gate(LIVE_FLOOR, MODEL, version)
        print(verdict.table())
        f1 = next((r.candidate for r in verdict.rows if r.metric == "f1" and r.candidate is not None), None)
        return {"version": version, "status": verdict.status, "f1": f1}

    @task(trigger_rule="all_done", outlets=[RETRAIN_REQUEST])
    def request_retraining(quality: dict | None, *, ti=None, outlet_events=None) -> dict:
        """Emit the retraining request, with its reasons, when drift was found or live F1 fell."""
        if ti.xcom_pull(task_ids="champion") is None:
            raise AirflowSkipException(f"{MODEL} has no @champion yet: nothing was watched, no retraining.")
        reasons = []
        drift_summary = ti.xcom_pull(task_ids="detect_drift")
        if drift_summary and drift_summary.get("drift_detected"):
            drifted = [c for c, r in drift_summary["columns"].items() if r.get("drifted")]
            reasons.append(
                f"data drift in {drift_summary['share_drifted']:.0%} of columns ({', '.join(drifted[:4])}...)"
            )
        if quality and quality["status"] == "failed":
            reasons.append(f"live F1 {quality['f1']:.3f} of version {quality['version']} is below the floor")
        if not reasons:
            raise AirflowSkipException("no drift and live quality is fine: no retraining")
        request = {
            "model_name": MODEL,
            "reasons": reasons,
            "drift_share": (drift_summary or {}).get("share_drifted"),
        }
        outlet_events[RETRAIN_REQUEST].extra = request
        return request

    request_retraining(live_quality(serving)).set_upstream(drift)
    # [END howto_drift_monitor]
