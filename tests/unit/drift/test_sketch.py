"""Bounded current summaries: exact while small, then a KLL sketch (Apache DataSketches), mergeable.

Stated behaviour: up to ``exact_limit`` values per numeric column every score equals the raw one (any
chunking or merge order); past it the column is a KLL sketch whose rank error widens the KS test, so
a sketched verdict is never more confident than the data allows; numeric columns with few distinct
values and categorical columns keep exact counts; a categorical column with more distinct values than
``max_categories`` is refused with a message naming it.
"""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest

from airflow_mlops.core.drift import DriftConfig, detect_drift
from airflow_mlops.core.drift import stattests as st
from airflow_mlops.core.drift.current import (
    KLL_K,
    NumericSummary,
    TableSummary,
    summarize_frame,
)
from airflow_mlops.core.errors import MlopsInputError

KINDS = {"x": "numeric", "few": "numeric", "c": "categorical"}


def _frame(n: int, seed: int, shift: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "x": rng.standard_t(4, n) + shift,
            "few": rng.integers(0, 30, n).astype(float),
            "c": rng.choice(["a", "b", "c"], n, p=[0.5, 0.3, 0.2]),
        }
    )


def _chunks(frame: pd.DataFrame, size: int) -> list[pd.DataFrame]:
    return [frame.iloc[i : i + size] for i in range(0, len(frame), size)]


def _scores(report) -> list[tuple[str, str, float, bool]]:
    return [(c.column, c.test, c.score, c.drifted) for c in report.columns]


def test_exact_summaries_merge_to_the_raw_result_in_any_order() -> None:
    ref, cur = _frame(5000, 0), _frame(40_000, 1, 0.05)
    whole = _scores(detect_drift(ref, summarize_frame(cur, KINDS)))
    summaries = []
    for c in _chunks(cur, 7000):
        s = TableSummary(KINDS)
        s.add(c)
        summaries.append(pickle.loads(pickle.dumps(s)))  # as a Dask worker sends it
    merged = TableSummary(KINDS)
    for s in reversed(summaries):
        merged.merge(s)
    assert _scores(detect_drift(ref, merged.finish())) == whole


def test_past_the_limit_a_column_is_a_bounded_sketch_with_exact_counts_for_few_values() -> None:
    ref, cur = _frame(20_000, 0), _frame(60_000, 1)
    exact = detect_drift(ref, summarize_frame(cur, KINDS), DriftConfig(num_method="ks"))
    acc = TableSummary(KINDS, exact_limit=10_000)
    for c in _chunks(cur, 5000):
        acc.add(c)
    x = acc.numeric["x"]
    assert not x.exact and x.n == 60_000 and x.sketch.num_retained < 4 * KLL_K
    assert x.counts is None and acc.numeric["few"].counts is not None  # 30 values: still counted
    sketched = detect_drift(ref, acc.finish(), DriftConfig(num_method="ks"))
    by = {c.column: c for c in sketched.columns}
    ex = {c.column: c for c in exact.columns}
    assert by["few"].score == ex["few"].score  # exact value counts: the same p-value
    assert by["c"].score == ex["c"].score
    assert by["x"].drifted == ex["x"].drifted is False


def test_a_sketch_pickles_and_merges_like_one_sketch() -> None:
    rng = np.random.default_rng(3)
    a, b = NumericSummary(limit=0), NumericSummary(limit=0)
    a.add(rng.normal(0, 1, 30_000))
    b.add(rng.normal(0, 1, 30_000))
    b = pickle.loads(pickle.dumps(b))
    a.merge(b)
    d = a.dist()
    assert d.n == 60_000 and 0 < d.rank_error < 0.01
    assert float(d.cdf_at(np.array([0.0]))[0]) == pytest.approx(0.5, abs=0.01)


def test_ks_on_a_sketch_widens_the_threshold_by_the_rank_errors() -> None:
    """The p-value is the one of (statistic - both rank errors): never smaller than the data allows."""
    rng = np.random.default_rng(4)
    ref = st.NumericDist.from_sorted(np.sort(rng.normal(0, 1, 2000)))
    s = NumericSummary(limit=0)
    s.add(rng.normal(0.02, 1, 200_000))
    cur = s.dist()
    stat = st.ks_statistic(ref, cur)
    assert st.ks(ref, cur) == pytest.approx(st.ks_pvalue(max(stat - cur.rank_error, 0), ref.n, cur.n))
    assert st.ks(ref, cur) >= st.ks_pvalue(stat, ref.n, cur.n)


@pytest.mark.parametrize("shift", [0.0, 0.5])
def test_sketched_verdicts_follow_the_data(shift: float) -> None:
    ref, cur = _frame(3000, 5), _frame(50_000, 6, shift)
    acc = TableSummary(KINDS, exact_limit=0)
    for c in _chunks(cur, 10_000):
        acc.add(c)
    report = detect_drift(ref, acc.finish(), DriftConfig(per_column_method={"x": "ks"}))
    assert {c.column: c.drifted for c in report.columns}["x"] is (shift > 0)


def test_a_categorical_column_with_too_many_values_is_refused_by_name() -> None:
    frame = pd.DataFrame({"id": [f"u{i}" for i in range(2000)]})
    acc = TableSummary({"id": "categorical"}, max_categories=1000)
    with pytest.raises(MlopsInputError, match="Column 'id' has more than 1,000 distinct values"):
        acc.add(frame)


def test_value_counts_past_the_switch_are_kept_exactly_while_few_and_dropped_once_many():
    """In sketch mode a chunk's distinct values are counted only while there are at most
    MAX_EXACT_VALUES; a prefix that already has more settles it, one that has fewer does not."""
    from airflow_mlops.core.drift.current import MAX_EXACT_VALUES, NumericSummary

    rng = np.random.default_rng(3)
    few = NumericSummary(limit=0)
    chunk = rng.integers(0, 500, 20_000).astype(np.float64)
    few.add(chunk)
    few.add(chunk)
    values, n = np.unique(chunk, return_counts=True)
    assert few.counts == {float(v): 2 * int(c) for v, c in zip(values, n, strict=True)}

    many = NumericSummary(limit=0)
    many.add(rng.normal(size=20_000))
    assert many.counts is None
    # Few distinct values in the prefix, many after it: still too many.
    late = NumericSummary(limit=0)
    head = np.zeros(4 * MAX_EXACT_VALUES)
    late.add(np.concatenate([head, rng.normal(size=5_000)]))
    assert late.counts is None


def test_the_callers_frames_are_never_changed():
    """Float columns are read as views (no copy): every test must still leave the data as it was."""
    rng = np.random.default_rng(5)
    ref = pd.DataFrame({"x": rng.normal(size=3000), "y": rng.normal(size=3000)})
    cur = pd.DataFrame({"x": rng.normal(0.3, 1, size=2000), "y": np.r_[rng.normal(size=1999), np.nan]})
    before = ref.copy(), cur.copy()
    for method in ("ks", "wasserstein", "psi", "jensenshannon"):
        detect_drift(ref, cur, DriftConfig(num_method=method))
        assert summarize_frame(cur, {"x": "numeric", "y": "numeric"}).columns["x"].dist is not None
    pd.testing.assert_frame_equal(ref, before[0])
    pd.testing.assert_frame_equal(cur, before[1])
