"""Property tests: a sample never drifts against itself; a clear shift always drifts."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airflow_mlops.core.drift import build_profile, detect_drift

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def frames(draw) -> pd.DataFrame:
    n = draw(st.integers(min_value=30, max_value=3000))
    seed = draw(st.integers(min_value=0, max_value=2**32 - 1))
    rng = np.random.default_rng(seed)
    scale = draw(st.floats(min_value=1e-3, max_value=1e3))
    cats = draw(st.integers(min_value=2, max_value=8))
    return pd.DataFrame(
        {
            "x": rng.normal(draw(st.floats(-1e3, 1e3)), scale, n),
            "k": rng.integers(0, draw(st.integers(2, 40)), n),
            "c": rng.choice([f"v{i}" for i in range(cats)], n),
        }
    )


@SETTINGS
@given(frames())
def test_a_sample_never_drifts_against_itself(frame: pd.DataFrame) -> None:
    for reference in (frame, build_profile(frame)):
        report = detect_drift(reference, frame)
        assert not report.drift_detected
        assert not any(c.drifted for c in report.columns), report.summary()


@SETTINGS
@given(frames(), st.floats(min_value=3, max_value=50))
def test_a_clear_shift_always_drifts(frame: pd.DataFrame, shift: float) -> None:
    shifted = frame.copy()
    shifted["x"] = frame["x"] + shift * frame["x"].std() + 1e-3
    shifted["c"] = "new-category"
    shifted["k"] = frame["k"] + 100
    for reference in (frame, build_profile(frame)):
        report = detect_drift(reference, shifted)
        assert report.drift_detected
        assert all(c.drifted for c in report.columns), report.summary()
