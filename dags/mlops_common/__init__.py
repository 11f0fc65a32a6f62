"""Settings and the release steps shared by the example DAGs (each DAG file shows its own chain).

Settings come from the environment so the same DAGs run in the embedded demo (a local gateway process,
live metrics read from its ``/metrics`` page) and in the compose stack (the ``gateway`` service, live
metrics through Prometheus). Nothing heavy is imported here: DAG files stay cheap to parse.
"""

from __future__ import annotations

import os

from airflow.sdk import Asset

MODEL = os.environ.get("MLOPS_MODEL_NAME", "breast_cancer")
TARGET = os.environ.get("MLOPS_TARGET", "target")
DATA_PATH = os.environ.get("MLOPS_DATA_PATH", "data/training.csv")  # inside the DVC repository
# local: a gateway subprocess; docker: a container; external: an existing gateway (compose).
BACKEND = os.environ.get("MLOPS_DEPLOY_BACKEND", "local")
GATEWAY_PORT = int(os.environ.get("MLOPS_GATEWAY_PORT", "8765"))
GATEWAY_URL = os.environ.get("MLOPS_GATEWAY_URL", f"http://127.0.0.1:{GATEWAY_PORT}")
PREDICTION_LOG_DIR = os.environ.get("MLOPS_PREDICTION_LOG_DIR", os.path.expanduser("~/.mlops/predictions"))
# gateway: read live metrics from the gateway's /metrics page; prometheus: PromQL (prometheus_default).
LIVE_METRICS = os.environ.get("MLOPS_LIVE_METRICS", "gateway")
PUSHGATEWAY_CONN_ID = os.environ.get("MLOPS_PUSHGATEWAY_CONN_ID") or None
CANARY_SHARE = float(os.environ.get("MLOPS_CANARY_SHARE", "0.3"))
ONLINE_MIN_SAMPLES = int(os.environ.get("MLOPS_ONLINE_MIN_SAMPLES", "40"))
ONLINE_GATE_TIMEOUT = int(os.environ.get("MLOPS_ONLINE_GATE_TIMEOUT", "600"))
F1_FLOOR = float(os.environ.get("MLOPS_F1_FLOOR", "0.85"))
DRIFT_WINDOW = float(os.environ.get("MLOPS_DRIFT_WINDOW_SECONDS", "900"))

# Asset events: every registered version, and every retraining request (the retrain DAG listens).
MODEL_TRAINED = Asset(f"mlops://models/{MODEL}")
RETRAIN_REQUEST = Asset(f"mlops://retrain/{MODEL}")

CANDIDATE = "{{ ti.xcom_pull(task_ids='train')['version'] }}"
# How every version of the model is trained (first model and retraining alike), so versions compare.
TRAINING = {
    "registered_model_name": MODEL,
    "dvc_path": DATA_PATH,
    "target": TARGET,
    "estimator": "sklearn.linear_model.LogisticRegression",
    "estimator_params": {"max_iter": 1000},
    "outlets": [MODEL_TRAINED],
}


def live_source() -> dict:
    """Where live metrics come from: the gateway's page, or Prometheus."""
    if LIVE_METRICS == "prometheus":
        return {"kind": "prometheus"}
    return {"kind": "metrics_url", "url": f"{GATEWAY_URL}/metrics"}


# Offline: the candidate's test metrics against the champion's (skipped for the first model).
OFFLINE_GATE = {
    "name": "offline",
    "source": {"kind": "mlflow"},
    "rules": [
        {"metric": "f1", "min": F1_FLOOR, "min_change": -0.03, "max_change": 0.25},
        {"metric": "roc_auc", "min": 0.9},
    ],
}
# Online: the canary's live quality on real traffic with ground truth, against the champion's.
ONLINE_GATE = {
    "name": "online",
    "source": live_source(),
    "rules": [
        {"metric": "f1", "min": F1_FLOOR, "min_change": -0.02, "min_samples": ONLINE_MIN_SAMPLES},
        {"metric": "accuracy", "min": F1_FLOOR - 0.05, "min_samples": ONLINE_MIN_SAMPLES},
    ],
}
# The champion's live F1 floor, checked by the drift monitor.
LIVE_FLOOR = {
    "name": "live_floor",
    "source": live_source(),
    "rules": [{"metric": "f1", "min": F1_FLOOR, "min_samples": ONLINE_MIN_SAMPLES}],
}


