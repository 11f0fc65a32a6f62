"""Test DAG: a TrainOperator whose first try dies right after registering, to test idempotent retries."""

from __future__ import annotations

import datetime

from airflow.sdk import DAG, Param

from airflow_mlops.operators.train import TrainOperator


class CrashAfterTrain(TrainOperator):
    """Raises after a successful first try, as a worker lost before reporting success would."""

    def execute(self, context):
        result = super().execute(context)
        if context["ti"].try_number == 1:
            raise RuntimeError("simulated worker crash after registration")
        return result


with DAG(
    "test_train_retry",
    schedule=None,
    start_date=datetime.datetime(2024, 1, 1),
    catchup=False,
    params={"model_name": Param("bc", type="string")},
) as dag:
    CrashAfterTrain(
        task_id="train",
        registered_model_name="{{ params.model_name }}",
        dvc_path="data/breast_cancer.csv",
        target="target",
        estimator="sklearn.linear_model.LogisticRegression",
        estimator_params={"max_iter": 300},
        retries=1,
        retry_delay=datetime.timedelta(seconds=0),
    )
