"""Reference profiles: a compact, versioned JSON summary of the training features.

It holds per numeric column the count, moments, a quantile grid (the CDF, piecewise linear), exact
value counts when the column has few distinct values (every test is then exact), the
reference-quantile bin edges for PSI/Jensen-Shannon and a histogram for reports; per categorical
column the value counts. A reference of at most ``exact_rows`` rows is stored whole (as value
counts), so the exact tests Evidently uses on small references give exactly the same p-values.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from airflow_mlops.core.drift.columns import (
    CATEGORICAL,
    NUMERIC,
    categorical_dist,
    column_kind,
    finite_values,
    to_native,
)
from airflow_mlops.core.drift.stattests import LINEAR, CategoricalDist, NumericDist
from airflow_mlops.core.errors import MlopsInputError

if TYPE_CHECKING:
    import pandas as pd

PROFILE_FORMAT = "airflow-mlops/drift-profile"
PROFILE_VERSION = 1
PROFILE_ARTIFACT = "drift/reference_profile.json"


@dataclass
class ReferenceColumn:
    """What the engine needs of one reference column.

    :param name: column name.
    :param kind: ``numeric`` or ``categorical``.
    :param dist: its distribution.
    :param bin_edges: interior reference-quantile edges for PSI/JS on numeric columns.
    :param hist_edges: histogram edges for reports (numeric).
    :param hist_counts: reference histogram counts on ``hist_edges``.
    :param missing: missing values in the reference.
    :param dtype: the pandas dtype name it had.
    """

    name: str
    kind: str
    dist: NumericDist | CategoricalDist
    bin_edges: np.ndarray | None = None
    hist_edges: np.ndarray | None = None
    hist_counts: np.ndarray | None = None
    missing: int = 0
    dtype: str = ""


def quantile_edges(dist: NumericDist, n_bins: int) -> np.ndarray:
    """Interior edges of ``n_bins`` reference-quantile bins (duplicates removed)."""
    if dist.n == 0:
        return np.zeros(0)
    return np.unique(dist.quantiles(np.arange(1, n_bins) / n_bins))


def hist_edges(lo: float, hi: float, bins: int) -> np.ndarray:
    """Equal-width histogram edges over [lo, hi] (a unit-wide span for a constant)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return np.zeros(0)
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    return np.linspace(lo, hi, bins + 1)


def reference_columns_from_frame(
    frame: pd.DataFrame, columns: list[str] | None = None, n_bins: int = 10, hist_bins: int = 30
) -> tuple[dict[str, ReferenceColumn], list[str]]:
    """Exact reference columns from raw data, and notes about columns that cannot be used."""
    cols = list(columns) if columns is not None else list(frame.columns)
    missing = [c for c in cols if c not in frame.columns]
    if missing:
        raise MlopsInputError(
            f"Reference data lacks columns {missing}: drop them from `columns` or fix the data."
        )
    out: dict[str, ReferenceColumn] = {}
    notes: list[str] = []
    for name in cols:
        s = frame[name]
        kind = column_kind(s)
        if kind == NUMERIC:
            x, n_missing = finite_values(s)
            x = np.sort(x)
            if len(x) == 0:
                notes.append(f"column {name!r} has no finite value in the reference: not tested")
                continue
            dist = NumericDist.from_sorted(x)
            edges = hist_edges(float(x[0]), float(x[-1]), hist_bins)
            out[name] = ReferenceColumn(
                name, NUMERIC, dist, quantile_edges(dist, n_bins), edges,
                dist.histogram(edges), n_missing, str(s.dtype),
            )  # fmt: skip
        else:
            cdist, n_missing, mixed = categorical_dist(s)
            if mixed:
                notes.append(f"column {name!r} mixes value types {mixed} in the reference: compared as text")
            if cdist.n == 0:
                notes.append(f"column {name!r} has only missing values in the reference: not tested")
                continue
            out[name] = ReferenceColumn(name, CATEGORICAL, cdist, missing=n_missing, dtype=str(s.dtype))
    return out, notes


