"""Reference profiles: a compact, versioned JSON summary of the training features.

It holds per numeric column the count, moments, an adaptive quantile grid (the CDF, piecewise linear
between knots), exact value counts when the column has few distinct values (every test is then
exact), the reference-quantile bin edges for PSI/Jensen-Shannon with the reference's exact counts in
those bins (PSI and Jensen-Shannon from a profile equal the raw-reference values) and a histogram for
reports; per categorical column the value counts. A reference of at most ``exact_rows`` rows is
stored whole (as value counts), so the exact tests Evidently uses on small references give exactly
the same p-values.

The grid (format version 2) starts from 1000 equal-rank intervals and splits, where the sorted data
departs most from the straight line between two knots, until the area between the data's quantile
function and the grid's is at most ``grid_tolerance`` standard deviations: that area bounds the error
of the normed Wasserstein distance (triangle inequality), heavy tails included, where an equal-rank
grid is off by up to a quarter of the statistic. Its knots also bound the KS error: the largest rank
step between two knots (at most 1/1000), by which the KS threshold is widened.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from airflow_mlops.core.drift.columns import (
    CATEGORICAL,
    NUMERIC,
    OTHER,
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
PROFILE_VERSION = 2
#: Versions this package reads (1: an equal-rank quantile grid, without exact bin counts).
READABLE_VERSIONS = (1, 2)
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
    :param dropped: categorical: reference values of the categories the profile did not keep (their mass
        is the :data:`~airflow_mlops.core.drift.columns.OTHER` bucket of ``dist``).
    :param dropped_filter: which categories were dropped (None: not known, so every category outside the
        kept ones is pooled into the bucket).
    :param bin_counts: numeric: the reference's exact counts in the bins of ``bin_edges`` (None: taken
        from ``dist``).
    """

    name: str
    kind: str
    dist: NumericDist | CategoricalDist
    bin_edges: np.ndarray | None = None
    hist_edges: np.ndarray | None = None
    hist_counts: np.ndarray | None = None
    missing: int = 0
    dtype: str = ""
    dropped: int = 0
    dropped_filter: CategoryFilter | None = None
    bin_counts: np.ndarray | None = None

    def pool_current(self, dist: CategoricalDist) -> CategoricalDist:
        """Current counts with the categories the profile dropped moved into its ``other`` bucket, so that
        the reference's rare categories are compared as one bucket, never counted as new."""
        if not self.dropped or not isinstance(self.dist, CategoricalDist):
            return dist
        kept = self.dist.counts
        outside = [k for k in dist.counts if k not in kept]
        if not outside:
            return dist
        pooled = (
            set(outside)
            if self.dropped_filter is None
            else {k for k, hit in zip(outside, self.dropped_filter.contains(outside), strict=True) if hit}
        )
        counts: dict[Any, int] = {}
        other = 0
        for k, v in dist.counts.items():
            if k in pooled:
                other += v
            else:
                counts[k] = v
        if other:
            counts[OTHER] = counts.get(OTHER, 0) + other
        return CategoricalDist(counts)


