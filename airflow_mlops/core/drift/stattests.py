"""Drift statistics on column summaries, computing what Evidently 0.7's stattests compute.

A numeric column is a :class:`NumericDist`: sorted support points with the CDF at each point, either
as a step function (raw data or exact value counts: exact results) or as a piecewise-linear function
(a reference profile's quantile grid, or a streamed sketch of current data: approximate results).
A categorical column is a :class:`CategoricalDist`: value counts. Every test works from these, so the
raw reference never has to be at hand.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

STEP = "step"
LINEAR = "linear"

# name -> (default threshold, True when the score is a p-value: drift when p < threshold)
TESTS: dict[str, tuple[float, bool]] = {
    "ks": (0.05, True),
    "chisquare": (0.05, True),
    "z": (0.05, True),
    "wasserstein": (0.1, False),
    "jensenshannon": (0.1, False),
    "psi": (0.1, False),
}
NUMERIC_TESTS = ("ks", "wasserstein", "jensenshannon", "psi", "chisquare", "z")
CATEGORICAL_TESTS = ("chisquare", "z", "jensenshannon", "psi")
# scipy.stats.ks_2samp(method="auto") is exact up to this sample size, asymptotic above.
KS_EXACT_MAX_N = 10_000


@dataclass
class NumericDist:
    """A numeric distribution: CDF values ``cdf`` at sorted ``points`` (NaN/inf removed).

    :param points: sorted support points (repeating for raw data).
    :param cdf: CDF at each point (right-continuous for ``step``), ending at 1; None for raw data,
        whose CDF at point ``i`` is ``(i + 1) / n`` up to ties.
    :param n: number of observations behind it.
    :param kind: ``step`` (exact) or ``linear`` (interpolated between points).
    :param std: population standard deviation (ddof=0); computed on first use for raw data.
    :param values: the distinct values when known exactly (few of them), else None.
    :param counts: counts of ``values``.
    :param n_unique: number of distinct values.
    :param raw: True when ``points`` are the raw sorted observations.
    :param uniform: a ``linear`` grid whose CDF steps evenly.
    :param rank_error: the largest error of the CDF (0: exact); the KS threshold is widened by it.
    """

    points: np.ndarray
    cdf: np.ndarray | None
    n: int
    kind: str
    std_: float | None = None
    values: np.ndarray | None = None
    counts: np.ndarray | None = None
    n_unique: int = 0
    raw: bool = False
    uniform: bool = False  # a ``linear`` grid whose CDF steps evenly (a version-1 profile's quantiles)
    rank_error: float = 0.0  # the largest error of ``cdf_at`` (0 when exact): a grid's or a sketch's

    @property
    def std(self) -> float:
        """Population standard deviation (ddof=0)."""
        if self.std_ is None:
            self.std_ = float(np.std(self.points)) if self.n else float("nan")
        return self.std_

    @classmethod
    def from_sorted(cls, x: np.ndarray) -> NumericDist:
        """An exact distribution from sorted finite observations (kept, not copied)."""
        n = len(x)
        if n == 0:
            return cls(x, None, 0, STEP, float("nan"), x, np.zeros(0, dtype=np.int64), 0, True)
        new = np.empty(n, dtype=bool)
        new[0] = True
        np.not_equal(x[1:], x[:-1], out=new[1:])
        n_unique = int(np.count_nonzero(new))
        values = counts = None
        if n_unique <= 1000:
            starts = np.flatnonzero(new)
            values = x[starts]
            counts = np.diff(np.append(starts, n))
        return cls(x, None, n, STEP, None, values, counts, n_unique, True)

    @classmethod
    def from_counts(cls, values: np.ndarray, counts: np.ndarray, std: float) -> NumericDist:
        """An exact distribution from distinct sorted values and their counts."""
        n = int(counts.sum())
        cdf = np.cumsum(counts) / n
        return cls(values, cdf, n, STEP, std, values, counts, len(values))

    def cdf_at(self, x: np.ndarray) -> np.ndarray:
        """The CDF evaluated at ``x`` (right-continuous)."""
        if self.kind == LINEAR and self.cdf is not None:
            return np.asarray(np.interp(x, self.points, self.cdf, left=0.0, right=1.0), dtype=np.float64)
        idx = np.searchsorted(self.points, x, side="right")
        if self.raw or self.cdf is None:
            return np.asarray(idx / self.n, dtype=np.float64)
        return np.where(idx > 0, self.cdf[np.maximum(idx - 1, 0)], 0.0)

    def quantiles(self, qs: np.ndarray) -> np.ndarray:
        """Quantiles as ``np.quantile(method="linear")`` gives them on the raw data."""
        if self.raw:
            pos = qs * (self.n - 1)
            lo = np.floor(pos).astype(np.int64)
            hi = np.minimum(lo + 1, self.n - 1)
            frac = pos - lo
            return np.asarray(self.points[lo] + (self.points[hi] - self.points[lo]) * frac, dtype=np.float64)
        if self.kind == LINEAR and self.cdf is not None:
            return np.asarray(np.interp(qs, self.cdf, self.points), dtype=np.float64)
        if self.counts is None:
            raise ValueError("quantiles of a sketched distribution are not exact")
        return np.asarray(np.quantile(np.repeat(self.points, self.counts), qs), dtype=np.float64)

    def histogram(self, edges: np.ndarray) -> np.ndarray:
        """Counts in the bins of ``edges`` (the last bin closed, as ``np.histogram``)."""
        if self.raw:
            pos = np.searchsorted(self.points, edges, side="left")
            pos[-1] = np.searchsorted(self.points, edges[-1], side="right")
            return np.diff(pos)
        return np.round(np.diff(self.cdf_at(edges)) * self.n).astype(np.int64)


@dataclass
class CategoricalDist:
    """Value counts of a categorical column (missing values removed).

    :param counts: value -> count.
    """

    counts: dict[Any, int]

    @property
    def n(self) -> int:
        """Number of values."""
        return int(sum(self.counts.values()))


def _merged(ref: NumericDist, cur: NumericDist) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Both CDFs on the merged support: ``x``, the difference at each point, its left limit at the
    next point, and a mask of the last point of each run of equal values."""
    x_all = np.concatenate([ref.points, cur.points])
    order = np.argsort(x_all, kind="stable")
    x = x_all[order]
    is_ref = order < len(ref.points)
    diffs = []
    lefts = []
    for dist, mine in ((ref, is_ref), (cur, ~is_ref)):
        if dist.kind == STEP or dist.cdf is None:
            seen = np.cumsum(mine)
            if dist.raw or dist.cdf is None:
                f = seen / dist.n
            else:
                f = np.where(seen > 0, dist.cdf[np.maximum(seen - 1, 0)], 0.0)
            diffs.append(f)
            lefts.append(f[:-1])  # constant up to the next point
        else:
            f = np.interp(x, dist.points, dist.cdf, left=0.0, right=1.0)
            diffs.append(f)
            lefts.append(f[1:])
    d = diffs[0] - diffs[1]
    d_left = lefts[0] - lefts[1]
    last = np.empty(len(x), dtype=bool)
    np.not_equal(x[1:], x[:-1], out=last[:-1])
    last[-1] = True
    return x, d, d_left, last


