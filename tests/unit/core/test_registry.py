"""compare_and_set_alias against a real MLflow registry (a local sqlite store, faster to start than a
server): a moved alias is a package conflict error."""

from __future__ import annotations

import pytest

from airflow_mlops.core.errors import MlopsConflictError, MlopsServiceError
from airflow_mlops.core.registry import AliasConflictError, alias_version, compare_and_set_alias


def test_a_moved_alias_raises_the_package_conflict_error_and_changes_nothing(tmp_path):
    from mlflow import MlflowClient

    mlflow_client, model_name = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db"), "bc"
    mlflow_client.create_registered_model(model_name)
    for i in range(3):
        mlflow_client.create_model_version(model_name, source=str(tmp_path / f"model-{i}"))
    compare_and_set_alias(mlflow_client, model_name, "champion", 1, None)
    compare_and_set_alias(mlflow_client, model_name, "champion", 1, None)  # an idempotent retry
    with pytest.raises(AliasConflictError) as e:
        compare_and_set_alias(mlflow_client, model_name, "champion", 3, 2)
    assert isinstance(e.value, MlopsConflictError) and not isinstance(e.value, MlopsServiceError)
    assert "points to version 1, not 2" in str(e.value)
    assert alias_version(mlflow_client, model_name, "champion") == "1"