class CategoryFilter:
    """A Bloom filter of category values: "was this category in the reference's dropped tail?".

    False positives (a new category taken for a dropped one) happen at about ``fp_rate``; there are no
    false negatives. Stored in the profile as base64 of the zlib-compressed bit array.

    :param bits: the bit array (``np.uint8``, packed).
    :param n_bits: its length in bits.
    :param n_hashes: hash positions per value.
    """

    MAX_BITS = 8 * 1024 * 1024  # 1 MiB per column at most: the false-positive rate grows beyond that

    def __init__(self, bits: np.ndarray, n_bits: int, n_hashes: int) -> None:
        self.bits, self.n_bits, self.n_hashes = bits, n_bits, n_hashes

    @classmethod
    def build(cls, values: list[Any], fp_rate: float = 0.001) -> CategoryFilter:
        """A filter holding ``values``."""
        n = max(len(values), 1)
        n_bits = int(min(cls.MAX_BITS, max(64, math.ceil(-n * math.log(fp_rate) / math.log(2) ** 2))))
        n_hashes = int(min(16, max(1, round(n_bits / n * math.log(2)))))
        flags = np.zeros(n_bits, dtype=bool)
        flags[cls._positions(values, n_bits, n_hashes).ravel()] = True
        return cls(np.packbits(flags), n_bits, n_hashes)

    @staticmethod
    def _positions(values: list[Any], n_bits: int, n_hashes: int) -> np.ndarray:
        digests = b"".join(hashlib.blake2b(_canonical(v), digest_size=16).digest() for v in values)
        h = np.frombuffer(digests, dtype="<u8").reshape(-1, 2)
        steps = np.arange(n_hashes, dtype=np.uint64)
        with np.errstate(over="ignore"):
            return np.asarray((h[:, :1] + steps[None, :] * (h[:, 1:] | np.uint64(1))) % np.uint64(n_bits))

    def contains(self, values: list[Any]) -> list[bool]:
        """Whether each value was (probably) added."""
        if not values:
            return []
        pos = self._positions(values, self.n_bits, self.n_hashes)
        hit = (self.bits[pos >> np.uint64(3)] >> (np.uint64(7) - (pos & np.uint64(7))).astype(np.uint8)) & 1
        return [bool(v) for v in hit.all(axis=1)]

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        data = base64.b64encode(zlib.compress(self.bits.tobytes(), 6)).decode("ascii")
        return {"bits": self.n_bits, "hashes": self.n_hashes, "data": data}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> CategoryFilter:
        """Read the JSON form (validated by :func:`validate_profile`)."""
        bits = np.frombuffer(zlib.decompress(base64.b64decode(raw["data"], validate=True)), dtype=np.uint8)
        return cls(bits, int(raw["bits"]), int(raw["hashes"]))


def _canonical(value: Any) -> bytes:
    """The same bytes for a category in the reference and in current data (1 and 1.0 meet, as in a dict)."""
    return json.dumps(to_native(value), sort_keys=True, default=str).encode("utf-8")


def quantile_edges(dist: NumericDist, n_bins: int) -> np.ndarray:
    """Interior edges of ``n_bins`` reference-quantile bins (duplicates removed)."""
    if dist.n == 0:
        return np.zeros(0)
    return np.unique(dist.quantiles(np.arange(1, n_bins) / n_bins))


