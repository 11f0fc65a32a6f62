"""Reference profiles: compact JSON, and results from a profile match results from the raw data.

Stated tolerances: a reference of at most 1000 rows, or a numeric column with at most 1000 distinct
values, is stored exactly, so every score is equal to 1e-12. Otherwise numeric columns keep a
1000-interval quantile grid: the normed Wasserstein distance is within 0.01 of the raw one (a tenth
of its 0.1 threshold) and the KS statistic within 0.01.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from airflow_mlops.core.drift import DriftConfig, build_profile, detect_drift, dump_profile, load_profile
from airflow_mlops.core.errors import MlopsInputError


def _frames(n_ref: int, n_cur: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)

    def make(n: int, shift: float) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "norm": rng.normal(shift, 1, n),
                "skew": rng.lognormal(shift, 0.8, n),
                "ints": rng.integers(0, 200, n),
                "few": rng.integers(0, 4, n).astype(float),
                "cat": rng.choice(["a", "b", "c", "d"], n, p=[0.4, 0.3, 0.2, 0.1]),
            }
        )

    return make(n_ref, 0.0), make(n_cur, 0.05)


def _scores(report) -> dict:
    return {c.column: (c.test, c.score, c.drifted) for c in report.columns}


def test_small_reference_profile_is_exact() -> None:
    ref, cur = _frames(800, 3000)
    raw, prof = _scores(detect_drift(ref, cur)), _scores(detect_drift(build_profile(ref), cur))
    assert {k: v[0] for k, v in raw.items()} == {
        "norm": "ks",
        "skew": "ks",
        "ints": "ks",
        "few": "chisquare",
        "cat": "chisquare",
    }
    for col, (test, score, drifted) in raw.items():
        assert prof[col][0] == test and prof[col][2] == drifted
        assert prof[col][1] == pytest.approx(score, abs=1e-12), col


def test_large_reference_profile_within_tolerance() -> None:
    ref, cur = _frames(60_000, 20_000)
    profile = build_profile(ref)
    for config in (DriftConfig(), DriftConfig(num_method="ks"), DriftConfig(num_method="psi")):
        raw, prof = _scores(detect_drift(ref, cur, config)), _scores(detect_drift(profile, cur, config))
        for col, (test, score, _) in raw.items():
            assert prof[col][0] == test
            if col in ("ints", "few", "cat"):  # exact value counts
                assert prof[col][1] == pytest.approx(score, abs=1e-12), col
            elif test == "ks":
                from airflow_mlops.core.drift import stattests as st

                assert prof[col][1] == pytest.approx(score, abs=0.05), col
            else:
                assert prof[col][1] == pytest.approx(score, abs=0.01), (col, test)
    # KS statistics themselves stay within 0.01.
    from airflow_mlops.core.drift import stattests as st
    from airflow_mlops.core.drift.profile import reference_columns_from_frame, reference_columns_from_profile

    exact, _ = reference_columns_from_frame(ref)
    grid = reference_columns_from_profile(profile)
    cur_d = st.NumericDist.from_sorted(np.sort(cur["skew"].to_numpy()))
    assert st.ks_statistic(grid["skew"].dist, cur_d) == pytest.approx(
        st.ks_statistic(exact["skew"].dist, cur_d), abs=0.01
    )


def test_profile_json_roundtrip_and_size() -> None:
    ref, cur = _frames(50_000, 5000)
    text = dump_profile(build_profile(ref))
    assert len(text) < 200_000  # compact: independent of the row count
    profile = load_profile(text)
    assert profile["columns"]["ints"]["kind"] == "numeric" and "values" in profile["columns"]["ints"]
    assert (
        profile["columns"]["norm"]["count"] == 50_000
        and 1001 <= len(profile["columns"]["norm"]["quantiles"]) <= 4096
        and len(profile["columns"]["norm"]["cum"]) == len(profile["columns"]["norm"]["quantiles"])
    )
    assert _scores(detect_drift(profile, cur)) == _scores(detect_drift(json.loads(text), cur))


def test_not_a_profile_is_refused() -> None:
    with pytest.raises(MlopsInputError, match="not a drift reference profile"):
        load_profile('{"columns": {}}')
    with pytest.raises(MlopsInputError, match="not valid JSON"):
        load_profile("{")
    with pytest.raises(MlopsInputError, match="version 99 is not supported"):
        load_profile(json.dumps({"format": "airflow-mlops/drift-profile", "version": 99}))


def test_every_missing_key_of_a_profile_is_named_with_its_column() -> None:
    """The class of damaged profiles: any key of any column removed is an input error that names the
    column and the key and says to re-train, never a KeyError, or else the profile still works."""
    ref, cur = _frames(3000, 500)
    profile = build_profile(ref)
    optional = {"dtype", "dropped", "dropped_categories", "dropped_filter"}
    checked = 0
    for name, col in profile["columns"].items():
        for key in list(col):
            damaged = json.loads(dump_profile(profile))
            del damaged["columns"][name][key]
            if key in optional or (key == "n_unique" and col["kind"] == "categorical"):
                detect_drift(load_profile(json.dumps(damaged)), cur)
                continue
            with pytest.raises(MlopsInputError) as e:
                detect_drift(load_profile(json.dumps(damaged)), cur)
            assert f"column {name!r}" in str(e.value) and f"{key!r}" in str(e.value)
            assert "re-train the model" in str(e.value)
            checked += 1
    assert checked >= 20
