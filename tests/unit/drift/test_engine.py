"""The engine on bad and odd input: defined behaviour and clear messages, never a bare traceback."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from airflow_mlops.core.drift import DriftConfig, EmptyCurrentDataError, build_profile, detect_drift
from airflow_mlops.core.errors import MlopsInputError


@pytest.fixture
def ref() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    n = 2000
    return pd.DataFrame(
        {
            "a": rng.normal(size=n),
            "b": rng.exponential(size=n),
            "c": rng.choice(list("xyz"), n),
            "d": rng.normal(size=n),
        }
    )


def test_empty_current_data_is_its_own_error(ref: pd.DataFrame) -> None:
    with pytest.raises(EmptyCurrentDataError, match="no rows"):
        detect_drift(ref, ref.iloc[:0])


def test_all_missing_column_counts_as_drifted(ref: pd.DataFrame) -> None:
    cur = ref.copy()
    cur["a"] = np.nan
    col = {c.column: c for c in detect_drift(ref, cur).columns}["a"]
    assert col.drifted and col.test == "missing" and "every value is missing" in col.note


def test_column_missing_everywhere_in_the_reference_is_left_out_with_a_note(ref: pd.DataFrame) -> None:
    r = ref.assign(e=np.nan)
    report = detect_drift(r, ref.assign(e=1.0))
    assert "e" not in {c.column for c in report.columns}
    assert any("'e' has no finite value" in n for n in report.notes)


def test_constant_columns(ref: pd.DataFrame) -> None:
    r, c = ref.assign(k=5.0), ref.assign(k=5.0)
    same = {x.column: x for x in detect_drift(r, c).columns}["k"]
    assert not same.drifted
    moved = {x.column: x for x in detect_drift(r, ref.assign(k=6.0)).columns}["k"]
    assert moved.drifted


def test_unseen_categories_are_named(ref: pd.DataFrame) -> None:
    cur = ref.copy()
    cur.loc[:300, "c"] = "brand-new"
    col = {c.column: c for c in detect_drift(ref, cur).columns}["c"]
    assert col.drifted and "never seen in the reference" in col.note and "brand-new" in col.note


def test_mixed_type_column_is_compared_as_text(ref: pd.DataFrame) -> None:
    r = ref.assign(m=pd.Series(["1", 2, "x", 3.5] * 500, dtype=object))
    report = detect_drift(r, r)
    assert any("'m' mixes value types" in n for n in report.notes)
    assert not {c.column: c for c in report.columns}["m"].drifted


def test_schema_mismatch_fails_by_default_naming_columns(ref: pd.DataFrame) -> None:
    cur = ref.drop(columns="a").assign(b=ref["b"].astype(str), extra=1)
    with pytest.raises(MlopsInputError, match=r"missing columns: \['a'\], retyped columns: \['b'\]"):
        detect_drift(ref, cur)


def test_schema_mismatch_as_drift(ref: pd.DataFrame) -> None:
    cur = ref.drop(columns="a").assign(b=ref["b"].astype(str), extra=1)
    report = detect_drift(ref, cur, DriftConfig(on_schema_mismatch="drift"))
    assert report.schema == {"missing": ["a"], "extra": ["extra"], "retyped": ["b"]}
    cols = {c.column: c for c in report.columns}
    assert cols["a"].drifted and cols["b"].drifted and not cols["c"].drifted
    assert report.drift_detected  # 2 of 4 >= 0.5


def test_dataset_rule_uses_drift_share(ref: pd.DataFrame) -> None:
    cur = ref.assign(a=ref["a"] + 3)
    assert not detect_drift(ref, cur).drift_detected  # 1 of 4
    assert detect_drift(ref, cur, DriftConfig(drift_share=0.25)).drift_detected


def test_fdr_adjusts_p_value_tests_only() -> None:
    rng = np.random.default_rng(1)
    ref = pd.DataFrame({f"x{i}": rng.normal(size=400) for i in range(10)})
    cur = pd.DataFrame({f"x{i}": rng.normal(0.12 if i == 0 else 0, 1, 400) for i in range(10)})
    plain = detect_drift(ref, cur)
    adjusted = detect_drift(ref, cur, DriftConfig(fdr=True))
    assert all(c.test == "ks" for c in adjusted.columns)
    assert all(c.p_adjusted is not None and c.p_adjusted >= c.score for c in adjusted.columns)
    assert adjusted.n_drifted <= plain.n_drifted


def test_bad_settings_are_refused(ref: pd.DataFrame) -> None:
    with pytest.raises(MlopsInputError, match="drift_share"):
        DriftConfig(drift_share=0)
    with pytest.raises(MlopsInputError, match="on_schema_mismatch"):
        DriftConfig(on_schema_mismatch="ignore")
    with pytest.raises(MlopsInputError, match="lacks columns"):
        detect_drift(ref, ref, DriftConfig(columns=["nope"]))
    with pytest.raises(MlopsInputError, match="not in the reference profile"):
        detect_drift(build_profile(ref), ref, DriftConfig(columns=["nope"]))


def test_summary_is_json_able(ref: pd.DataFrame) -> None:
    import json

    cur = ref.assign(c="q")  # chi-square-like infinities never leak into JSON
    s = detect_drift(ref.head(500), cur.head(500)).summary()
    json.dumps(s, allow_nan=False)
    assert set(s["columns"]["a"]) >= {"test", "score", "threshold", "drifted"}