def bin_counts(x: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts of sorted ``x`` in ``(-inf, e1], (e1, e2], ..., (ek, inf)`` (the PSI/JS bins)."""
    cut = np.searchsorted(x, edges, side="right")
    return np.diff(np.concatenate([[0], cut, [len(x)]])).astype(np.int64)


def grid_knots(
    x: np.ndarray, tolerance: float, base: int = 1000, max_knots: int = 4096, max_rounds: int = 60
) -> np.ndarray:
    """Indices into sorted ``x`` of the knots of an adaptive quantile grid.

    Between two knots the grid's quantile function is the straight line between their values (in rank
    space); its L1 distance to the data's quantile function (the first Wasserstein distance between the
    grid and the data) is measured on every value, and the intervals that contribute most are halved
    until that distance is at most ``tolerance`` standard deviations (or the intervals are single steps).

    :param x: sorted finite values (at least two).
    :param tolerance: the Wasserstein budget, in standard deviations.
    :param base: equal-rank intervals to start from (also the largest rank step between knots).
    :param max_knots: the size bound: refinement stops there (the budget may then be exceeded).
    :param max_rounds: a bound on the halving rounds (each is one pass over ``x``).
    """
    n = len(x)
    scale = float(np.std(x)) or 1.0
    knots = np.unique(np.linspace(0, n - 1, min(base, n - 1) + 1).round().astype(np.int64))
    for _ in range(max_rounds):
        widths = np.diff(knots)
        interval = np.repeat(np.arange(len(widths)), widths)  # interval of values 0 .. n-2
        a = knots[interval]
        t = (np.arange(n - 1) - a) / widths[interval]
        line = x[a] + (x[knots[interval + 1]] - x[a]) * t
        per = np.bincount(interval, weights=np.abs(x[:-1] - line), minlength=len(widths)) / n
        per[widths <= 1] = 0.0  # a single step cannot be split
        excess = float(per.sum()) - tolerance * scale
        if excess <= 0 or not per.any():
            break
        order = np.argsort(-per, kind="stable")
        # The worst intervals that hold the excess (halving one removes most of its error).
        take = int(np.searchsorted(np.cumsum(per[order]), excess)) + 1
        split = order[:take]
        split = split[per[split] > 0][: max(0, max_knots - len(knots))]
        if len(split) == 0:
            break
        knots = np.union1d(knots, (knots[split] + knots[split + 1]) // 2)
    return knots


def grid(x: np.ndarray, knots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The stored grid of knots into sorted ``x``: values and the CDF there in units of 1/(2 count).

    A knot inside a wide interval holds the CDF at the middle of its step (``2i + 1``); a knot next to
    an adjacent one (the tails, once refined down to single values), and the first and last, hold the
    step itself, as two entries of the same value (``2i`` then ``2i + 2``), so the tails are exact.
    """
    widths = np.diff(knots)
    jump = np.zeros(len(knots), dtype=bool)
    jump[:-1] |= widths == 1
    jump[1:] |= widths == 1
    jump[0] = jump[-1] = True
    idx = np.repeat(np.arange(len(knots)), np.where(jump, 2, 1))
    cum = np.where(jump, 2 * knots, 2 * knots + 1)[idx]
    second = np.concatenate([[False], idx[1:] == idx[:-1]])
    cum[second] = 2 * knots[idx[second]] + 2
    return x[knots][idx], cum


