"""Fresh production rows (``RowGenerator``): never a row of the data they are drawn like, never repeated,
distributed like it (marginals, classes, correlations)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import ks_2samp
from sklearn.datasets import load_breast_cancer, load_diabetes

from airflow_mlops.core.errors import MlopsInputError
from airflow_mlops.simulator import RowGenerator


def _rows(frame: pd.DataFrame) -> set[tuple]:
    return set(map(tuple, frame.round(6).itertuples(index=False)))


def test_rows_are_new_never_repeated_and_distributed_like_the_data():
    data = load_breast_cancer(as_frame=True).frame
    drawn = RowGenerator(data, "target", seed=3).sample(1000)
    assert list(drawn.columns) == list(data.columns) and len(drawn) == 1000
    assert not _rows(drawn) & _rows(data)  # no row of the data comes back
    assert not drawn.round(6).duplicated().any()
    assert abs(drawn["target"].mean() - data["target"].mean()) < 0.05
    for column in ("mean radius", "worst area", "mean texture"):
        assert ks_2samp(drawn[column], data[column]).pvalue > 0.01, column
        assert data[column].min() <= drawn[column].min() and drawn[column].max() <= data[column].max()
    # Within a class, correlated columns stay correlated.
    malignant = drawn[drawn["target"] == 0]
    assert np.corrcoef(malignant["mean radius"], malignant["mean area"])[0, 1] > 0.8


def test_the_same_seed_draws_the_same_rows_and_successive_draws_differ():
    data = load_breast_cancer(as_frame=True).frame
    a, b = RowGenerator(data, "target", seed=5), RowGenerator(data, "target", seed=5)
    first = a.sample(50)
    pd.testing.assert_frame_equal(first, b.sample(50))
    assert not _rows(first) & _rows(a.sample(50))


def test_a_continuous_target_is_drawn_with_the_features():
    data = load_diabetes(as_frame=True).frame
    drawn = RowGenerator(data, "target", seed=1).sample(400)
    assert ks_2samp(drawn["target"], data["target"]).pvalue > 0.01
    assert np.corrcoef(drawn["bmi"], drawn["target"])[0, 1] > 0.3  # bmi predicts progression in the data
    assert not _rows(drawn) & _rows(data)


def test_bad_input_names_the_fix():
    data = load_breast_cancer(as_frame=True).frame.head(40)
    with pytest.raises(MlopsInputError, match="Target column 'label'"):
        RowGenerator(data, "label")
    with pytest.raises(MlopsInputError, match="numeric feature columns.*colour"):
        RowGenerator(data.assign(colour="red"), "target")
    with pytest.raises(MlopsInputError, match="at least 2"):
        RowGenerator(pd.concat([data[data["target"] == 1], data[data["target"] == 0].head(1)]), "target")
