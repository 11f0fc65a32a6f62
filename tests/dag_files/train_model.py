"""Test DAG: TrainOperator driven entirely by run conf (params), so each test picks its input."""

from __future__ import annotations

import datetime

from airflow.sdk import DAG, Asset, Param

from airflow_mlops.operators.train import TrainOperator

MODEL_ASSET = Asset("mlops://models/test-trained")

with DAG(
    "test_train_model",
    schedule=None,
    start_date=datetime.datetime(2024, 1, 1),
    catchup=False,
    render_template_as_native_obj=True,
    params={
        "model_name": Param("bc", type="string"),
        "data": Param(None, type=["null", "string"]),
        "dvc_path": Param(None, type=["null", "string"]),
        "target": Param("target", type="string"),
        "estimator": Param(None, type=["null", "string"]),
        "estimator_params": Param({}, type="object"),
        "candidates": Param(None, type=["null", "array"]),
    },
) as dag:
    TrainOperator(
        task_id="train",
        registered_model_name="{{ params.model_name }}",
        data="{{ params.data }}",
        dvc_path="{{ params.dvc_path }}",
        target="{{ params.target }}",
        estimator="{{ params.estimator }}",
        estimator_params="{{ params.estimator_params }}",
        candidates="{{ params.candidates }}",
        outlets=[MODEL_ASSET],
    )
