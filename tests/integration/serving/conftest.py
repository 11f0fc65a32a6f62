"""Gateway integration fixtures: real model versions on the session's MLflow server."""

from __future__ import annotations

import uuid

import pytest

from tests.models import register_versions

ADMIN_TOKEN = "integration-admin-token-51c9"


@pytest.fixture(scope="module")
def bc_versions(mlflow_server: str) -> dict:
    """Two registered LogisticRegression versions of a fresh model on breast_cancer, ``@champion`` -> 1.

    Version 2 is regularised hard, so the two disagree on some rows. Returns ``name``, ``versions``,
    ``records`` (feature dicts) and ``labels``.
    """
    from mlflow import MlflowClient
    from sklearn.datasets import load_breast_cancer

    frame = load_breast_cancer(as_frame=True).frame
    name = f"gateway-bc-{uuid.uuid4().hex[:6]}"
    versions = register_versions(mlflow_server, name, [{"C": 1.0}, {"C": 0.0005}], f"gateway-tests-{name}")
    MlflowClient(mlflow_server, mlflow_server).set_registered_model_alias(name, "champion", versions[0])
    features = frame.drop(columns="target")
    return {
        "name": name,
        "versions": versions,
        "records": features.to_dict(orient="records"),
        "labels": frame["target"].tolist(),
    }
