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


def mixed_types(s: pd.Series) -> list[str]:
    """Type names in an object column holding more than one kind of value (empty when uniform)."""
    import pandas as pd

    if s.dtype != object:
        return []
    kinds = {type(v).__name__ for v in s.dropna().head(100_000) if not (isinstance(v, float) and pd.isna(v))}
    if len(kinds) > 1 and not kinds <= {"int", "float"}:
        return sorted(kinds)
    return []


def value_counts(s: pd.Series, as_text: bool = False) -> tuple[dict[Any, int], int]:
    """Counts of the non-missing values of a column (as text when ``as_text``), and the missing count."""
    if as_text:
        s = s.dropna().astype(str)
    vc = s.value_counts(dropna=True, sort=False)
    counts = {to_native(k): int(v) for k, v in zip(vc.index.tolist(), vc.to_numpy().tolist(), strict=False)}
    return counts, int(len(s) - int(vc.sum()))


def categorical_dist(s: pd.Series) -> tuple[CategoricalDist, int]:
    """A :class:`CategoricalDist` of a column, and its missing count (mixed types compared as text)."""
    counts, missing = value_counts(s, as_text=bool(mixed_types(s)))
    return CategoricalDist(counts), missing


def to_native(v: Any) -> Any:
    """A JSON-able Python value for a category (numpy scalars unwrapped; 1.0 stays equal to 1)."""
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v
