"""Core training on real scikit-learn datasets: task detection, preprocessing, selection, errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes

from airflow_mlops.core.errors import MlopsInputError
from airflow_mlops.core.training import Candidate, detect_task, train_model


def test_detect_task():
    assert detect_task(pd.Series([0, 1, 1])) == "classification"
    assert detect_task(pd.Series(["a", "b"])) == "classification"
    assert detect_task(pd.Series(np.linspace(0, 1, 50))) == "regression"
    assert detect_task(pd.Series(range(500))) == "regression"


def test_regression_metrics_on_diabetes():
    df = load_diabetes(as_frame=True).frame
    out = train_model(df, "target", [Candidate("sklearn.linear_model.Ridge", {"alpha": 1.0})])
    assert out.task == "regression"
    assert set(out.metrics) == {"rmse", "mae", "r2"}
    assert 0.2 < out.metrics["r2"] < 0.7 and out.metrics["rmse"] > out.metrics["mae"]


def test_raw_categorical_and_missing_values_are_handled_by_the_pipeline():
    rng = np.random.default_rng(0)
    n = 400
    color = rng.choice(["red", "green", "blue"], n)
    x = rng.normal(size=n)
    x[::7] = np.nan
    y = ((color == "red") | (np.nan_to_num(x) > 1)).astype(int)
    df = pd.DataFrame({"color": color, "x": x, "mixed": pd.Series(["a", 1] * (n // 2), dtype=object), "y": y})
    out = train_model(df, "y", [Candidate("sklearn.linear_model.LogisticRegression")])
    assert out.metrics["accuracy"] > 0.85
    # Unseen category and NaN at predict time: the logged pipeline takes raw columns.
    pred = out.model.predict(pd.DataFrame({"color": ["purple"], "x": [np.nan], "mixed": ["a"]}))
    assert pred.shape == (1,)


def test_selection_does_not_use_the_test_split():
    df = load_breast_cancer(as_frame=True).frame
    cands = [
        Candidate("sklearn.dummy.DummyClassifier"),
        Candidate("sklearn.linear_model.LogisticRegression", {"max_iter": 500}),
    ]
    out = train_model(df, "target", cands)
    assert out.candidate.estimator.endswith("LogisticRegression")
    assert len(out.candidate_scores) == 2 and all("val_f1" in s for s in out.candidate_scores)
    assert len(out.X_test) == round(0.2 * len(df))


@pytest.mark.parametrize(
    ("frame", "kwargs", "message"),
    [
        (pd.DataFrame({"x": [1.0, 2.0], "y": [0, 1]}).head(0), {}, "no rows"),
        (pd.DataFrame({"x": [1.0, 2.0], "y": [0, 1]}), {"target": "z"}, "Target column 'z'"),
        (pd.DataFrame({"x": range(10), "y": [1] * 10}), {}, "single class"),
        (pd.DataFrame({"x": range(10), "y": [0, 1] * 4 + [None, 1]}), {}, "missing values"),
        (pd.DataFrame({"x": [[1], [2]] * 5, "y": [0, 1] * 5}), {}, "cannot be encoded"),
        (pd.DataFrame({"x": range(10), "y": [0, 1] * 5}), {"features": ["nope"]}, "not in the data"),
        (pd.DataFrame({"x": range(10), "y": [0, 1] * 5}), {"task": "ranking"}, "Unknown task"),
    ],
)
def test_bad_frames(frame, kwargs, message):
    kwargs = {"target": "y", **kwargs}
    with pytest.raises(MlopsInputError, match=message):
        train_model(
            frame, kwargs.pop("target"), [Candidate("sklearn.linear_model.LogisticRegression")], **kwargs
        )


def test_bad_estimators():
    df = pd.DataFrame({"x": range(20), "y": [0, 1] * 10})
    with pytest.raises(MlopsInputError, match="cannot be imported"):
        train_model(df, "y", [Candidate("os.path")])
    with pytest.raises(MlopsInputError, match="rejects params"):
        train_model(df, "y", [Candidate("sklearn.linear_model.LogisticRegression", {"nope": 1})])
    with pytest.raises(MlopsInputError, match="unknown keys"):
        Candidate.parse({"estimator": "x", "parms": {}})


def _noisy(n: int = 200, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    y = ((x1 + x2 + rng.normal(scale=0.7, size=n)) > 0).astype(int)
    return pd.DataFrame({"x1": x1, "x2": x2, "c": rng.choice(list("abc"), n), "y": y})


@pytest.mark.parametrize(
    ("make", "how"),
    [
        (lambda f: f.y, "identical to the target"),
        (lambda f: f.y.map({0: "no", 1: "yes"}), "one-to-one"),
        (lambda f: -3.0 * f.y + np.random.default_rng(1).random(len(f)), "threshold"),
        (
            lambda f: "k" + (f.y * 4 + np.random.default_rng(2).integers(0, 4, len(f))).astype(str),
            "same target value",
        ),
    ],
)
def test_a_feature_that_reproduces_the_target_is_refused(make, how):
    df = _noisy().assign(leak=make)
    with pytest.raises(MlopsInputError, match=rf"'leak': .*{how}.*Drop it"):
        train_model(df, "y", [Candidate("sklearn.linear_model.LogisticRegression")])
    # Allowed by name, it trains (it is the user's call).
    train_model(
        df, "y", [Candidate("sklearn.linear_model.LogisticRegression")], allow_perfect_predictors=["leak"]
    )


def test_leak_check_spares_real_and_random_data():
    """No false alarm on sklearn's datasets, nor on many random features of small, unique-valued data."""
    from sklearn.datasets import load_iris, load_wine

    from airflow_mlops.core.training import find_target_leaks

    for frame in (load_breast_cancer(as_frame=True).frame, load_wine(as_frame=True).frame,
                  load_iris(as_frame=True).frame):  # fmt: skip
        assert find_target_leaks(frame.drop(columns="target"), frame["target"], "classification") == {}
    diabetes = load_diabetes(as_frame=True).frame
    assert find_target_leaks(diabetes.drop(columns="target"), diabetes["target"], "regression") == {}
    rng = np.random.default_rng(3)
    X = pd.DataFrame(rng.normal(size=(40, 30)), columns=[f"f{i}" for i in range(30)])
    assert find_target_leaks(X, pd.Series(rng.normal(size=40)), "regression") == {}
    assert find_target_leaks(X, pd.Series(rng.integers(0, 2, 40)), "classification") == {}


