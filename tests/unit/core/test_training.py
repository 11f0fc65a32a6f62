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