def build_profile(
    frame: pd.DataFrame,
    columns: list[str] | None = None,
    *,
    n_quantiles: int = 1000,
    exact_rows: int = 1000,
    exact_values: int = 1000,
    n_bins: int = 10,
    hist_bins: int = 30,
    max_categories: int = 10_000,
) -> dict[str, Any]:
    """Summarize reference data (the training features) into a JSON-able profile.

    :param frame: the reference data.
    :param columns: columns to profile (all when None).
    :param n_quantiles: intervals of the quantile grid stored per numeric column.
    :param exact_rows: a numeric column of at most this many rows is stored whole (exact tests).
    :param exact_values: a numeric column with at most this many distinct values is stored as exact
        value counts.
    :param n_bins: reference-quantile bins for PSI and Jensen-Shannon on numeric columns.
    :param hist_bins: histogram bins kept for reports.
    :param max_categories: categories kept per categorical column (the rarest beyond are dropped,
        and counted in ``dropped``).
    """
    refs, notes = reference_columns_from_frame(frame, columns, n_bins=n_bins, hist_bins=hist_bins)
    out_cols: dict[str, Any] = {}
    for name, rc in refs.items():
        if rc.kind == NUMERIC:
            d = rc.dist
            assert isinstance(d, NumericDist)
            x = d.points
            col: dict[str, Any] = {
                "kind": NUMERIC,
                "dtype": rc.dtype,
                "count": d.n,
                "missing": rc.missing,
                "min": float(x[0]),
                "max": float(x[-1]),
                "mean": float(np.mean(x)),
                "std": d.std,
                "n_unique": d.n_unique,
                "bin_edges": rc.bin_edges.tolist(),
                "hist": {"edges": rc.hist_edges.tolist(), "counts": rc.hist_counts.tolist()},
            }
            if d.values is not None and (d.n_unique <= exact_values or d.n <= exact_rows):
                col["values"] = d.values.tolist()
                col["counts"] = d.counts.tolist()
            else:
                col["quantiles"] = d.quantiles(np.linspace(0, 1, n_quantiles + 1)).tolist()
            out_cols[name] = col
        else:
            d = rc.dist
            assert isinstance(d, CategoricalDist)
            items = sorted(d.counts.items(), key=lambda kv: -kv[1])
            kept = items[:max_categories]
            out_cols[name] = {
                "kind": CATEGORICAL,
                "dtype": rc.dtype,
                "count": d.n,
                "missing": rc.missing,
                "n_unique": len(items),
                "categories": [[to_native(k), v] for k, v in kept],
                "dropped": int(sum(v for _, v in items[max_categories:])),
            }
    return {
        "format": PROFILE_FORMAT,
        "version": PROFILE_VERSION,
        "n_rows": len(frame),
        "n_bins": n_bins,
        "columns": out_cols,
        "notes": notes,
    }


def validate_profile(profile: Any) -> dict[str, Any]:
    """Check that ``profile`` is a drift profile this version reads; returns it."""
    if not isinstance(profile, dict) or profile.get("format") != PROFILE_FORMAT:
        raise MlopsInputError(
            "This is not a drift reference profile (no 'format': "
            f"{PROFILE_FORMAT!r}): build one with airflow_mlops.core.drift.build_profile."
        )
    if profile.get("version") != PROFILE_VERSION:
        raise MlopsInputError(
            f"Drift profile version {profile.get('version')} is not supported (this package reads "
            f"version {PROFILE_VERSION}): rebuild it with build_profile."
        )
    return profile


def reference_columns_from_profile(profile: dict[str, Any]) -> dict[str, ReferenceColumn]:
    """Reference columns (distributions) from a profile."""
    validate_profile(profile)
    out: dict[str, ReferenceColumn] = {}
    for name, col in profile["columns"].items():
        if col["kind"] == NUMERIC:
            if "values" in col:
                dist = NumericDist.from_counts(
                    np.asarray(col["values"], dtype=float),
                    np.asarray(col["counts"], dtype=np.int64),
                    col["std"],
                )
            else:
                q = np.asarray(col["quantiles"], dtype=float)
                dist = NumericDist(
                    points=q,
                    cdf=np.linspace(0, 1, len(q)),
                    n=int(col["count"]),
                    kind=LINEAR,
                    std_=float(col["std"]),
                    n_unique=int(col["n_unique"]),
                    uniform=True,
                )
            out[name] = ReferenceColumn(
                name, NUMERIC, dist, np.asarray(col["bin_edges"], dtype=float),
                np.asarray(col["hist"]["edges"], dtype=float), np.asarray(col["hist"]["counts"]),
                int(col["missing"]), col.get("dtype", ""),
            )  # fmt: skip
        else:
            counts = {_key(k): int(v) for k, v in col["categories"]}
            out[name] = ReferenceColumn(
                name,
                CATEGORICAL,
                CategoricalDist(counts),
                missing=int(col["missing"]),
                dtype=col.get("dtype", ""),
            )
    return out


def _key(k: Any) -> Any:
    return tuple(k) if isinstance(k, list) else k


def dump_profile(profile: dict[str, Any]) -> str:
    """The profile as JSON text."""
    return json.dumps(profile, allow_nan=False)


def load_profile(text: str | bytes) -> dict[str, Any]:
    """A profile from JSON text (validated)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise MlopsInputError(f"Drift profile is not valid JSON ({e}): rebuild it with build_profile.") from e
    return validate_profile(data)
