"""Infra validation's pure part: the latency percentile (the throwaway gateway runs in
tests/integration/deploy)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from airflow_mlops.deploy.validation import percentile


@given(st.lists(st.floats(min_value=0, max_value=1e4, allow_nan=False), min_size=1, max_size=200))
def test_percentile_is_an_observed_value_between_min_and_max(values):
    p95 = percentile(values, 95)
    assert p95 in values and min(values) <= p95 <= max(values)
    assert percentile(values, 100) == max(values) and percentile(values, 50) <= p95