def test_regression_leak_is_a_monotone_map():
    df = load_diabetes(as_frame=True).frame.assign(log_t=lambda f: np.log(f.target))
    with pytest.raises(MlopsInputError, match="'log_t': it is a monotone function"):
        train_model(df, "target", [Candidate("sklearn.linear_model.Ridge")])


@pytest.mark.parametrize(
    ("frame", "estimator", "kwargs", "message"),
    [
        (_noisy(3), None, {}, r"3 rows are too few.*test split holds 1 rows"),
        (_noisy(40).assign(y=[0] * 37 + [1] * 3), None, {}, r"fewer than 5 rows \(1: 3\)"),
        (_noisy(), "sklearn.cluster.KMeans", {}, "is a clusterer"),
        (_noisy(), "sklearn.preprocessing.StandardScaler", {}, "is a transformer"),
        (_noisy().assign(x1=lambda f: f.x1.where(f.index != 3, np.inf)), None, {}, "'x1' holds 1 infinite"),
        (_noisy().assign(e=np.nan), None, {}, "'e' has no values"),
        (
            _noisy().assign(y=lambda f: f.x1),
            "sklearn.linear_model.LogisticRegression",
            {},
            "continuous values",
        ),
        (_noisy(), "sklearn.linear_model.Ridge", {}, "only 2 distinct values"),
        (_noisy(), "sklearn.linear_model.Ridge", {"task": "classification"}, "the estimator is a regressor"),
        (_noisy(), None, {"features": ["x1", "x1"]}, "more than once"),
        (_noisy(), None, {"features": ["x1", "y"]}, "includes the target"),
        (
            _noisy().assign(y=lambda f: f.y.astype(object).where(f.index % 2 == 0, "b")),
            None,
            {},
            "mixes value types",
        ),
        (
            _noisy().assign(y=lambda f: f.x1.where(f.index != 5, np.inf)),
            None,
            {},
            "Target column 'y' holds infinite",
        ),
        (_noisy(20), None, {"test_size": 0.3}, None),  # 20 rows: 6 test, 14 train, fine
    ],
)
def test_bad_data_and_estimators_are_refused_before_fitting(frame, estimator, kwargs, message):
    cands = [Candidate(estimator)] if estimator else []
    if message is None:
        train_model(frame, "y", cands, **kwargs)
        return
    with pytest.raises(MlopsInputError, match=message):
        train_model(frame, "y", cands, **kwargs)


def test_fit_errors_name_the_parameters():
    with pytest.raises(
        MlopsInputError, match=r"failed to fit: .*penalty='l1', solver='lbfgs'.*estimator_params"
    ):
        train_model(
            _noisy(),
            "y",
            [Candidate("sklearn.linear_model.LogisticRegression", {"penalty": "l1", "solver": "lbfgs"})],
        )


def test_unknown_selection_metric_is_refused_before_fitting():
    cands = [Candidate("sklearn.linear_model.LogisticRegression"), Candidate("sklearn.dummy.DummyClassifier")]
    with pytest.raises(MlopsInputError, match="'rmse' is not a classification metric"):
        train_model(_noisy(), "y", cands, selection_metric="rmse")
