"""skops trust: a fixed allow-list decides which types a model file may hold, never the file itself.

Real skops files of real scikit-learn pipelines; the smuggling one carries ``os.system`` in a
FunctionTransformer and lists it as trusted in its MLmodel file, the way a crafted model would.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from airflow_mlops.core import skops_trust
from airflow_mlops.core.errors import MlopsInputError


def _pipeline(func=None):
    """A fitted LogisticRegression pipeline, or (``func`` given) a pipeline of one FunctionTransformer."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    if func is not None:
        return make_pipeline(FunctionTransformer(func))
    return make_pipeline(LogisticRegression()).fit(np.arange(20.0).reshape(10, 2), np.array([0, 1] * 5))


def _dump(model, path: Path) -> Path:
    import skops.io as sio

    sio.dump(model, path)
    return path


def test_foreign_types_are_those_outside_the_allow_list():
    kinds = ["sklearn.tree._tree.Tree", "numpy.dtype", "scipy.sparse._csr.csr_matrix", "posix.system"]
    assert skops_trust.foreign_types([*kinds, "airflow_mlops.x.Y", "sklearnx.Evil"]) == [
        "posix.system",
        "sklearnx.Evil",
    ]


def test_a_plain_pipeline_loads_and_predicts(tmp_path):
    model = _pipeline()
    loaded = skops_trust.load(_dump(model, tmp_path / "m.skops"), "models:/bc/1")
    assert (loaded.predict([[0.0, 1.0]]) == model.predict([[0.0, 1.0]])).all()


def test_a_smuggled_type_is_refused_with_its_name(tmp_path):
    path = _dump(_pipeline(func=os.system), tmp_path / "evil.skops")
    with pytest.raises(MlopsInputError) as e:
        skops_trust.load(path, "models:/bc/6")
    msg = str(e.value)
    assert "models:/bc/6" in msg and f"{os.system.__module__}.system" in msg and "cloudpickle" in msg


def test_the_gateway_loader_ignores_the_trusted_types_the_mlmodel_file_lists(tmp_path):
    """A model logged with MLflow (local sqlite store) whose MLmodel file trusts os.system."""
    import mlflow
    import mlflow.sklearn

    from airflow_mlops.core.tracking import MlflowTarget
    from airflow_mlops.serving.models import ModelLoader

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    target = MlflowTarget(uri, artifact_location=str(tmp_path / "artifacts"))
    with target.activate():
        mlflow.set_experiment("skops")
        smuggled = f"{os.system.__module__}.system"
        mlflow.sklearn.log_model(
            _pipeline(func=os.system),
            name="model",
            serialization_format="skops",
            skops_trusted_types=[smuggled],
            registered_model_name="evil",
            pip_requirements=["scikit-learn"],
        )
    with pytest.raises(MlopsInputError, match=smuggled.replace(".", r"\.")):
        ModelLoader(target).load("evil", "1")