def deploy_kwargs() -> dict:
    """Where the gateway runs, for every DeployOperator of the examples."""
    if BACKEND == "external":
        return {"backend": "external", "gateway_url": GATEWAY_URL}
    return {"backend": BACKEND, "port": GATEWAY_PORT, "log_dir": PREDICTION_LOG_DIR}


def require_champion() -> str:
    """The version behind ``@champion``; skips the task (saying why) when there is none yet.

    Retraining and monitoring start from a model in production: with no champion there is nothing to
    retrain or watch, so an unpaused example does nothing until ``mlops_train_gate_deploy`` made one.
    """
    from airflow.sdk.exceptions import AirflowSkipException

    from airflow_mlops.hooks.mlflow import MlflowHook

    champion = MlflowHook().get_version_by_alias(MODEL, "champion")
    if champion is None:
        raise AirflowSkipException(
            f"{MODEL} has no @champion yet: nothing to do. Run mlops_train_gate_deploy to train, gate "
            "and deploy a first model."
        )
    return str(champion.version)


# The steps of a release, built with the examples' settings; each DAG file chains them itself.
def offline_gate():  # a ValidationGateSensor
    """The candidate's test metrics against the champion's; a failed gate skips the release."""
    from airflow_mlops.sensors.validation_gate import ValidationGateSensor

    return ValidationGateSensor(
        task_id="offline_gate", spec=OFFLINE_GATE, model_name=MODEL, version=CANDIDATE,
        promote_alias="challenger", soft_fail=True, poke_interval=5, timeout=120,
    )  # fmt: skip


def deploy_canary():  # a DeployOperator
    """The candidate held at ``CANARY_SHARE`` of the traffic; ``@champion`` does not move."""
    from airflow_mlops.operators.deploy import DeployOperator

    return DeployOperator(
        task_id="deploy_canary", model_name=MODEL, version=CANDIDATE, strategy="canary",
        canary_steps=[CANARY_SHARE], step_seconds=5, promote=False, **deploy_kwargs(),
    )  # fmt: skip


def online_gate():  # a ValidationGateSensor
    """The canary's live quality on real traffic with ground truth; fails on a failed verdict,
    an error or a timeout (the canary is then rolled back)."""
    from airflow_mlops.sensors.validation_gate import ValidationGateSensor

    return ValidationGateSensor(
        task_id="online_gate", spec=ONLINE_GATE, model_name=MODEL, version=CANDIDATE,
        poke_interval=10, timeout=ONLINE_GATE_TIMEOUT,
    )  # fmt: skip


def promote():  # a DeployOperator
    """All traffic to the candidate, which becomes ``@champion``: runs only after the online gate passed."""
    from airflow_mlops.operators.deploy import DeployOperator

    return DeployOperator(
        task_id="promote", model_name=MODEL, version=CANDIDATE, strategy="replace", validate=False,
        **deploy_kwargs(),
    )  # fmt: skip


def canary_to_roll_back(ti) -> bool:  # the task instance
    """True when a canary was deployed and the online gate did not pass it (failed, errored or timed
    out); False, saying so, when nothing was deployed (e.g. training failed): nothing to do."""
    canary = ti.xcom_pull(task_ids="deploy_canary")
    if not canary:
        print("No canary was deployed (an earlier step failed or was skipped): nothing to roll back.")
        return False
    if ti.xcom_pull(task_ids="online_gate"):
        print("The online gate passed: the canary is promoted, nothing to roll back.")
        return False
    print("The online gate did not pass the held canary: rolling it back.")
    return True


def rollback():  # a DeployOperator
    """Roll back the held canary of the candidate: the routing and the champion from before it come
    back (a first model's gateway stops). Only that canary: when it is no longer held (promoted, or
    rolled back already) nothing changes, so this never undoes someone else's later deploy."""
    from airflow_mlops.operators.deploy import DeployOperator

    return DeployOperator(
        task_id="rollback", model_name=MODEL, action="rollback", version=CANDIDATE, **deploy_kwargs()
    )
