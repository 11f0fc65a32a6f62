"""Fitted breast_cancer models wrapped as the gateway loads them (signature and input example from
MLflow's own inference), without a registry: registry loading is covered in tests/integration/serving."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_mlops.serving.models import LoadedModel, columns_from_signature


def wrap(outcome: Any, name: str = "bc", version: str = "1") -> LoadedModel:
    """A LoadedModel built the way ModelLoader builds one, from a training outcome."""
    from mlflow.models import infer_signature

    example = outcome.X_train.head(5)
    signature = infer_signature(example, outcome.model.predict(example))
    return LoadedModel(
        name=name,
        version=version,
        estimator=outcome.model,
        columns=columns_from_signature(signature),
        input_example=example.to_dict(orient="records"),
    )


@pytest.fixture(scope="session")
def bc_frame():
    from sklearn.datasets import load_breast_cancer

    return load_breast_cancer(as_frame=True).frame


@pytest.fixture(scope="session")
def bc_outcomes(bc_frame):
    """Two LogisticRegression pipelines that disagree on some rows (strong vs weak regularisation)."""
    from airflow_mlops.core.training import Candidate, train_model

    return [
        train_model(bc_frame, "target", [Candidate("sklearn.linear_model.LogisticRegression", {"C": c})])
        for c in (1.0, 0.0005)
    ]


@pytest.fixture(scope="session")
def bc_models(bc_outcomes) -> dict[str, LoadedModel]:
    """Versions "1" and "2" of model "bc"."""
    return {str(i + 1): wrap(o, version=str(i + 1)) for i, o in enumerate(bc_outcomes)}


@pytest.fixture(scope="session")
def bc_records(bc_frame) -> list[dict[str, Any]]:
    """Feature records (no target) of the whole data set, in order."""
    return bc_frame.drop(columns="target").to_dict(orient="records")
