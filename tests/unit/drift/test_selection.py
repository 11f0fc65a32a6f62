"""Default test per column, as Evidently 0.7's DataDriftPreset picks it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from airflow_mlops.core.drift import DriftConfig, detect_drift
from airflow_mlops.core.drift.columns import CATEGORICAL, NUMERIC, column_kind
from airflow_mlops.core.drift.selection import default_test
from airflow_mlops.core.errors import MlopsInputError


@pytest.mark.parametrize(
    ("kind", "n_ref", "n_values", "expected"),
    [
        (NUMERIC, 1000, 6, "ks"),
        (NUMERIC, 1000, 5, "chisquare"),
        (NUMERIC, 1000, 3, "chisquare"),
        (NUMERIC, 1000, 2, "z"),
        (CATEGORICAL, 10, 3, "chisquare"),
        (CATEGORICAL, 10, 2, "z"),
        (NUMERIC, 1001, 6, "wasserstein"),
        (NUMERIC, 1001, 5, "jensenshannon"),
        (CATEGORICAL, 1001, 50, "jensenshannon"),
    ],
)
def test_default_test(kind: str, n_ref: int, n_values: int, expected: str) -> None:
    assert default_test(kind, n_ref, n_values) == expected


def test_column_kinds_follow_evidently_inference() -> None:
    assert column_kind(pd.Series([1.0, 2.0])) == NUMERIC
    assert column_kind(pd.Series(range(10))) == CATEGORICAL  # int with <= 10 distinct values
    assert column_kind(pd.Series(range(11))) == NUMERIC
    assert column_kind(pd.Series(["a", "b"])) == CATEGORICAL
    assert column_kind(pd.Series([True, False])) == CATEGORICAL


def test_counts_of_both_sides_decide_the_test() -> None:
    # Reference has 2 values, current brings a third: chi-square, not Z (union of values counts).
    ref = pd.DataFrame({"c": ["a", "b"] * 50})
    cur = pd.DataFrame({"c": ["a", "b", "c"] * 20})
    assert detect_drift(ref, cur).columns[0].test == "chisquare"


def test_overrides_per_column_then_kind_then_global() -> None:
    rng = np.random.default_rng(0)
    ref = pd.DataFrame(
        {"x": rng.normal(size=500), "y": rng.normal(size=500), "c": rng.choice(list("ab"), 500)}
    )
    cfg = DriftConfig(
        method="psi", num_method="wasserstein", per_column_method={"x": "ks"}, num_threshold=0.2
    )
    rep = detect_drift(ref, ref, cfg)
    tests = {c.column: (c.test, c.threshold) for c in rep.columns}
    assert tests == {"x": ("ks", 0.2), "y": ("wasserstein", 0.2), "c": ("psi", 0.1)}


def test_a_test_that_does_not_fit_the_column_is_refused() -> None:
    ref = pd.DataFrame({"c": list("abc") * 10})
    with pytest.raises(MlopsInputError, match="does not apply to categorical column 'c'"):
        detect_drift(ref, ref, DriftConfig(per_column_method={"c": "ks"}))
    with pytest.raises(MlopsInputError, match="Unknown drift test 'foo'"):
        detect_drift(ref, ref, DriftConfig(method="foo"))
