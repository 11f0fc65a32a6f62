"""The drift engine: per-column tests, multiple-testing control and the dataset verdict."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from airflow_mlops.core.drift import stattests as st
from airflow_mlops.core.drift.columns import NUMERIC
from airflow_mlops.core.drift.current import CurrentColumn, CurrentData, summarize_frame
from airflow_mlops.core.drift.profile import (
    ReferenceColumn,
    reference_columns_from_frame,
    reference_columns_from_profile,
)
from airflow_mlops.core.drift.selection import check_test, default_test, default_threshold
from airflow_mlops.core.errors import MlopsInputError

if TYPE_CHECKING:
    import pandas as pd

SCHEMA_FAIL = "fail"
SCHEMA_DRIFT = "drift"


class EmptyCurrentDataError(MlopsInputError):
    """The current data has no rows (e.g. an empty prediction-log window)."""


@dataclass
class DriftConfig:
    """How to test drift; per-column settings win over per-kind ones, which win over global ones.

    :param drift_share: the dataset drifts when the share of drifted columns is at least this.
    :param method: test for every column (None: Evidently's default per column).
    :param num_method: test for numeric columns.
    :param cat_method: test for categorical columns.
    :param per_column_method: ``{column: test}``.
    :param threshold: threshold for every column (None: the test's default).
    :param num_threshold: threshold for numeric columns.
    :param cat_threshold: threshold for categorical columns.
    :param per_column_threshold: ``{column: threshold}``.
    :param fdr: control the false-discovery rate of the p-value tests (Benjamini-Hochberg): a column
        drifts when its adjusted p-value is below its threshold.
    :param columns: columns to test (all reference columns when None).
    :param on_schema_mismatch: ``fail`` raises on missing or retyped columns; ``drift`` counts them
        as drifted columns.
    :param n_bins: reference-quantile bins for PSI/JS on numeric columns (raw reference only; a
        profile brings its own).
    """

    drift_share: float = 0.5
    method: str | None = None
    num_method: str | None = None
    cat_method: str | None = None
    per_column_method: dict[str, str] = field(default_factory=dict)
    threshold: float | None = None
    num_threshold: float | None = None
    cat_threshold: float | None = None
    per_column_threshold: dict[str, float] = field(default_factory=dict)
    fdr: bool = False
    columns: list[str] | None = None
    on_schema_mismatch: str = SCHEMA_FAIL
    n_bins: int = 10

    def __post_init__(self) -> None:
        if not 0 < self.drift_share <= 1:
            raise MlopsInputError(f"drift_share={self.drift_share} is outside (0, 1]: use e.g. 0.5.")
        if self.on_schema_mismatch not in (SCHEMA_FAIL, SCHEMA_DRIFT):
            raise MlopsInputError(
                f"on_schema_mismatch={self.on_schema_mismatch!r} is unknown: use 'fail' or 'drift'."
            )

    def test_for(self, column: str, kind: str) -> str | None:
        name = self.per_column_method.get(column) or (self.num_method if kind == NUMERIC else self.cat_method)
        name = name or self.method
        return check_test(name, kind, column) if name else None

    def threshold_for(self, column: str, kind: str, test: str) -> float:
        for t in (
            self.per_column_threshold.get(column),
            self.num_threshold if kind == NUMERIC else self.cat_threshold,
            self.threshold,
        ):
            if t is not None:
                return float(t)
        return default_threshold(test)


@dataclass
class ColumnResult:
    """The drift test of one column."""

    column: str
    kind: str
    test: str
    score: float | None
    threshold: float
    drifted: bool
    n_reference: int = 0
    n_current: int = 0
    missing_current: int = 0
    p_adjusted: float | None = None
    note: str = ""
    hist: dict[str, Any] | None = None


@dataclass
class DriftReport:
    """Per-column results and the dataset verdict."""

    columns: list[ColumnResult]
    drift_share: float
    share_drifted: float
    n_drifted: int
    drift_detected: bool
    n_reference: int
    n_current: int
    schema: dict[str, list[str]]
    notes: list[str]
    fdr: bool = False

    def summary(self) -> dict[str, Any]:
        """A compact JSON-able summary (XCom, Asset event extra)."""
        return {
            "drift_detected": self.drift_detected,
            "share_drifted": round(self.share_drifted, 6),
            "n_drifted": self.n_drifted,
            "n_columns": len(self.columns),
            "drift_share": self.drift_share,
            "n_reference": self.n_reference,
            "n_current": self.n_current,
            "fdr": self.fdr,
            "schema": self.schema,
            "notes": self.notes,
            "columns": {
                c.column: {
                    "test": c.test,
                    "score": _json_float(c.score),
                    "threshold": c.threshold,
                    "drifted": c.drifted,
                    **({"p_adjusted": _json_float(c.p_adjusted)} if c.p_adjusted is not None else {}),
                    **({"note": c.note} if c.note else {}),
                }
                for c in self.columns
            },
        }

    def to_dict(self) -> dict[str, Any]:
        """Everything, histograms included (the JSON report)."""
        d = asdict(self)
        for c in d["columns"]:
            c["score"] = _json_float(c["score"])
            c["p_adjusted"] = _json_float(c["p_adjusted"])
        return d


def _json_float(v: float | None) -> float | None:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return None if v is None or math.isnan(v) else (1e308 if v > 0 else -1e308)
    return float(v)


def detect_drift(
    reference: pd.DataFrame | dict[str, Any],
    current: pd.DataFrame | CurrentData,
    config: DriftConfig | None = None,
) -> DriftReport:
    """Compare current data with a reference and decide whether the dataset drifted.

    :param reference: raw reference data (a DataFrame: exact) or a profile from
        :func:`~airflow_mlops.core.drift.profile.build_profile`.
    :param current: the current data, as a DataFrame or as read in chunks by
        :func:`~airflow_mlops.core.drift.current.summarize_chunks`.
    :param config: tests, thresholds and the dataset rule.
    """
    config = config or DriftConfig()
    notes: list[str] = []
    if isinstance(reference, dict):
        refs = reference_columns_from_profile(reference)
        notes.extend(reference.get("notes", []))
        n_reference = int(reference.get("n_rows", 0))
        if config.columns is not None:
            unknown = [c for c in config.columns if c not in refs]
            if unknown:
                raise MlopsInputError(
                    f"Columns {unknown} are not in the reference profile: drop them from `columns`."
                )
            refs = {c: refs[c] for c in config.columns}
    else:
        refs, ref_notes = reference_columns_from_frame(reference, config.columns, n_bins=config.n_bins)
        notes.extend(ref_notes)
        n_reference = len(reference)
    if not refs:
        raise MlopsInputError("The reference has no usable column: give data with at least one feature.")
    if not isinstance(current, CurrentData):
        current = summarize_frame(current, {n: r.kind for n, r in refs.items()})
    if current.n_rows == 0:
        raise EmptyCurrentDataError(
            "The current data has no rows: widen the time window or point at data that has rows."
        )
    missing = [c for c in refs if c not in current.columns]
    retyped = [c for c, col in current.columns.items() if col.retyped and c in refs]
    schema = {"missing": missing, "extra": list(current.extra), "retyped": retyped}
    if (missing or retyped) and config.on_schema_mismatch == SCHEMA_FAIL:
        raise MlopsInputError(
            f"Current data does not match the reference schema (missing columns: {missing}, retyped "
            f"columns: {retyped}): fix the data, restrict `columns`, or set on_schema_mismatch='drift'."
        )
    results: list[ColumnResult] = []
    for name, ref in refs.items():
        if name in missing or name in retyped:
            why = (
                "missing from the current data" if name in missing else "has another type in the current data"
            )
            results.append(ColumnResult(name, ref.kind, "schema", 1.0, 0.0, True, note=f"column {why}"))
            continue
        results.append(_test_column(ref, current.columns[name], config))
    notes.extend(current.notes)
    if config.fdr:
        _apply_fdr(results)
    n_drifted = sum(r.drifted for r in results)
    share = n_drifted / len(results)
    return DriftReport(
        columns=results,
        drift_share=config.drift_share,
        share_drifted=share,
        n_drifted=n_drifted,
        drift_detected=bool(share >= config.drift_share),
        n_reference=n_reference,
        n_current=current.n_rows,
        schema=schema,
        notes=notes,
        fdr=config.fdr,
    )


def _n_values(ref: ReferenceColumn, cur: CurrentColumn) -> int:
    """Distinct values of both sides together (exact up to 6, which is all the choice needs)."""
    rd, cd = ref.dist, cur.dist
    if isinstance(rd, st.NumericDist) and isinstance(cd, st.NumericDist):
        if rd.values is None or cd.values is None:
            return max(rd.n_unique, cd.n_unique, 6)
        return len(np.union1d(rd.values, cd.values))
    if isinstance(rd, st.CategoricalDist) and isinstance(cd, st.CategoricalDist):
        return len(set(rd.counts) | set(cd.counts))
    raise _kind_mismatch(ref)


def _kind_mismatch(ref: ReferenceColumn) -> MlopsInputError:
    return MlopsInputError(
        f"Column {ref.name!r} is {ref.kind} in the reference but was summarized as another kind: summarize "
        "the current data with the reference's column kinds."
    )


def _test_column(ref: ReferenceColumn, cur: CurrentColumn, config: DriftConfig) -> ColumnResult:
    if ref.dropped and isinstance(cur.dist, st.CategoricalDist):
        # The profile's rarest categories are one "other" bucket: current values of them go there too.
        cur = replace(cur, dist=ref.pool_current(cur.dist))
    rd, cd = ref.dist, cur.dist
    n_ref, n_cur = rd.n, cd.n
    if n_cur == 0:
        # Every value missing: the feature pipeline broke, which is drift by any measure.
        return ColumnResult(
            ref.name, ref.kind, "missing", 1.0, 0.0, True, n_ref, 0, cur.missing,
            note="every value is missing in the current data",
        )  # fmt: skip
    test = config.test_for(ref.name, ref.kind) or default_test(ref.kind, n_ref, _n_values(ref, cur))
    threshold = config.threshold_for(ref.name, ref.kind, test)
    note = ""
    if isinstance(rd, st.NumericDist) and isinstance(cd, st.NumericDist):
        score = _numeric_score(test, rd, cd, ref)
        if rd.n_unique == 1 and test in ("wasserstein", "ks"):
            note = "constant in the reference"
    elif isinstance(rd, st.CategoricalDist) and isinstance(cd, st.CategoricalDist):
        score = _categorical_score(test, rd, cd)
        unseen = [k for k in cd.counts if k not in rd.counts]
        if unseen:
            note = f"{len(unseen)} categories never seen in the reference (e.g. {unseen[:3]!r})"
        if ref.dropped:
            pooled = "the reference's rarest categories" + (
                "" if ref.dropped_filter else " and any category outside the kept ones"
            )
            note = "; ".join(x for x in (note, f"{pooled} are compared as one 'other' bucket") if x)
    else:
        raise _kind_mismatch(ref)
    return ColumnResult(
        ref.name, ref.kind, test, score, threshold, st.is_drifted(test, score, threshold),
        n_ref, n_cur, cur.missing, note=note, hist=_hist(ref, cur),
    )  # fmt: skip


def _numeric_score(test: str, rd: st.NumericDist, cd: st.NumericDist, ref: ReferenceColumn) -> float:
    if test == "wasserstein":
        return st.wasserstein_norm(rd, cd)
    if test == "ks":
        return st.ks(rd, cd)
    if test in ("chisquare", "z") or (
        test in ("jensenshannon", "psi") and rd.values is not None and rd.n_unique <= 20
    ):
        # Evidently compares value counts when the reference has few distinct values.
        if rd.values is None or cd.values is None:
            raise MlopsInputError(
                f"Test {test!r} on numeric column {ref.name!r} needs few distinct values; it has many: "
                "use 'ks', 'wasserstein', 'psi' or 'jensenshannon'."
            )
        return _COUNT_TESTS[test](st.numeric_counts(rd), st.numeric_counts(cd))
    edges = ref.bin_edges if ref.bin_edges is not None else np.zeros(0)
    if test == "jensenshannon":
        return st.jensenshannon_binned(rd, cd, edges, ref.bin_counts)
    return st.psi_binned(rd, cd, edges, ref.bin_counts)


def _categorical_score(test: str, rd: st.CategoricalDist, cd: st.CategoricalDist) -> float:
    return _COUNT_TESTS[test](rd, cd)


# Tests on value counts: categorical columns, and numeric columns with few distinct values.
_COUNT_TESTS = {
    "chisquare": st.chisquare,
    "z": st.ztest,
    "jensenshannon": st.jensenshannon_counts,
    "psi": st.psi_counts,
}


def _hist(ref: ReferenceColumn, cur: CurrentColumn) -> dict[str, Any] | None:
    """Reference and current shares on the same bins, for the HTML report."""
    if isinstance(cur.dist, st.NumericDist):
        if ref.hist_edges is None or len(ref.hist_edges) < 2:
            return None
        edges = ref.hist_edges
        fc = cur.dist.cdf_at(edges)
        below = float(fc[0])
        inner = np.diff(fc)
        above = float(1 - fc[-1])
        ref_counts = np.asarray(ref.hist_counts, dtype=float)
        return {
            "edges": edges.tolist(),
            "reference": (ref_counts / max(ref_counts.sum(), 1)).tolist(),
            "current": inner.tolist(),
            "current_below": below,
            "current_above": above,
        }
    rdist, cdist = ref.dist, cur.dist
    if not isinstance(rdist, st.CategoricalDist):
        return None
    rn, cn = max(rdist.n, 1), max(cdist.n, 1)
    keys = sorted(
        set(rdist.counts) | set(cdist.counts),
        key=lambda k: -(rdist.counts.get(k, 0) / rn + cdist.counts.get(k, 0) / cn),
    )[:20]
    return {
        "categories": [str(k) for k in keys],
        "reference": [rdist.counts.get(k, 0) / rn for k in keys],
        "current": [cdist.counts.get(k, 0) / cn for k in keys],
    }


def _apply_fdr(results: list[ColumnResult]) -> None:
    idx = [i for i, r in enumerate(results) if r.test in st.TESTS and st.TESTS[r.test][1]]
    if not idx:
        return
    adjusted = st.benjamini_hochberg([results[i].score for i in idx])
    for i, p in zip(idx, adjusted, strict=False):
        r = results[i]
        r.p_adjusted = p
        r.drifted = st.is_drifted(r.test, p, r.threshold)
