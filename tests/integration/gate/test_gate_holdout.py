"""The holdout source: both models re-scored on the same data (a file, or a DVC path@rev) with the
training metric functions, on a real MLflow server and a real git+DVC repo."""

from __future__ import annotations

import uuid

import pytest

from airflow_mlops.core.errors import MlopsInputError
from airflow_mlops.core.gate import FAILED, PASSED, run_gate
from airflow_mlops.core.tracking import MlflowTarget
from tests.integration.gate.conftest import make_version

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def split_models(mlflow_server):
    """Two classifiers trained on different splits (so their logged metrics are not comparable)."""
    name = f"holdout-{uuid.uuid4().hex[:6]}"
    v1 = make_version(
        mlflow_server, name, "sklearn.dummy.DummyClassifier", {"strategy": "prior"}, test_size=0.3
    )
    v2 = make_version(mlflow_server, name, "sklearn.linear_model.LogisticRegression", {"max_iter": 500})
    return name, v1, v2


@pytest.fixture
def holdout_csv(tmp_path):
    from sklearn.datasets import load_breast_cancer

    frame = load_breast_cancer(as_frame=True).frame.sample(150, random_state=7)
    path = tmp_path / "holdout.csv"
    frame.to_csv(path, index=False)
    return path, frame


def _f1_by_hand(tracking_uri: str, name: str, version: str, frame) -> float:
    import mlflow
    from sklearn.metrics import f1_score

    with MlflowTarget(tracking_uri).activate():
        model = mlflow.sklearn.load_model(f"models:/{name}/{version}")
    return float(f1_score(frame["target"], model.predict(frame.drop(columns="target")), pos_label=1))


def test_both_models_scored_on_the_same_file(split_models, holdout_csv, mlflow_server, mlflow_client):
    name, _v1, _v2 = split_models
    path, frame = holdout_csv
    mlflow_client.set_registered_model_alias(name, "champion", "1")
    spec = {"name": "holdout", "source": {"kind": "holdout", "path": str(path), "target": "target"},
            "rules": [{"metric": "f1", "min": 0.9, "min_change": 0.05, "min_samples": 100},
                      {"metric": "log_loss", "max": 1.0}]}  # fmt: skip
    verdict = run_gate(spec, name, "2", MlflowTarget(mlflow_server))
    assert verdict.status == PASSED, verdict.table()
    change = next(r for r in verdict.rows if r.check == "min_change")
    assert change.candidate == pytest.approx(_f1_by_hand(mlflow_server, name, "2", frame))
    assert change.baseline == pytest.approx(_f1_by_hand(mlflow_server, name, "1", frame))
    samples = next(r for r in verdict.rows if r.check == "min_samples")
    assert samples.observed == 150
    # Offline evidence cannot grow: too few rows is a decided failure, not a wait.
    strict = {**spec, "rules": [{"metric": "f1", "min": 0.5, "min_samples": 500}]}
    assert run_gate(strict, name, "2", MlflowTarget(mlflow_server)).status == FAILED


def test_holdout_without_the_target_or_with_a_regression_metric_is_bad_input(
    split_models, holdout_csv, mlflow_server
):
    name, _v1, _v2 = split_models
    path, _frame = holdout_csv
    spec = {"name": "h", "source": {"kind": "holdout", "path": str(path), "target": "label"},
            "rules": [{"metric": "f1", "min": 0.5}]}  # fmt: skip
    with pytest.raises(MlopsInputError, match="no target column 'label'"):
        run_gate(spec, name, "2", MlflowTarget(mlflow_server))
    spec["source"]["target"] = "target"
    spec["rules"] = [{"metric": "rmse", "max": 1}]
    with pytest.raises(MlopsInputError, match="not defined for this classification model"):
        run_gate(spec, name, "2", MlflowTarget(mlflow_server))
    spec["source"]["path"] = str(path.with_name("missing.csv"))
    with pytest.raises(MlopsInputError, match="does not exist"):
        run_gate(spec, name, "2", MlflowTarget(mlflow_server))


def test_holdout_from_dvc_path_at_rev(split_models, dvc_repo, mlflow_conn, mlflow_server, mlflow_client):
    """Through the DVC connection (as the sensor does) and through a repo named in the spec (as the CLI does)."""
    from airflow_mlops.triggers.validation_gate import evaluate_gate

    name, _v1, _v2 = split_models
    mlflow_client.set_registered_model_alias(name, "champion", "1")
    source = {"kind": "holdout", "path": dvc_repo["data_path"], "rev": dvc_repo["rev"], "target": "target"}
    spec = {"name": "dvc", "source": source, "rules": [{"metric": "accuracy", "min_change": 0.1}]}
    verdict = evaluate_gate(spec, name, "2")
    assert verdict.status == PASSED, verdict.table()
    assert verdict.rows[0].candidate > 0.9 and verdict.rows[0].baseline < 0.7
    direct = run_gate({**spec, "source": {**source, "repo": str(dvc_repo["path"])}}, name, "2",
                      MlflowTarget(mlflow_server))  # fmt: skip
    assert direct.rows[0].candidate == pytest.approx(verdict.rows[0].candidate)
    bad_rev = {**spec, "source": {**source, "rev": "0" * 40}}
    with pytest.raises(MlopsInputError):
        evaluate_gate(bad_rev, name, "2")


def test_slices_on_the_holdout_compare_each_slice_with_the_champion(
    split_models, holdout_csv, mlflow_server, mlflow_client
):
    """Both real models scored per slice of the same holdout; every slice is in the table."""
    import mlflow
    from sklearn.metrics import accuracy_score

    name, _v1, _v2 = split_models
    path, frame = holdout_csv
    mlflow_client.set_registered_model_alias(name, "champion", "1")
    slices = ["`mean radius` >= 15", "`mean texture` < 20 and `mean radius` < 15"]
    spec = {"name": "sliced", "source": {"kind": "holdout", "path": str(path), "target": "target"},
            "rules": [{"metric": "accuracy", "min": 0.9, "slices": {"by": slices, "min_samples": 20,
                                                                     "min": 0.85, "min_change": 0.0, "max_gap": 0.2}}]}  # fmt: skip
    verdict = run_gate(spec, name, "2", MlflowTarget(mlflow_server))
    assert verdict.status == PASSED, verdict.table()
    with MlflowTarget(mlflow_server).activate():
        model = mlflow.sklearn.load_model(f"models:/{name}/2")
    big = frame[frame["mean radius"] >= 15]
    row = next(r for r in verdict.rows if r.slice == slices[0] and r.check == "slice_min")
    features = frame.drop(columns="target")
    assert row.candidate == pytest.approx(
        accuracy_score(big["target"], model.predict(features.loc[big.index]))
    )
    changes = [r for r in verdict.rows if r.check == "slice_min_change"]
    assert {r.slice for r in changes} == set(slices) and all(r.baseline is not None for r in changes)
    assert any(r.check == "worst_slice_gap" for r in verdict.rows)
    for s in slices:
        assert s in verdict.table()
