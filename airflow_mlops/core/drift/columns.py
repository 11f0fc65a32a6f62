"""Turning pandas columns into drift summaries: column kinds (Evidently's rules) and distributions."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from airflow_mlops.core.drift.stattests import CategoricalDist, NumericDist

if TYPE_CHECKING:
    import pandas as pd

NUMERIC = "numeric"
CATEGORICAL = "categorical"
# Evidently 0.7 treats an integer column with at most this many distinct values as categorical.
INTEGER_CARDINALITY_LIMIT = 10


class _Other:
    """The bucket of a profile's dropped (rarest) categories: a key no real category can equal."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<other>"

    def __reduce__(self) -> str:
        return "OTHER"  # unpickles to the module's single instance


OTHER = _Other()


def column_kind(s: pd.Series) -> str:
    """``numeric`` or ``categorical``, as Evidently 0.7's ``infer_column_type`` decides (text and
    anything else non-numeric is handled as categorical here)."""
    import pandas as pd

    dtype = s.dtype
    if pd.api.types.is_bool_dtype(dtype) or isinstance(dtype, pd.CategoricalDtype):
        return CATEGORICAL
    if pd.api.types.is_float_dtype(dtype):
        return NUMERIC
    if pd.api.types.is_integer_dtype(dtype):
        return CATEGORICAL if s.nunique() <= INTEGER_CARDINALITY_LIMIT else NUMERIC
    return CATEGORICAL


def is_numeric_series(s: pd.Series) -> bool:
    """True when the column holds numbers (booleans excluded)."""
    import pandas as pd

    return pd.api.types.is_numeric_dtype(s.dtype) and not pd.api.types.is_bool_dtype(s.dtype)


def finite_values(s: pd.Series) -> tuple[np.ndarray, int]:
    """The finite values of a numeric column as float64, and how many were missing or infinite."""
    if s.dtype == np.float64:
        # A view, not a copy (``na_value`` would force one): on 1M-row columns the copies cost more
        # than the tests. Callers sort into new arrays and never write to it.
        x = s.to_numpy(copy=False)
    else:
        x = s.to_numpy(dtype=np.float64, na_value=np.nan)
    ok = np.isfinite(x)
    if ok.all():
        return x, 0
    return x[ok], int(len(x) - ok.sum())


def numeric_dist(s: pd.Series) -> tuple[NumericDist, int]:
    """An exact :class:`NumericDist` of a numeric column, and its count of missing values."""
    x, missing = finite_values(s)
    x = np.sort(x)
    return NumericDist.from_sorted(x), missing


def key_types(counts: dict[Any, int]) -> list[str]:
    """Type names among the categories when they mix text with other values (empty when uniform).

    Checked on the distinct values only, so it costs nothing next to counting them.
    """
    kinds = {type(k).__name__ for k in counts}
    if len(kinds) > 1 and not kinds <= {"int", "float", "bool"}:
        return sorted(kinds)
    return []


def value_counts(s: pd.Series) -> tuple[dict[Any, int], int, list[str]]:
    """Counts of the non-missing values of a column, its missing count, and the value types when
    they are mixed (the counts are then keyed by text, so ``1`` and ``"1"`` meet)."""
    vc = s.value_counts(dropna=True, sort=False)
    if len(vc) and not vc.all():
        vc = vc[vc > 0]  # a pandas Categorical lists its unused categories with count 0: they were not seen
    counts: dict[Any, int] = {}
    for k, v in zip(vc.index.tolist(), vc.to_numpy().tolist(), strict=True):
        k = to_native(k)
        counts[k] = counts.get(k, 0) + int(v)
    mixed = key_types(counts)
    if mixed:
        text: dict[Any, int] = {}
        for k, v in counts.items():
            text[str(k)] = text.get(str(k), 0) + v
        counts = text
    return counts, int(len(s) - int(vc.sum())), mixed


def categorical_dist(s: pd.Series) -> tuple[CategoricalDist, int, list[str]]:
    """A :class:`CategoricalDist` of a column, its missing count, and its value types when mixed."""
    counts, missing, mixed = value_counts(s)
    return CategoricalDist(counts), missing, mixed


def to_native(v: Any) -> Any:
    """A JSON-able Python value for a category (numpy scalars unwrapped; 1.0 stays equal to 1)."""
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v