def wasserstein(ref: NumericDist, cur: NumericDist) -> float:
    """First Wasserstein distance, ``scipy.stats.wasserstein_distance`` for exact inputs.

    It is the area between the two quantile functions, computed without a merge of the samples when
    both are raw (exact), or when the reference is a profile's even quantile grid (midpoint rule on
    the current sample's steps: error O(1/m^2) per step plus the grid's own interpolation error).
    """
    if ref.raw and cur.raw:
        return _wasserstein_sorted(ref.points, cur.points)
    if ref.kind == LINEAR and ref.uniform and cur.raw:
        m, k = cur.n, len(ref.points) - 1
        pos = (np.arange(m, dtype=np.float64) + 0.5) * (k / m)
        lo = np.minimum(pos.astype(np.int64), k - 1)
        q = ref.points
        qr = q[lo] + (q[lo + 1] - q[lo]) * (pos - lo)
        return float(np.mean(np.abs(qr - cur.points)))
    x, d, d_left, _ = _merged(ref, cur)
    dx = np.diff(x)
    a, b = d[:-1], d_left
    same = (a * b) >= 0
    absa, absb = np.abs(a), np.abs(b)
    with np.errstate(invalid="ignore", divide="ignore"):
        crossing = np.where(absa + absb > 0, (a * a + b * b) / (2 * (absa + absb)), 0.0)
    area = np.where(same, (absa + absb) / 2, crossing)
    return float(np.dot(area, dx))