def linear_dist(points: np.ndarray, cdf: np.ndarray, n: int, std: float, n_unique: int) -> NumericDist:
    """A piecewise-linear CDF through knots ``(points, cdf)``; knots of one value keep their first and last
    (the second moved up one float), so a repeated value is a jump, never an ill-defined interpolation.
    Its rank error is the largest CDF rise between two distinct values (jumps and flats are exact)."""
    rank_error = 0.0
    if len(points) > 1:
        same_prev = np.concatenate([[False], points[1:] == points[:-1]])
        same_next = np.concatenate([points[:-1] == points[1:], [False]])
        keep = ~(same_prev & same_next)
        points, cdf = points[keep].copy(), cdf[keep]
        rises = np.diff(cdf)[points[1:] > points[:-1]]
        rank_error = float(np.max(rises, initial=0.0))
        dup = np.flatnonzero(np.concatenate([[False], points[1:] == points[:-1]]))
        points[dup] = np.nextafter(points[dup], np.inf)
    if len(cdf):
        rank_error = max(rank_error, float(cdf[0]), 1.0 - float(cdf[-1]))
    return NumericDist(
        points=points, cdf=cdf, n=n, kind=LINEAR, std_=std, n_unique=n_unique, rank_error=rank_error
    )


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
            q_edges = quantile_edges(dist, n_bins)
            out[name] = ReferenceColumn(
                name, NUMERIC, dist, q_edges, edges, dist.histogram(edges), n_missing, str(s.dtype),
                bin_counts=bin_counts(x, q_edges),
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
    grid_tolerance: float = 1e-4,
) -> dict[str, Any]:
    """Summarize reference data (the training features) into a JSON-able profile.

    :param frame: the reference data.
    :param columns: columns to profile (all when None).
    :param exact_rows: a numeric column of at most this many rows is stored whole (exact tests).
    :param exact_values: a numeric column with at most this many distinct values is stored as exact
        value counts.
    :param n_bins: reference-quantile bins for PSI and Jensen-Shannon on numeric columns.
    :param hist_bins: histogram bins kept for reports.
    :param max_categories: categories kept per categorical column; the rarest beyond are pooled into
        one ``other`` bucket (their total in ``dropped``, which categories they were in a Bloom filter), so
        current values of those categories are compared as that bucket, never as new ones.
    :param grid_tolerance: numeric columns stored as a grid: its first Wasserstein distance to the data,
        in standard deviations (the bound on the error of the normed Wasserstein statistic).
    :param n_quantiles: equal-rank intervals the grid starts from (its largest rank step, the KS error).
    """
    refs, notes = reference_columns_from_frame(frame, columns, n_bins=n_bins, hist_bins=hist_bins)
    out_cols: dict[str, Any] = {}
    for name, rc in refs.items():
        d = rc.dist
        if isinstance(d, NumericDist):
            x = d.points
            if (
                rc.bin_edges is None
                or rc.hist_edges is None
                or rc.hist_counts is None
                or rc.bin_counts is None
            ):
                raise ValueError(f"reference column {name!r} lacks its bins")  # built just above: a bug
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
                "bin_counts": rc.bin_counts.tolist(),
                "hist": {"edges": rc.hist_edges.tolist(), "counts": rc.hist_counts.tolist()},
            }
            if (
                d.values is not None
                and d.counts is not None
                and (d.n_unique <= exact_values or d.n <= exact_rows)
            ):
                col["values"] = d.values.tolist()
                col["counts"] = d.counts.tolist()
            elif len(x) == 1:
                col["values"], col["counts"] = [float(x[0])], [1]
            else:
                values, cum = grid(x, grid_knots(x, grid_tolerance, base=n_quantiles))
                col["quantiles"], col["cum"] = values.tolist(), cum.tolist()
            out_cols[name] = col
        else:
            if not isinstance(d, CategoricalDist):
                raise ValueError(f"reference column {name!r} is neither numeric nor categorical")
            items = sorted(d.counts.items(), key=lambda kv: -kv[1])
            kept = items[:max_categories]
            tail = items[max_categories:]
            out_cols[name] = {
                "kind": CATEGORICAL,
                "dtype": rc.dtype,
                "count": d.n,
                "missing": rc.missing,
                "n_unique": len(items),
                "categories": [[to_native(k), v] for k, v in kept],
                "dropped": int(sum(v for _, v in tail)),
            }
            if tail:
                out_cols[name]["dropped_categories"] = len(tail)
                out_cols[name]["dropped_filter"] = CategoryFilter.build([k for k, _ in tail]).to_dict()
    return {
        "format": PROFILE_FORMAT,
        "version": PROFILE_VERSION,
        "n_rows": len(frame),
        "n_bins": n_bins,
        "columns": out_cols,
        "notes": notes,
    }


_REBUILD = "re-train the model to log a new profile (or rebuild it with build_profile)"


def _bad(where: str, what: str) -> MlopsInputError:
    return MlopsInputError(f"Drift profile {where} {what}: the profile is damaged or was not written by this "
                           f"package; {_REBUILD}.")  # fmt: skip


def _need(col: dict[str, Any], key: str, where: str) -> Any:
    if key not in col:
        raise _bad(where, f"lacks the key {key!r}")
    return col[key]


