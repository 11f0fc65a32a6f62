"""Which test each column gets: Evidently 0.7's ``DataDriftPreset`` default, or the user's choice."""

from __future__ import annotations

from airflow_mlops.core.drift.columns import NUMERIC
from airflow_mlops.core.drift.stattests import CATEGORICAL_TESTS, NUMERIC_TESTS, TESTS
from airflow_mlops.core.errors import MlopsInputError

SMALL_REFERENCE_ROWS = 1000


def default_test(kind: str, n_reference: int, n_values: int) -> str:
    """Evidently 0.7's default test (``get_stattest`` in its stattest registry).

    :param kind: ``numeric`` or ``categorical``.
    :param n_reference: non-missing reference rows.
    :param n_values: distinct values of reference and current together.
    """
    if n_reference <= SMALL_REFERENCE_ROWS:
        if kind == NUMERIC and n_values > 5:
            return "ks"
        return "chisquare" if n_values > 2 else "z"
    if kind == NUMERIC and n_values > 5:
        return "wasserstein"
    return "jensenshannon"


def check_test(name: str, kind: str, column: str) -> str:
    """Validate a test name for a column kind."""
    allowed = NUMERIC_TESTS if kind == NUMERIC else CATEGORICAL_TESTS
    if name not in TESTS:
        raise MlopsInputError(
            f"Unknown drift test {name!r} for column {column!r}: use one of {sorted(TESTS)}."
        )
    if name not in allowed:
        raise MlopsInputError(
            f"Drift test {name!r} does not apply to {kind} column {column!r}: use one of {list(allowed)}."
        )
    return name


def default_threshold(test: str) -> float:
    """The test's default threshold (p-value tests 0.05, distances 0.1)."""
    return TESTS[test][0]
