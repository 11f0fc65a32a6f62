"""Categorical columns with more categories than a profile keeps (10,000): the dropped tail is one
'other' bucket, never "categories never seen in the reference".

Stated behaviour, measured on a Zipf-like column of 50,000 categories (1M reference rows; the stable
current data is drawn from the reference, so none of its categories is new): on a stable column the
profile's Jensen-Shannon, PSI and chi-square verdicts are "no drift", and its statistic is
no larger than the raw reference's (pooling the tail removes the noise of its rare categories); a real
shift (the top 200 categories swapped with ranks 5000-5200) drifts on all three.
"""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd
import pytest

from airflow_mlops.core.drift import DriftConfig, build_profile, detect_drift, dump_profile, load_profile
from airflow_mlops.core.drift.columns import OTHER, categorical_dist
from airflow_mlops.core.drift.profile import CategoryFilter, reference_columns_from_profile

K = 50_000
NAMES = np.array([f"c{i}" for i in range(K)], dtype=object)
P = 1.0 / np.arange(1, K + 1)
P /= P.sum()


def _sample(n: int, probs: np.ndarray, seed: int) -> pd.DataFrame:
    codes = np.random.default_rng(seed).choice(K, size=n, p=probs)
    return pd.DataFrame({"cat": pd.Categorical.from_codes(codes, categories=NAMES)})


@functools.cache
def _reference() -> tuple[pd.DataFrame, dict]:
    ref = _sample(1_000_000, P, 0)
    return ref, load_profile(dump_profile(build_profile(ref)))


def _shifted() -> np.ndarray:
    p = P.copy()
    p[:200], p[5000:5200] = P[5000:5200], P[:200]
    return p


@pytest.mark.parametrize(("method", "n_current"), [("jensenshannon", 500_000), ("psi", 500_000),
                                                   ("chisquare", 20_000)])  # fmt: skip
def test_a_stable_column_with_50k_categories_does_not_drift_and_a_shift_does(method, n_current):
    ref, profile = _reference()
    col = profile["columns"]["cat"]
    assert len(col["categories"]) == 10_000 and col["dropped"] > 0 and col["dropped_categories"] > 30_000
    config = DriftConfig(method=method)
    # Stable: drawn from the reference itself (a category absent from the reference would be new).
    stable = ref.sample(n_current, replace=True, random_state=1, ignore_index=True)
    res = detect_drift(profile, stable, config).columns[0]
    raw = detect_drift(ref, stable, config).columns[0]
    assert not res.drifted, (res.score, res.note)
    assert "never seen" not in res.note and "'other' bucket" in res.note
    if method != "chisquare":  # distances: pooled tail, less noise than the raw reference
        assert res.score <= raw.score + 1e-9
    shifted = detect_drift(profile, _sample(n_current, _shifted(), 2), config).columns[0]
    assert shifted.drifted, shifted.score


def test_new_categories_are_still_new_and_dropped_ones_are_pooled():
    _, profile = _reference()
    ref = reference_columns_from_profile(profile)["cat"]
    kept = {k for k in ref.dist.counts if k is not OTHER}
    dropped = next(n for n in NAMES[::-1] if n not in kept)
    frame = pd.DataFrame({"cat": ["c0"] * 50 + [dropped] * 5 + ["brand-new"] * 3})
    pooled = ref.pool_current(categorical_dist(frame["cat"])[0])
    assert pooled.counts == {"c0": 50, OTHER: 5, "brand-new": 3}
    note = detect_drift(profile, frame, DriftConfig(method="jensenshannon")).columns[0].note
    assert "1 categories never seen in the reference (e.g. ['brand-new'])" in note


def test_a_profile_without_the_dropped_filter_pools_everything_outside_the_kept():
    """Profiles written before the filter existed: nothing outside the kept categories is called new."""
    _, profile = _reference()
    old = {**profile, "columns": {"cat": {k: v for k, v in profile["columns"]["cat"].items()
                                          if k not in ("dropped_filter", "dropped_categories")}}}  # fmt: skip
    stable = _reference()[0].sample(500_000, replace=True, random_state=3, ignore_index=True)
    res = detect_drift(old, stable, DriftConfig(method="jensenshannon")).columns[0]
    assert not res.drifted and "never seen" not in res.note


def test_the_category_filter_has_no_false_negatives_and_few_false_positives():
    members = [f"m{i}" for i in range(20_000)] + list(range(5000))
    f = CategoryFilter.from_dict(CategoryFilter.build(members).to_dict())
    assert all(f.contains(members))
    assert f.contains([1.0, 2.0]) == [True, True]  # 1.0 is the category 1, as in a dict
    strangers = [f"s{i}" for i in range(20_000)]
    assert sum(f.contains(strangers)) / len(strangers) < 0.005


def test_unused_categories_of_a_pandas_categorical_are_not_values():
    """pandas lists a Categorical's unused categories with count 0; counted as values they made the
    chi-square p-value NaN (0/0), which reads as "no drift" even for a category never seen before."""
    cats = ["a", "b", "c", "unused"]
    ref = pd.DataFrame({"cat": pd.Categorical(["a"] * 50 + ["b"] * 50, categories=cats)})
    cur = pd.DataFrame({"cat": pd.Categorical(["a"] * 40 + ["b"] * 40 + ["c"] * 20, categories=cats)})
    res = detect_drift(ref, cur, DriftConfig(method="chisquare")).columns[0]
    assert res.score == 0.0 and res.drifted and "never seen" in res.note
    assert [k for k, _ in build_profile(ref)["columns"]["cat"]["categories"]] == ["a", "b"]