def _count_value(value: Any, where: str, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _bad(where, f"has {key} = {str(value)[:40]!r}, not a count (a whole number >= 0)")
    return value


def _numbers(value: Any, where: str, key: str, *, sorted_: bool = False, min_len: int = 0) -> list[float]:
    if not isinstance(value, list) or len(value) < min_len:
        raise _bad(where, f"has {key} that is not a list of at least {min_len} numbers")
    for v in value:
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise _bad(where, f"has {key} holding {str(v)[:40]!r}, not a finite number")
    if sorted_ and any(b < a for a, b in zip(value, value[1:], strict=False)):
        raise _bad(where, f"has {key} that is not in increasing order")
    return value


def _validate_column(name: str, col: Any, version: int = PROFILE_VERSION) -> None:
    where = f"column {name!r}"
    if not isinstance(col, dict):
        raise _bad(where, "is not a mapping")
    kind = _need(col, "kind", where)
    for key in ("count", "missing"):
        _count_value(_need(col, key, where), where, key)
    if kind == NUMERIC:
        for key in ("std", "min", "max", "mean"):
            _numbers([_need(col, key, where)], where, key)
        _count_value(_need(col, "n_unique", where), where, "n_unique")
        _numbers(_need(col, "bin_edges", where), where, "bin_edges", sorted_=True)
        hist = _need(col, "hist", where)
        if not isinstance(hist, dict):
            raise _bad(where, "has a 'hist' that is not a mapping of edges and counts")
        edges = _numbers(_need(hist, "edges", where + " hist"), where, "hist edges", sorted_=True)
        counts = _numbers(_need(hist, "counts", where + " hist"), where, "hist counts")
        if edges and len(counts) != len(edges) - 1:
            raise _bad(where, f"has {len(counts)} histogram counts for {len(edges)} edges")
        if "values" in col or "counts" in col:
            values = _numbers(_need(col, "values", where), where, "values", sorted_=True, min_len=1)
            vcounts = _need(col, "counts", where)
            if not isinstance(vcounts, list) or len(vcounts) != len(values):
                raise _bad(where, f"has {len(values)} values but counts of another length")
            for c in vcounts:
                _count_value(c, where, "counts")
            if sum(vcounts) == 0:
                raise _bad(where, "has value counts that sum to 0")
        else:
            q = _numbers(_need(col, "quantiles", where), where, "quantiles", sorted_=True, min_len=2)
            if version >= 2:
                cum = _need(col, "cum", where)
                if not isinstance(cum, list) or len(cum) != len(q):
                    raise _bad(where, f"has {len(q)} quantiles but 'cum' of another length")
                for c in cum:
                    _count_value(c, where, "cum")
                if any(b < a for a, b in zip(cum, cum[1:], strict=False)) or cum[-1] > 2 * col["count"]:
                    raise _bad(where, "has 'cum' that is not increasing up to twice the count")
        if version >= 2:
            bc = _need(col, "bin_counts", where)
            if not isinstance(bc, list) or len(bc) != len(col["bin_edges"]) + 1:
                raise _bad(where, "has 'bin_counts' that is not one count per bin of 'bin_edges'")
            for c in bc:
                _count_value(c, where, "bin_counts")
    elif kind == CATEGORICAL:
        cats = _need(col, "categories", where)
        if not isinstance(cats, list):
            raise _bad(where, "has 'categories' that is not a list of [value, count] pairs")
        for pair in cats:
            if not isinstance(pair, list) or len(pair) != 2:
                raise _bad(
                    where, f"has a category entry {str(pair)[:60]!r} that is not a [value, count] pair"
                )
            _count_value(pair[1], where, "a category count")
        dropped = _count_value(col.get("dropped", 0), where, "dropped")
        if not cats and not dropped:
            raise _bad(where, "has no category")
        filt = col.get("dropped_filter")
        if filt is not None:
            if not isinstance(filt, dict) or not isinstance(filt.get("data"), str):
                raise _bad(where, "has a 'dropped_filter' without its data")
            bits, hashes = filt.get("bits"), filt.get("hashes")
            if not (isinstance(bits, int) and bits > 0 and isinstance(hashes, int) and 0 < hashes <= 64):
                raise _bad(where, "has a 'dropped_filter' with bad sizes")
            try:
                data = zlib.decompress(base64.b64decode(filt["data"], validate=True))
            except (ValueError, zlib.error):
                raise _bad(where, "has a 'dropped_filter' whose data is not base64 zlib") from None
            if len(data) * 8 < bits:
                raise _bad(where, "has a 'dropped_filter' shorter than its size")
    else:
        raise _bad(where, f"has kind {str(kind)[:40]!r}, neither {NUMERIC!r} nor {CATEGORICAL!r}")


def validate_profile(profile: Any) -> dict[str, Any]:
    """Check that ``profile`` is a whole drift profile this version reads (every column and key); returns it.

    :raises MlopsInputError: naming the column and the key, and the fix.
    """
    if not isinstance(profile, dict) or profile.get("format") != PROFILE_FORMAT:
        raise MlopsInputError(
            f"This is not a drift reference profile (no 'format': {PROFILE_FORMAT!r}): {_REBUILD}."
        )
    if profile.get("version") not in READABLE_VERSIONS:
        raise MlopsInputError(
            f"Drift profile version {str(profile.get('version'))[:20]} is not supported (this package reads "
            f"versions {', '.join(map(str, READABLE_VERSIONS))}): {_REBUILD}."
        )
    columns = profile.get("columns")
    if not isinstance(columns, dict):
        raise _bad("", "has no 'columns' mapping")
    if not columns:
        raise _bad("", "has no column")
    n_rows = profile.get("n_rows", 0)
    _count_value(n_rows, "", "n_rows")
    notes = profile.get("notes", [])
    if not isinstance(notes, list) or not all(isinstance(n, str) for n in notes):
        raise _bad("", "has 'notes' that are not a list of strings")
    for name, col in columns.items():
        _validate_column(name, col, int(profile["version"]))
    return profile


def reference_columns_from_profile(profile: dict[str, Any]) -> dict[str, ReferenceColumn]:
    """Reference columns (distributions) from a profile (validated first)."""
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
            elif profile["version"] >= 2:
                n = int(col["count"])
                dist = linear_dist(
                    np.asarray(col["quantiles"], dtype=float),
                    np.asarray(col["cum"], dtype=float) / (2 * n),
                    n,
                    float(col["std"]),
                    int(col["n_unique"]),
                )
            else:  # version 1: an equal-rank grid from minimum to maximum
                q = np.asarray(col["quantiles"], dtype=float)
                dist = NumericDist(
                    points=q,
                    cdf=np.linspace(0, 1, len(q)),
                    n=int(col["count"]),
                    kind=LINEAR,
                    std_=float(col["std"]),
                    n_unique=int(col["n_unique"]),
                    uniform=True,
                    rank_error=1.0 / (len(q) - 1),
                )
            bins = col.get("bin_counts")
            out[name] = ReferenceColumn(
                name, NUMERIC, dist, np.asarray(col["bin_edges"], dtype=float),
                np.asarray(col["hist"]["edges"], dtype=float), np.asarray(col["hist"]["counts"]),
                int(col["missing"]), col.get("dtype", ""),
                bin_counts=None if bins is None else np.asarray(bins, dtype=np.int64),
            )  # fmt: skip
        else:
            counts: dict[Any, int] = {}
            for k, v in col["categories"]:
                key = _key(k)
                counts[key] = counts.get(key, 0) + int(v)
            dropped = int(col.get("dropped", 0))
            if dropped:
                counts[OTHER] = dropped
            filt = col.get("dropped_filter")
            out[name] = ReferenceColumn(
                name,
                CATEGORICAL,
                CategoricalDist(counts),
                missing=int(col["missing"]),
                dtype=col.get("dtype", ""),
                dropped=dropped,
                dropped_filter=CategoryFilter.from_dict(filt) if filt else None,
            )
    return out


def _key(k: Any) -> Any:
    return tuple(k) if isinstance(k, list) else k


def dump_profile(profile: dict[str, Any]) -> str:
    """The profile as JSON text."""
    return json.dumps(profile, allow_nan=False)


def load_profile(text: str | bytes) -> dict[str, Any]:
    """A profile from JSON text (validated as a whole).

    :raises MlopsInputError: not UTF-8 JSON, or not a whole profile (naming the column and key).
    """
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise MlopsInputError(
            f"Drift profile is not valid JSON (or not UTF-8: {str(e)[:200]}): {_REBUILD}."
        ) from None
    return validate_profile(data)
