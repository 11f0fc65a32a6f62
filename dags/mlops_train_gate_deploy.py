"""Train on DVC-tracked data, gate against the champion, deploy as a canary, promote or roll back.

Connections: ``mlflow_default`` (MLflow), ``dvc_default`` (the data repository).
"""

from __future__ import annotations

import datetime

from airflow.sdk import DAG, Asset, Param

from airflow_mlops.operators.train import TrainOperator

MODEL = "breast_cancer"
# Emitted by every training run; downstream DAGs may be scheduled on it.
MODEL_TRAINED = Asset(f"mlops://models/{MODEL}")

with DAG(
    "mlops_train_gate_deploy",
    schedule=None,
    start_date=datetime.datetime(2024, 1, 1),
    catchup=False,
    tags=["mlops", "example"],
    render_template_as_native_obj=True,  # so an unset param renders as None, not "None"
    params={"data_rev": Param(None, type=["null", "string"], description="git revision of the data (default: HEAD)")},
) as dag:
    train = TrainOperator(
        task_id="train",
        registered_model_name=MODEL,
        dvc_path="data/training.csv",
        dvc_rev="{{ params.data_rev }}",
        target="target",
        estimator="sklearn.linear_model.LogisticRegression",
        estimator_params={"max_iter": 1000},
        outlets=[MODEL_TRAINED],
    )