def _wasserstein_sorted(u: np.ndarray, v: np.ndarray) -> float:
    """Exact W1 of two sorted samples: their quantile functions step at i/n and j/m."""
    n, m = len(u), len(v)
    if n == m:
        return float(np.mean(np.abs(u - v)))
    # Breakpoints i/n and j/m scaled by n*m to integers, merged (two sorted runs: a linear merge).
    b = np.sort(
        np.concatenate([np.arange(1, n + 1, dtype=np.int64) * m, np.arange(1, m + 1, dtype=np.int64) * n]),
        kind="stable",
    )
    b = b[np.concatenate([b[1:] != b[:-1], [True]])]
    width = np.diff(b, prepend=0)
    iu = (b + m - 1) // m - 1
    iv = (b + n - 1) // n - 1
    return float(np.dot(np.abs(u[iu] - v[iv]), width) / (n * m))


def wasserstein_norm(ref: NumericDist, cur: NumericDist) -> float:
    """Evidently's normed Wasserstein: the distance divided by max(std of reference, 0.001)."""
    return wasserstein(ref, cur) / max(ref.std, 0.001)


def ks_statistic(ref: NumericDist, cur: NumericDist) -> float:
    """The two-sided Kolmogorov-Smirnov statistic: the largest gap between the two CDFs."""
    _, d, d_left, last = _merged(ref, cur)
    stat = float(np.max(np.abs(d[last])))
    if ref.kind == LINEAR or cur.kind == LINEAR:
        stat = max(stat, float(np.max(np.abs(d_left), initial=0.0)))
    return min(max(stat, 0.0), 1.0)


def ks_pvalue(stat: float, n1: int, n2: int) -> float:
    """p-value of ``stat`` as ``scipy.stats.ks_2samp(method="auto")`` computes it."""
    from scipy.stats import distributions

    if max(n1, n2) <= KS_EXACT_MAX_N:
        try:
            from scipy.stats._stats_py import _attempt_exact_2kssamp

            ok, _, prob = _attempt_exact_2kssamp(n1, n2, math.gcd(n1, n2), stat, "two-sided")
            if ok:
                return float(np.clip(prob, 0, 1))
        except ImportError:  # a scipy without the helper: the asymptotic formula below
            pass
    m, n = sorted([float(n1), float(n2)], reverse=True)
    en = m * n / (m + n)
    return float(np.clip(distributions.kstwo.sf(stat, np.round(en)), 0, 1))


def ks(ref: NumericDist, cur: NumericDist) -> float:
    """Evidently's ``ks``: the p-value of the two-sample KS test.

    On a profile's grid or a sketch the statistic is known up to both sides' rank errors; the p-value
    is the one of the smallest statistic they allow, so the threshold is widened by both errors (as
    DataSketches' ``ks_test`` does) and a verdict is never more confident than the data allows. Exact
    inputs (no error) give scipy's p-value.
    """
    stat = ks_statistic(ref, cur)
    slack = ref.rank_error + cur.rank_error
    return ks_pvalue(max(stat - slack, 0.0) if slack else stat, ref.n, cur.n)


def numeric_counts(dist: NumericDist) -> CategoricalDist:
    """Value counts of a numeric column with few distinct values (for chi-square, Z and JS on values)."""
    if dist.values is None or dist.counts is None:
        raise ValueError("value counts are not known for this column (too many distinct values)")
    return CategoricalDist(
        {v: int(c) for v, c in zip(dist.values.tolist(), dist.counts.tolist(), strict=False)}
    )


def _aligned(ref: CategoricalDist, cur: CategoricalDist) -> tuple[np.ndarray, np.ndarray]:
    keys = list(set(ref.counts) | set(cur.counts))
    r = np.array([ref.counts.get(k, 0) for k in keys], dtype=float)
    c = np.array([cur.counts.get(k, 0) for k in keys], dtype=float)
    return r, c


def chisquare(ref: CategoricalDist, cur: CategoricalDist) -> float:
    """Evidently's ``chisquare``: goodness of fit of current counts to reference proportions
    (``scipy.stats.chisquare``); a category unseen in the reference gives p = 0."""
    from scipy.stats import chisquare as sp_chisquare

    r, c = _aligned(ref, cur)
    f_exp = r * (c.sum() / r.sum())
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(sp_chisquare(c, f_exp)[1])


