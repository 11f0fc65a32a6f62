"""Gateway integration fixtures: real model versions on the session's MLflow server."""

from __future__ import annotations

import uuid

import pytest

from airflow_mlops.core.tracking import MlflowTarget

ADMIN_TOKEN = "integration-admin-token-51c9"


@pytest.fixture(scope="module")
def bc_versions(mlflow_server: str) -> dict:
    """Two registered LogisticRegression versions of a fresh model on breast_cancer, ``@champion`` -> 1.

    Version 2 is regularised hard, so the two disagree on some rows. Returns ``name``, ``versions``,
    ``records`` (feature dicts) and ``labels``.
    """
    from mlflow import MlflowClient
    from sklearn.datasets import load_breast_cancer

    from airflow_mlops.core.model_logging import DatasetInfo, ensure_experiment, log_model_run
    from airflow_mlops.core.training import Candidate, train_model

    frame = load_breast_cancer(as_frame=True).frame
    name = f"gateway-bc-{uuid.uuid4().hex[:6]}"
    versions = []
    with MlflowTarget(mlflow_server).activate():
        eid = ensure_experiment(f"gateway-tests-{name}")
        for c in (1.0, 0.0005):
            outcome = train_model(
                frame,
                "target",
                [Candidate("sklearn.linear_model.LogisticRegression", {"C": c, "max_iter": 500})],
            )
            info = log_model_run(
                outcome,
                model_name=name,
                experiment_id=eid,
                dataset=DatasetInfo(frame, "/data/breast_cancer.csv"),
            )
            versions.append(info["version"])
    MlflowClient(mlflow_server, mlflow_server).set_registered_model_alias(name, "champion", versions[0])
    features = frame.drop(columns="target")
    return {
        "name": name,
        "versions": versions,
        "records": features.to_dict(orient="records"),
        "labels": frame["target"].tolist(),
    }
