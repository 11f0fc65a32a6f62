"""live_queries.with_selector: the gate's per-version templates made queries over every version (recording
rules) or over a dashboard's selection; what they compute is checked on a real Prometheus in
tests/integration/serving/test_live_queries.py and tests/integration/stack."""

from __future__ import annotations

import re

import pytest

from airflow_mlops.core.errors import MlopsInputError
from airflow_mlops.core.gate.evidence import VersionRef, fill
from airflow_mlops.core.live_queries import (
    CLASSIFICATION_QUERIES,
    REGRESSION_QUERIES,
    counter_query,
    samples_query,
    value_query,
    with_selector,
)

TEMPLATES = [
    *(counter_query(m, "15m") for m in CLASSIFICATION_QUERIES + REGRESSION_QUERIES),
    counter_query("f1", None),
    samples_query("15m"),
    value_query("f1", "1h"),
]


@pytest.mark.parametrize("template", TEMPLATES)
def test_no_selector_covers_every_version(template: str) -> None:
    query = with_selector(template)
    assert "{model}" not in query and "{version}" not in query and "model=" not in query
    assert "{}" not in query and "{," not in query and ",}" not in query
    # The other matchers stay, and the result is still one series per model and version.
    assert re.findall(r'kind="\w+"', query) == re.findall(r'kind="\w+"', template)
    assert query.count("by (model, version") == template.count("by (model, version")


@pytest.mark.parametrize("template", TEMPLATES)
def test_a_selector_of_one_version_is_what_the_gate_fills(template: str) -> None:
    ref = VersionRef("bc", "3", None)
    assert with_selector(template, 'model="bc",version="3"') == fill(template, ref, "f1")


def test_samples_over_all_versions() -> None:
    assert with_selector(samples_query("15m", fallback=False)) == (
        "sum by (model, version) (increase(mlops_gateway_feedback_total[15m]))"
    )
    assert with_selector(samples_query("15m", fallback=False), 'model=~"$model"') == (
        'sum by (model, version) (increase(mlops_gateway_feedback_total{model=~"$model"}[15m]))'
    )


def test_a_query_that_is_not_a_template_is_refused() -> None:
    with pytest.raises(MlopsInputError, match="give a template of airflow_mlops.core.live_queries"):
        with_selector('sum(mlops_gateway_feedback_total{model="bc"})')