def ztest(ref: CategoricalDist, cur: CategoricalDist) -> float:
    """Evidently's ``z``: two-proportion Z-test on the share of the first (sorted) value."""
    from scipy.stats import norm

    if len(ref.counts) == 1 and len(cur.counts) == 1 and set(ref.counts) == set(cur.counts):
        return 1.0
    keys = sorted(set(ref.counts) | set(cur.counts), key=_sort_key)
    first = keys[0]
    n1, n2 = ref.n, cur.n
    p1 = (n1 - ref.counts.get(first, 0)) / n1
    p2 = (n2 - cur.counts.get(first, 0)) / n2
    p = (p1 * n1 + p2 * n2) / (n1 + n2)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (p1 - p2) / np.sqrt(p * (1 - p) * (1.0 / n1 + 1.0 / n2))
        return float(2 * (1 - norm.cdf(np.abs(z))))


def _sort_key(v: Any) -> Any:
    return (0, v) if isinstance(v, (int, float, np.number)) else (1, str(v))


def _fill_zeroes(p: np.ndarray) -> np.ndarray:
    """Evidently's zero filling before PSI: zeros become a tiny share."""
    nonzero = p[p != 0]
    if len(nonzero) == 0:
        return p
    low = nonzero.min()
    p = p.copy()
    p[p == 0] = low / 10**6 if low <= 0.0001 else 0.0001
    return p


def jensenshannon_counts(ref: CategoricalDist, cur: CategoricalDist) -> float:
    """Jensen-Shannon distance (natural log) between the category shares."""
    from scipy.spatial.distance import jensenshannon

    r, c = _aligned(ref, cur)
    return float(jensenshannon(r / r.sum(), c / c.sum()))


def psi_counts(ref: CategoricalDist, cur: CategoricalDist) -> float:
    """Population stability index between the category shares (Evidently's zero filling)."""
    r, c = _aligned(ref, cur)
    return _psi(r / r.sum(), c / c.sum())


def _psi(r: np.ndarray, c: np.ndarray) -> float:
    r, c = _fill_zeroes(r), _fill_zeroes(c)
    return float(np.sum((r - c) * np.log(r / c)))


def quantile_bin_shares(
    ref: NumericDist, cur: NumericDist, edges: np.ndarray, ref_counts: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Shares of each side in the bins ``(-inf, e1], (e1, e2], ..., (ek, inf)`` (reference quantiles).

    :param ref_counts: the reference's exact counts in those bins (a profile keeps them), used
        instead of its CDF.
    """
    if ref_counts is not None and len(ref_counts) == len(edges) + 1 and ref_counts.sum() > 0:
        # The raw reference's shares, computed as ``cdf_at`` computes them on raw data.
        r = np.diff(np.concatenate([[0], np.cumsum(ref_counts)[:-1], [ref_counts.sum()]]) / ref_counts.sum())
    else:
        r = np.diff(np.concatenate([[0.0], ref.cdf_at(edges), [1.0]]))
    fc = np.concatenate([[0.0], cur.cdf_at(edges), [1.0]])
    return np.clip(r, 0, None), np.clip(np.diff(fc), 0, None)


def jensenshannon_binned(
    ref: NumericDist, cur: NumericDist, edges: np.ndarray, ref_counts: np.ndarray | None = None
) -> float:
    """Jensen-Shannon distance on reference-quantile bins."""
    from scipy.spatial.distance import jensenshannon

    r, c = quantile_bin_shares(ref, cur, edges, ref_counts)
    return float(jensenshannon(r, c))


def psi_binned(
    ref: NumericDist, cur: NumericDist, edges: np.ndarray, ref_counts: np.ndarray | None = None
) -> float:
    """PSI on reference-quantile bins."""
    r, c = quantile_bin_shares(ref, cur, edges, ref_counts)
    return _psi(r, c)


def is_drifted(test: str, score: float, threshold: float) -> bool:
    """Evidently's comparison per test: ``ks`` p <= t; ``chisquare``/``z`` p < t; distances >= t."""
    if score is None or math.isnan(score):
        return False
    if test == "ks":
        return score <= threshold
    if TESTS[test][1]:
        return score < threshold
    return score >= threshold


def benjamini_hochberg(pvalues: list[float | None]) -> list[float]:
    """Benjamini-Hochberg adjusted p-values (NaN stays NaN)."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(len(p), np.nan)
    ok = ~np.isnan(p)
    q = p[ok]
    m = len(q)
    if m == 0:
        return [float(v) for v in out]
    order = np.argsort(q)
    ranked = q[order] * m / np.arange(1, m + 1)
    adj = np.minimum.accumulate(ranked[::-1])[::-1]
    res = np.empty(m)
    res[order] = np.minimum(adj, 1.0)
    out[ok] = res
    return [float(v) for v in out]
